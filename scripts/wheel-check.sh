#!/usr/bin/env bash
# Builds the wheel and sdist, checks them with twine, installs the wheel (no extras) into a fresh venv
# with the oldest supported torch and numpy (.ci/oldest-constraints.txt), and smoke-tests it from a
# folder outside the repository: `covidct --version`, `covidct train --config covidnet-ct2-s` for one
# tiny epoch on a synthetic cohort, `covidct predict` on a synthetic DICOM study with that checkpoint.
# Run by `make wheel-check` (and .ci/run). Leaves nothing behind (a temporary folder, removed at exit).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CONSTRAINTS="$ROOT/.ci/oldest-constraints.txt"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/covidct-wheel-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
step() { echo "wheel-check [$((SECONDS - start)) s] $*"; }

step "build wheel + sdist"
"$PY" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
"$PY" -m twine check --strict "$WORK"/dist/*
wheel="$(ls "$WORK"/dist/covidct-*.whl)"
"$PY" - "$wheel" <<'PYEOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["covidct/configs/covidnet-ct2-s.yaml", "covidct/configs/demo-covidnet-ct2-s.yaml",
        "covidct/service/static/index.html", "covidct/service/templates/report.html.j2", "covidct/py.typed"]
missing = [n for n in need if n not in names]
if missing:
    sys.exit(f"wheel-check: the wheel lacks {missing}")
PYEOF

step "fresh venv with the oldest torch/numpy: $(grep -v '^#' "$CONSTRAINTS" | tr '\n' ' ')"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$wheel" 2>&1 \
  | grep -v "WARNING: Location" || true
"$VPY" - "$CONSTRAINTS" <<'PYEOF'
import sys
from importlib.metadata import version
pins = dict(l.strip().split("==") for l in open(sys.argv[1]) if "==" in l and not l.startswith("#"))
got = {name: version(name).split("+")[0] for name in pins}
print("wheel-check: installed", got)
if got != pins:
    sys.exit(f"wheel-check: expected {pins}")
PYEOF

mkdir "$WORK/run" && cd "$WORK/run"   # outside the repository: nothing may come from the source tree
COVIDCT="$WORK/venv/bin/covidct"
step "covidct --version"
expected="covidct $("$VPY" -c 'from importlib.metadata import version; print(version("covidct"))')"
[ "$("$COVIDCT" --version)" = "$expected" ] || { echo "wheel-check: --version is not '$expected'"; exit 1; }
"$VPY" -c 'import covidct, pathlib, sys; sys.exit(0 if "site-packages" in covidct.__file__ else 1)' \
  || { echo "wheel-check: covidct was not imported from the installed wheel"; exit 1; }

step "synthetic cohort"
"$COVIDCT" synth cohort --n 3 --shape 8,48,48 --seed 0
step "covidct train --config covidnet-ct2-s (1 epoch, 32 px)"
"$COVIDCT" train --config covidnet-ct2-s --data cohort/manifest.csv --out run --epochs 1 \
  --set 'model.overrides={input_size: 32}' --set 'recipe.overrides={size: 32}' --set batch_size=8 \
  --set device=cpu --set amp=off --set num_workers=0 >train.log 2>&1 || { tail -20 train.log; exit 1; }
test -s run/best.ckpt
step "covidct predict on a synthetic DICOM study"
"$COVIDCT" predict cohort/studies/SYN-COVID-000 --checkpoint run/best.ckpt --out reports >predict.json
grep -q '"predicted_class"' predict.json && test -s reports/SYN-COVID-000/report.html
step "covidct triage without the serve extra names it"
set +e
"$COVIDCT" triage cohort/studies 2>triage.err; rc=$?
set -e
[ "$rc" = 2 ] && grep -q 'pip install "covidct\[serve\]"' triage.err \
  || { echo "wheel-check: triage without sqlalchemy gave rc $rc: $(cat triage.err)"; exit 1; }
step "passed"
