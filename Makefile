# The kit's two jobs. `make all`: execute every notebook (full profile) and build the book.
# `make test`: unit tests + every notebook at its quick profile, checked by nbval.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD ?= build
export REPLIB_STATIC := 1
export TRANSFORMERS_VERBOSITY := error
export HF_HUB_OFFLINE := 1
.PHONY: all env notebooks book test student clean

all: notebooks book

# torch: the CPU build by default, from PyTorch's CPU wheel index (a few hundred MB instead of PyPI's multi-GB CUDA
# build on Linux). On a machine with an NVIDIA GPU pick a CUDA index instead, e.g.
#     make env TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (TORCH_INDEX= empty takes PyPI's default build). torch is installed first, by pip and without dependencies, so that
# pip's local wheel folders (find-links) can supply it when the index cannot be reached; uv then finds
# torch==$(TORCH_VERSION) present and adds the rest from PyPI (measured on 2 cores: `make env` 1 min, 2 with pip alone).
TORCH_VERSION := 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_HELP = make env: could not install torch==$(TORCH_VERSION) from $(or $(TORCH_INDEX),PyPI). Check the network, or pick another build with TORCH_INDEX=... (see the Makefile).

# Create the virtual environment when missing (or when pyproject.toml changed).
env: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(PY) -m pip install --quiet --no-deps --retries 1 --timeout 30 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) \
		"torch==$(TORCH_VERSION)" || { echo "$(TORCH_HELP)" >&2; exit 1; }
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) "torch==$(TORCH_VERSION)" -e ".[all]"
	$(PY) -c "import torch; print('torch', torch.__version__, '| CUDA build' if torch.version.cuda else '| CPU build')"
	touch $@

notebooks: env
	$(PY) -m replib.execute --profile full --out $(BUILD)/notebooks

book: env
	$(PY) -m replib.book --notebooks $(BUILD)/notebooks --out $(BUILD)/book

# Each exercise cell runs as a student would (it must stop at its stub), then with its solution (--student-check).
# Quick profiles run with a fresh checkpoint cache, so the tests train every model they check. pytest-xdist spreads
# the work over JOBS processes (one torch thread each): a notebook, with the notebooks that reuse its models, runs on
# one worker in order (tests/conftest.py). JOBS=0 runs everything in one process.
JOBS ?= auto
test: env
	rm -rf $(BUILD)/quick $(BUILD)/quick-cache
	$(PY) -m replib.execute --profile quick --prepare-only --student-check --out $(BUILD)/quick
	REPLIB_CACHE=$(abspath $(BUILD))/quick-cache $(PY) -m pytest tests $(BUILD)/quick -n $(JOBS) --dist loadscope \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

# Student versions of the notebooks: every exercise's solution replaced by a stub that raises NotImplementedError.
student: env
	$(PY) -m replib.exercises student --out $(BUILD)/student

clean:
	rm -rf $(BUILD)
