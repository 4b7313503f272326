# Two commands from a fresh clone; each installs what it needs into .venv first.
#   make run               the default job (embedded benchmark, CPU, < 5 min); ARGS="..." adds Hydra overrides
#   make test              the test suite
#   make docs              the documentation site (docs/ -> site/)
# The venv gets requirements.txt's exact pins (the versions the documented numbers were measured with),
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

.PHONY: install run test docs
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/lpcam $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

docs: $(VENV)/.installed   # the configuration page from the config tree, then the site into site/
	$(PY) -m lpcam.cli.config_reference > docs/configuration.md
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
