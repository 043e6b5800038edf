#!/usr/bin/env bash
# Installs the real peers the integration tests talk to: Orthanc (PACS), DCMTK (storescu/echoscu),
# dicom3tools (dciodvfy validates the SEG and SR covidct writes),
# Chromium (browser tests) and PostgreSQL (job-store tests; the tests start their own cluster with
# initdb/pg_ctl). Debian packages; needs root. Safe to run again.
set -u
need=""
command -v Orthanc >/dev/null 2>&1 || need+=" orthanc orthanc-gdcm"
command -v storescu >/dev/null 2>&1 || need+=" dcmtk"
command -v chromium >/dev/null 2>&1 || need+=" chromium"
command -v dciodvfy >/dev/null 2>&1 || need+=" dicom3tools"
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
# Orthanc's Debian package starts a system service; tests start their own instance.
(service orthanc stop || systemctl stop orthanc) >/dev/null 2>&1 || true
pkill -x Orthanc >/dev/null 2>&1 || true
# Likewise the postgresql package starts a system cluster on port 5432; tests start their own.
case "$need" in *postgresql*) (service postgresql stop || systemctl stop postgresql) >/dev/null 2>&1 || true ;; esac
exit 0
