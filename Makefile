# `make demo` runs the main job on embedded defaults; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.zoo-installed

.PHONY: demo test lint clean-venv

# Debian packages the tests and the demo use: chromium (hub browse-page tests), espeak-ng (PriorGrad's
# offline speech), fortunes (NAS-BERT's text classification recipe). Installed when apt-get is usable and
# they are missing; otherwise the tests that need them skip.
SYSTEM_PACKAGES ?= chromium espeak-ng fortunes

$(STAMP): pyproject.toml
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	elif [ -n "$$missing" ]; then echo "note: missing system packages:$$missing (their tests skip)"; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/zoo demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout 900 tests

lint: $(STAMP)
	$(BIN)/ruff check zoo conversion tests benchmarks hub_upload.py

clean-venv:
	rm -rf $(VENV)
