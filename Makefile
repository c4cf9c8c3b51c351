# Two entry points for a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every install takes its versions from the lock file, so a fresh machine gets what CI tested.
PIP_INSTALL := $(BIN)/pip install --quiet --constraint constraints.txt

.PHONY: setup demo up test protos check-deploy lock

setup: $(VENV)/.installed

# torch is pinned and installed first so the project's `torch>=2.4` does not pull another build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e '.[dev]'
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

# Resolves pyproject.toml's ranges afresh in a scratch venv and writes what it got to constraints.txt.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet torch==2.13.0
	.venv-lock/bin/pip install --quiet '.[dev]'
	{ echo '# The versions `make` and the Dockerfile install (pip -c): the set CI tests. Regenerate with `make lock`.'; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^specdec' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt
	rm -rf .venv-lock
