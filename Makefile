# `make run` and `make test` create .venv on first use (Python >= 3.11 as python3).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?=

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml setup.py src/otelflow/_native.c src/otelflow/_redact.cpp src/otelflow/_h2.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/otelflow run $(if $(CONFIG),--config $(CONFIG))

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench

bench: $(VENV)/.installed
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info src/otelflow/_native.*.so src/otelflow/_redact.*.so src/otelflow/_h2.*.so
