# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test bench protos clean

# pip is pinned: 26.3 shows setuptools' informational notice on every editable install, even with -q.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==26.2
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

# mpc's own bytecode, next to its sources (mpc/**/__pycache__, ignored by git), as `pip install`
# writes it for an installed mpc and Python for any import where PYTHONDONTWRITEBYTECODE is unset.
# The editable install writes none, and on a machine that sets PYTHONDONTWRITEBYTECODE every `mpc`
# process would compile ~100 modules again (about 0.2 s of CPU per node started). Up to date: 0.05 s.
BYTECODE := $(BIN)/python -m compileall -q mpc

demo: $(STAMP)
	$(BYTECODE)
	$(BIN)/mpc demo

test: $(STAMP)
	$(BYTECODE)
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BYTECODE)
	$(BIN)/python benchmarks/run.py $(ARGS)

protos: $(STAMP)
	$(BIN)/python tools/protogen.py

clean:
	rm -rf $(VENV) build *.egg-info

# Both compose demos in Docker, built offline (root; installs docker.io, starts a private
# dockerd in a network namespace and removes it again): deploy/e2e/run.sh.
.PHONY: e2e-docker
e2e-docker:
	bash deploy/e2e/run.sh
