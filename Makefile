# Every target bootstraps the virtual environment first, so a fresh clone needs nothing else.
# TORCH_SPEC holds the pip arguments that install torch, e.g. for a CUDA build:
#   make test TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
# (quote a specifier holding < or > inside it: TORCH_SPEC="'torch>=2.5' --index-url ...").
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vsreid-bootstrap

.PHONY: bootstrap demo picture notebook test bench clean

bootstrap: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: bootstrap
	$(PY) -m vsreid.demo

# the README picture: the demo's results on the bundled sample, four frames per sequence
picture: bootstrap
	$(PY) -m vsreid.demo --picture notebooks/figures/demo.jpg

# re-execute the notebook in place, so it is committed with its outputs
notebook: bootstrap
	$(PY) notebooks/execute.py

test: bootstrap
	$(PY) -m pytest $(PYTEST_ARGS)

bench: bootstrap
	@status=0; for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || status=1; done; exit $$status

clean:
	rm -rf $(VENV) outputs build *.egg-info
