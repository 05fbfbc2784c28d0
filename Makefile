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

demo: $(STAMP)
	$(BIN)/mpc demo

test: $(STAMP)
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
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
