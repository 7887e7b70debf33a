# The two README commands: `make demo` (set up + CPU IsoFLOP sweep + fit) and `make test`.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml scripts/install_corpora.py
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# the pin takes the CPU wheel on CPU boxes and the CUDA wheel on GPU boxes
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[dev]'
	$(VPY) scripts/install_corpora.py
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VPY) scripts/demo.py

# Two workers: the suite's long tests are single-threaded subprocesses, and CI has 2 cores
# (tests/conftest.py runs one SLURM test at a time). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: setup
	$(VPY) -m pytest -q -n $(TEST_WORKERS) --durations=12 tests

clean:
	rm -rf $(VENV) .cache
