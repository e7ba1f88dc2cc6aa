# edgecap — the README's quick start is `make demo` and `make test`.
# Each target installs what it needs on a fresh Debian 12 / Raspberry Pi OS machine: Debian
# packages (only those missing; with sudo when not root) and a local .venv.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Build headers for PyAudio and systemd-python (no wheels), tools the tests use for real
# (systemd brings systemd-analyze, which checks the unit; it does not become PID 1).
APT_PACKAGES = gcc pkg-config portaudio19-dev libsystemd-dev alsa-utils espeak-ng sox \
               fonts-dejavu-core fonts-lohit-deva systemd

STAMP = $(VENV)/.edgecap-installed

.PHONY: demo test bench lint format check-config clean deps

demo: $(STAMP)
	$(BIN)/edgecap run -c config/demo.ini

test: $(STAMP)
	$(BIN)/ruff check edgecap tests bench
	$(BIN)/ruff format --check edgecap tests bench
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/gate.py
	$(BIN)/python bench/link.py

lint: $(STAMP)
	$(BIN)/ruff check edgecap tests bench
	$(BIN)/ruff format --check edgecap tests bench

format: $(STAMP)
	$(BIN)/ruff format edgecap tests bench
	$(BIN)/ruff check --fix edgecap tests bench

# Regenerate the documented config from the schema (a test keeps them identical).
config/edgecap.ini: $(STAMP) $(wildcard edgecap/config/*.py)
	$(BIN)/edgecap config --defaults > $@

deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import ensurepip, sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
	  || missing="$$missing python3-venv python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory deps
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,offline]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
