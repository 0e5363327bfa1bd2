# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BASE   := $(VENV)/.base
# the package build compiles the native kernel: any change to these rebuilds it
NATIVE := setup.py $(wildcard sundae_compress/prune/csrc/*.c sundae_compress/prune/csrc/*.h)

.PHONY: venv demo test clean

venv: $(STAMP)

# torch's CPU build must come first: a plain `pip install -e .` would pull the multi-GB CUDA build.
# Quiet: only the project's own progress and results reach the terminal (pip errors still do).
PIP := $(BIN)/pip install -q --disable-pip-version-check --no-warn-script-location

$(BASE):
	@echo "setting up $(VENV) (first run only: installs the CPU build of PyTorch, a few minutes)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PIP) torch==2.13.0
	@touch $(BASE)

# `pip install -e .` also builds the native kernel (needs a C compiler and the Python headers, see
# README), so the stamp depends on the C sources: editing them rebuilds it.
$(STAMP): $(BASE) pyproject.toml $(NATIVE)
	@$(PIP) -e '.[test]' 2>&1 | grep -v -i -e '^\s*$$' -e 'setuptools' -e '^\*\*\*' -e '^!!' >&2 || true
	@$(BIN)/python -c "import sundae_compress.prune._kernel" && touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python examples/make_scene.py -o examples/out/scene.ply
	@$(BIN)/sundae-compress examples/out/scene.ply --ratio 0.1 -o examples/out/scene.sundae --overwrite
	@$(BIN)/sundae-inspect examples/out/scene.sundae

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) examples/out benchmarks/work
