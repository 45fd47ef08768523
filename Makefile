# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
# TORCH_SPEC pins the CPU wheel that lies on this workplace's disk; elsewhere pass e.g. TORCH_SPEC='torch>=2.4'.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test test-fast test-min lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed-base: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(BIN)/geodino demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# the developer's loop: everything but the tests marked slow (real-size models, notebooks, fresh processes, clusters)
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow" -q

# the declared lower bounds: a separate venv with every dependency at its minimum (constraints/minimum.txt;
# torch from TORCH_SPEC), then the fast tests. Not part of `make test` (a second environment to install).
MIN_VENV ?= .venv-min
test-min:
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip --disable-pip-version-check install --quiet "$(TORCH_SPEC)"
	$(MIN_VENV)/bin/python -m pip --disable-pip-version-check install --quiet --only-binary :all: -c constraints/minimum.txt -e ".[test]"
	$(MIN_VENV)/bin/python -m pip --disable-pip-version-check check
	$(MIN_VENV)/bin/python -m pytest -m "not slow" -q -p no:cacheprovider

bench: $(VENV)/.installed-test
	$(BIN)/python bench/backbone_speed.py
	$(BIN)/python bench/encode_speed.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/memory.py --model bench.standin:vitl --target 1.10
	$(BIN)/python bench/canopy_speed.py
	$(BIN)/python bench/scaleout_speed.py
	$(BIN)/python bench/input_contract.py
	$(BIN)/python bench/pipeline_speed.py

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache .hypothesis
