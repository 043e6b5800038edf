#!/usr/bin/env bash
# Fetches the built OHIF viewer v3 from the npm registry into a git-ignored cache and prints the path of
# its dist/ folder (index.html, app-config.js, bundles). `npm pack` checks the tarball's integrity against
# the registry. No build step: @ohif/app ships the built app. Safe to run again (a cached copy is reused).
#   OHIF_VERSION  version of @ohif/app (default below)
#   OHIF_CACHE    cache folder (default <repo>/.cache/ohif)
# Exit status: 0 with the dist path on stdout; 3 when npm is missing or the registry cannot be reached.
set -eu
OHIF_VERSION="${OHIF_VERSION:-3.13.2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${OHIF_CACHE:-$root/.cache/ohif}"
dest="$cache/ohif-app-$OHIF_VERSION"
if [ -f "$dest/dist/index.html" ]; then
  echo "$dest/dist"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-ohif: npm is not installed (apt-get install npm); cannot fetch @ohif/app@$OHIF_VERSION" >&2
  exit 3
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --loglevel=error --fetch-retries=1 --fetch-timeout=60000 "@ohif/app@$OHIF_VERSION" >/dev/null 2>"$tmp/npm.log"); then
  echo "fetch-ohif: npm pack @ohif/app@$OHIF_VERSION failed (registry unreachable?):" >&2
  tail -5 "$tmp/npm.log" >&2
  exit 3
fi
tar -xzf "$tmp"/ohif-app-*.tgz -C "$tmp"
if [ ! -f "$tmp/package/dist/index.html" ]; then
  echo "fetch-ohif: @ohif/app@$OHIF_VERSION has no dist/index.html; it is not a built app" >&2
  exit 1
fi
# Another run may have finished first; keep its copy.
mv -T "$tmp/package" "$dest" 2>/dev/null || [ -f "$dest/dist/index.html" ]
echo "$dest/dist"
