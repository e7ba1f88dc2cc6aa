# edgecap — the README's quick start is `make demo` and `make test`.
# Each target installs what it needs on a fresh Debian 12 / Raspberry Pi OS machine: Debian
# packages (only those missing; with sudo when not root) and a local .venv.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Build headers for PyAudio and systemd-python (no wheels), tools the tests use for real
# (systemd brings systemd-analyze, which checks the unit; it does not become PID 1;
# debootstrap and systemd-nspawn boot a real systemd in a container for the service test).
# libraqm0 (with FriBiDi and HarfBuzz) shapes complex scripts (Devanagari, Arabic) in Pillow;
# procps brings /bin/kill, which the service unit's ExecReload uses.
# The screen's fonts for the nine Indic scripts (docs/scripts.md): Lohit, 60–370 kB each.
INDIC_FONTS = fonts-lohit-deva fonts-lohit-beng-bengali fonts-lohit-guru fonts-lohit-gujr \
              fonts-lohit-orya fonts-lohit-taml fonts-lohit-telu fonts-lohit-knda fonts-lohit-mlym
APT_PACKAGES = gcc pkg-config portaudio19-dev libsystemd-dev alsa-utils espeak-ng sox \
               fonts-dejavu-core $(INDIC_FONTS) libraqm0 procps systemd
# Only the tests need these (make test installs them; make demo does not): a real systemd in
# a container for the service test, and Debian's headless chromium + chromium-driver for the
# caption page's browser tests (selenium is pointed at /usr/bin/chromedriver: no download).
TEST_APT_PACKAGES = systemd-container debootstrap chromium chromium-driver

STAMP = $(VENV)/.edgecap-installed

.PHONY: demo test bench soak lint format check-config clean deps install uninstall

demo: $(STAMP)
	$(BIN)/edgecap run -c config/demo.ini

test: $(STAMP)
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(TEST_APT_PACKAGES)"
	$(BIN)/ruff check edgecap tests bench
	$(BIN)/ruff format --check edgecap tests bench
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/gate.py --results bench/results.json
	$(BIN)/python bench/link.py
	$(BIN)/python bench/outputs.py --results bench/results.json
	$(BIN)/python bench/offline.py --results bench/results.json
	$(BIN)/python bench/wakeups.py
	$(BIN)/python bench/daemon.py --suite --minutes 2 --idle-minutes 1 --results bench/results.json
	$(BIN)/python bench/compare.py --minutes 2 --idle-minutes 1 --runs 3 --what compare,idle
	$(BIN)/python bench/report.py

# Hours of corpus audio through the daemon under a fault schedule (docs/soak.md); not part of
# test or bench. A quick check: make soak SOAK_ARGS="--hours 0.05 --services soniox".
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check edgecap tests bench
	$(BIN)/ruff format --check edgecap tests bench
	$(BIN)/lint-imports

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

# --- install on a Raspberry Pi / Debian (as root): see README "Install on a Raspberry Pi" --
# A venv with --system-site-packages takes Debian's python3-* builds of numpy, PyAudio,
# Pillow, … so nothing heavy compiles on a Pi Zero. DESTDIR stages the tree (tests use it);
# SYSTEMCTL and USERADD can be replaced (e.g. by true) where there is no systemd or root.
PREFIX    ?= /opt/edgecap
DESTDIR   ?=
SYSTEMCTL ?= systemctl
USERADD   ?= useradd
RUNTIME_APT = python3-venv python3-pip python3-pyaudio python3-numpy python3-serial python3-pil \
              python3-systemd python3-websocket alsa-utils libraqm0 fonts-dejavu-core $(INDIC_FONTS) \
              procps
CREDENTIALS = soniox_api_key azure_speech_key sarvam_api_key
PIP_FLAGS ?=

install:
	@[ -n "$(DESTDIR)" ] || [ "$$(id -u)" = 0 ] || { echo "make install needs root (sudo make install)"; exit 1; }
	@if [ -z "$(DESTDIR)" ]; then \
	  missing=""; for p in $(RUNTIME_APT); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	  done; \
	  [ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }; \
	  id edgecap >/dev/null 2>&1 || $(USERADD) --system --user-group --home-dir /var/lib/edgecap --no-create-home --shell /usr/sbin/nologin edgecap; \
	fi
	install -d -m 755 $(DESTDIR)$(PREFIX)
	[ -x $(DESTDIR)$(PREFIX)/venv/bin/python ] || $(PYTHON) -m venv --system-site-packages $(DESTDIR)$(PREFIX)/venv
	$(DESTDIR)$(PREFIX)/venv/bin/python -m pip install -q --upgrade $(PIP_FLAGS) '.[offline]'
	install -m 644 README.md $(DESTDIR)$(PREFIX)/README.md
	install -d -m 755 $(DESTDIR)/usr/local/bin
	ln -sf $(PREFIX)/venv/bin/edgecap $(DESTDIR)/usr/local/bin/edgecap
	install -d -m 755 $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/edgecap
	install -m 644 systemd/edgecap.service $(DESTDIR)/etc/systemd/system/edgecap.service
	@# an existing config is the owner's: never overwritten
	[ -e $(DESTDIR)/etc/edgecap/edgecap.ini ] || install -m 644 config/edgecap.ini $(DESTDIR)/etc/edgecap/edgecap.ini
	install -d -m 755 $(DESTDIR)/etc/edgecap/edgecap.ini.d
	install -d -m 700 $(DESTDIR)/etc/edgecap/credentials
	@for k in $(CREDENTIALS); do \
	  [ -e $(DESTDIR)/etc/edgecap/credentials/$$k ] || install -m 600 /dev/null $(DESTDIR)/etc/edgecap/credentials/$$k; \
	done
	@if [ -z "$(DESTDIR)" ]; then \
	  if [ -d /run/systemd/system ]; then $(SYSTEMCTL) daemon-reload && $(SYSTEMCTL) enable --now edgecap; \
	  else $(SYSTEMCTL) enable edgecap && echo "systemd is not running here: edgecap starts at the next boot"; fi; \
	fi
	@echo "edgecap installed: 'systemctl status edgecap', 'journalctl -u edgecap -f', 'edgecap tail'"

uninstall:
	@if [ -z "$(DESTDIR)" ]; then $(SYSTEMCTL) disable --now edgecap || true; fi
	rm -f $(DESTDIR)/etc/systemd/system/edgecap.service $(DESTDIR)/usr/local/bin/edgecap
	rm -rf $(DESTDIR)$(PREFIX)
	@if [ -z "$(DESTDIR)" ]; then $(SYSTEMCTL) daemon-reload; fi
	@echo "kept: /etc/edgecap (config, keys), /var/lib/edgecap (transcripts), the user edgecap"
