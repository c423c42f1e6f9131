# `make demo` and `make test` each set everything up on a fresh machine (Python 3.10+).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint format install install-test clean

demo: $(VENV)/.installed
	$(PY) experiments/seed_questions.py

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check jaxgru tests experiments conftest.py
	$(VENV)/bin/ruff format --check jaxgru tests experiments conftest.py
	$(PY) -m pytest -q -n auto

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format jaxgru tests experiments
	$(VENV)/bin/ruff check --fix jaxgru tests experiments

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
