#!/usr/bin/env bash
# Installs the real peers the integration tests talk to: Orthanc (PACS), DCMTK (storescu/echoscu),
# dicom3tools (dciodvfy validates the SEG and SR covidct writes),
# Chromium (browser tests) and PostgreSQL (job-store tests; the tests start their own cluster with
# initdb/pg_ctl). Debian packages; needs root. Safe to run again.
# Then the OHIF viewer (npm's built @ohif/app, scripts/fetch-ohif.sh) into the git-ignored .cache/ohif,
# with Orthanc's DICOMweb plugin for it (the OHIF tests skip without them).
set -u
fetch_ohif() {
  command -v npm >/dev/null 2>&1 || return 0
  bash "$(dirname "$0")/fetch-ohif.sh" >/dev/null \
    || echo "install-system-deps: OHIF was not fetched; the OHIF viewer tests will skip" >&2
}
need=""
command -v Orthanc >/dev/null 2>&1 || need+=" orthanc orthanc-gdcm"
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=" orthanc-dicomweb"
command -v npm >/dev/null 2>&1 || need+=" npm"
command -v storescu >/dev/null 2>&1 || need+=" dcmtk"
command -v chromium >/dev/null 2>&1 || need+=" chromium"
command -v dciodvfy >/dev/null 2>&1 || need+=" dicom3tools"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=" postgresql"
if [ -z "$need" ]; then
  fetch_ohif
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "install-system-deps: not root; install by hand: apt-get install -y$need (integration tests will skip)" >&2
  fetch_ohif
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 \
  || echo "install-system-deps: apt-get install$need failed; integration tests will skip" >&2
# Orthanc's Debian package starts a system service; tests start their own instance.
(service orthanc stop || systemctl stop orthanc) >/dev/null 2>&1 || true
pkill -x Orthanc >/dev/null 2>&1 || true
# Likewise the postgresql package starts a system cluster on port 5432; tests start their own.
case "$need" in *postgresql*) (service postgresql stop || systemctl stop postgresql) >/dev/null 2>&1 || true ;; esac
fetch_ohif
exit 0
