#!/usr/bin/env bash
# Installs the real peers the integration tests talk to: Orthanc (PACS) with its GDCM and DICOMweb
# plugins, DCMTK (storescu/echoscu), dicom3tools (dciodvfy), Chromium (browser tests) and PostgreSQL
# (job-store tests). Debian packages; needs root. Safe to run again: installs only what is missing,
# in one apt-get.
#
# It touches nothing it did not start. If a Debian package starts its own service (orthanc,
# postgresql), that service is left running: the tests start their own Orthanc and PostgreSQL on free
# loopback ports with their own data directories and stop them by PID.
set -u
ORTHANC_PLUGINS=/usr/share/orthanc/plugins
need=""
command -v Orthanc >/dev/null 2>&1 || need+=" orthanc"
ls "$ORTHANC_PLUGINS"/libOrthancGdcm*.so >/dev/null 2>&1 || need+=" orthanc-gdcm"
ls "$ORTHANC_PLUGINS"/libOrthancDicomWeb*.so >/dev/null 2>&1 || need+=" orthanc-dicomweb"
command -v storescu >/dev/null 2>&1 || need+=" dcmtk"
command -v dciodvfy >/dev/null 2>&1 || need+=" dicom3tools"
command -v chromium >/dev/null 2>&1 || need+=" chromium"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=" postgresql"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "install-system-deps: not root; install by hand: apt-get install -y$need (integration tests will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 \
  || echo "install-system-deps: apt-get install$need failed; integration tests will skip" >&2
exit 0
