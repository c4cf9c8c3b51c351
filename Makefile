# Two entry points for a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo up test protos check-deploy

setup: $(VENV)/.installed

# torch is pinned and installed first so the project's `torch>=2.4` does not pull another build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/specdec prepare
	touch $@

demo: setup
	./scripts/demo.sh

up: setup
	$(BIN)/specdec up

test: setup
	$(BIN)/pytest

protos: setup
	PATH=$(BIN):$$PATH ./scripts/gen_protos.sh

check-deploy: setup
	PATH=$(BIN):$$PATH ./scripts/check_deploy.sh
