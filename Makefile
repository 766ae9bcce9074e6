# The two commands of the Quick start:  make demo  and  make test.
# Both install what they need (Debian packages, a venv) and then run.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help deps demo test lint unit bench clean

help:
	@echo "make demo   build the embedded default and run the main job on the bundled sample"
	@echo "make test   run the whole test suite (lint gates, unit, integration, Molecule, audit)"
	@echo "make lint   run the lint gates alone (ansible-test sanity, ansible-lint, ruff, import-linter)"
	@echo "make bench  print the benchmark figures"

.stamps/system: $(wildcard scripts/apt/*.txt) scripts/install-system-deps.sh $(wildcard scripts/system.d/*.sh)
	bash scripts/install-system-deps.sh
	@mkdir -p .stamps && touch $@

.stamps/venv: pyproject.toml scripts/bootstrap-venv.sh .stamps/system
	bash scripts/bootstrap-venv.sh
	@mkdir -p .stamps && touch $@

deps: .stamps/system .stamps/venv

demo: deps
	bash scripts/demo.sh

test: deps
	bash scripts/test.sh

lint: deps
	bash scripts/lint.sh

unit: deps
	$(PY) -m pytest tests/unit -q

bench: deps
	bash scripts/bench.sh

clean:
	rm -rf .stamps var
