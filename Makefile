# Two commands from a fresh clone; each installs what it needs into .venv first.
#   make run               the default job (embedded benchmark, CPU, < 5 min); ARGS="..." adds Hydra overrides
#   make test              the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

.PHONY: install run test
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m lpcam.run $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests
