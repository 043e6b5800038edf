# covidct: two commands. `make demo` and `make test` each set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps demo test wheel-check lint bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh
	bash scripts/fetch-ohif.sh >/dev/null || echo "make: OHIF was not fetched; the OHIF viewer tests will skip" >&2

demo: setup
	$(PY) -m covidct.demo --out demo-output

# pytest exit code 5 (no tests collected) is a failure here.
test: setup system-deps
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: no tests ran" >&2; exit 1; fi; exit $$rc

# Wheel + sdist, twine check, then the wheel alone (no source tree) with the oldest torch/numpy (~2-3 min).
wheel-check: setup
	PYTHON=$(PY) bash scripts/wheel-check.sh

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	for b in benchmarks/*_bench.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-output runs test-artifacts .pytest_cache build dist
