# Two commands a new user needs (README):  make run   and   make test
# Everything installs into .venv; torch is pinned first to the CPU build (see DEVELOPERS.md),
# so the open `torch>=2.1` range in pyproject.toml is already satisfied and pulls nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OPAMP  ?= 5t_opamp
# Small nets on a laptop CPU: one thread per process was measured fastest (DEVELOPERS.md).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup test run data-check ngspice clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

test: setup
	$(BIN)/python -m pytest

run: setup
	$(BIN)/python -m pipeline --opamp $(OPAMP)

data-check: setup
	$(BIN)/python -m data_loader.cli --opamp $(OPAMP)

# ngspice is needed only to generate data and to verify inverse designs (Debian/Ubuntu, as root).
ngspice:
	apt-get update -qq && apt-get install -y -qq ngspice libngspice0

clean:
	rm -rf $(VENV) .pytest_cache
