# Two commands from a fresh clone; each installs what it needs into .venv first.
#   make run               the default job (embedded benchmark, CPU, < 5 min); ARGS="..." adds Hydra overrides
#   make test              the test suite
# The venv gets requirements.txt's exact pins (the versions the README's numbers were measured with),
# then lpcam itself, editable and without re-resolving dependencies, which adds the `lpcam`,
# `lpcam-report` and `lpcam-seed-study` commands to .venv/bin.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

.PHONY: install run test
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/lpcam $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests
