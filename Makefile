# The README's two commands: `make demo` and `make test`. Both set everything up
# on a fresh Debian machine (as root, no display) and reuse .venv on re-runs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
SYS_PKGS := xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon-x11-0 \
	libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xinput0 libxcb-xkb1 \
	libdbus-1-3 libfontconfig1

.PHONY: demo test lint sysdeps venv dev clean bench screenshots

sysdeps: $(VENV)/.sysdeps
$(VENV)/.sysdeps:
	@missing=""; for p in $(SYS_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first: the pinned local CPU build; the package itself only asks torch>=2.2.
$(VENV)/.torch: $(VENV)/bin/python
	$(PIP) install -q $(TORCH_PIN)
	touch $@

$(VENV)/.runtime: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[all]"
	touch $@

$(VENV)/.testing: $(VENV)/.runtime
	$(PIP) install -q -e ".[all,testing,bioimageio]"
	touch $@

venv: $(VENV)/.sysdeps $(VENV)/.runtime
dev: $(VENV)/.sysdeps $(VENV)/.testing

demo: venv
	$(PY) scripts/demo.py

lint: dev
	$(VENV)/bin/ruff check src tests benchmarks scripts docs

test: dev lint
	QT_API=pyqt6 $(VENV)/bin/python -m pytest -q -p no:cacheprovider

screenshots: venv
	$(PY) docs/make_screenshots.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
