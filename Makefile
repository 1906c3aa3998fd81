# The kit's two jobs. `make all`: execute every notebook (full profile) and build the book.
# `make test`: unit tests + every notebook at its smoke profile, checked by nbval.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD ?= build
export REPLIB_STATIC := 1
export TRANSFORMERS_VERBOSITY := error
export HF_HUB_OFFLINE := 1
# The SD1.4 prompt sets: downloaded (sha256-checked) when this is empty; a local copy is used when one is next to
# the project (../shared/data, as on the kit's test machines) or given on the command line.
REPLIB_PROMPTS_DIR ?= $(firstword $(wildcard $(abspath ../shared/data) /work/shared/data))
ifneq ($(REPLIB_PROMPTS_DIR),)
export REPLIB_PROMPTS_DIR
endif

.PHONY: all env notebooks book test clean

all: notebooks book

# Create the virtual environment when missing (or when pyproject.toml changed). torch is pinned to the CPU build.
env: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[all]"
	touch $@

notebooks: env
	$(PY) -m replib.execute --profile full --out $(BUILD)/notebooks

book: env
	$(PY) -m replib.book --notebooks $(BUILD)/notebooks --out $(BUILD)/book

# Smoke profiles run with a fresh checkpoint cache, so the tests train every model they check.
test: env
	rm -rf $(BUILD)/smoke $(BUILD)/smoke-cache
	$(PY) -m replib.execute --profile smoke --prepare-only --out $(BUILD)/smoke
	REPLIB_CACHE=$(abspath $(BUILD))/smoke-cache $(PY) -m pytest tests $(BUILD)/smoke \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

clean:
	rm -rf $(BUILD)
