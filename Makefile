# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BASE   := $(VENV)/.base
# the package build compiles the native kernels: any change to these rebuilds them
NATIVE := setup.py $(wildcard sundae_compress/prune/csrc/*.c sundae_compress/prune/csrc/*.h \
            sundae_compress/render/csrc/*.c sundae_compress/render/csrc/*.h)

.PHONY: venv demo test clean

venv: $(STAMP)

# torch's CPU build must come first: a plain `pip install -e .` would pull the multi-GB CUDA build.
# TORCH_INDEX: the index torch comes from. Empty = pip's configured index (on the project's machines a
# wheel index holding the CPU build). On plain PyPI the Linux wheel pulls the CUDA libraries, so
# elsewhere run `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` (PyTorch's CPU index).
TORCH_INDEX ?=
# Quiet: pip's output goes to .venv/setup.log and .venv/install.log, shown only when a step fails,
# so only the project's own progress and results reach the terminal.
PIP := $(BIN)/pip install -q --disable-pip-version-check --no-warn-script-location

$(BASE):
	@echo "setting up $(VENV) (first run only: installs the CPU build of PyTorch, a few minutes)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip > $(VENV)/setup.log 2>&1 || { cat $(VENV)/setup.log; exit 1; }
	@$(PIP) torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) >> $(VENV)/setup.log 2>&1 || { cat $(VENV)/setup.log; exit 1; }
	@touch $(BASE)

# `pip install -e .` also builds the native kernel (needs a C compiler and the Python headers, see
# README), so the stamp depends on the C sources: editing them rebuilds it.
$(STAMP): $(BASE) pyproject.toml $(NATIVE)
	@$(PIP) -e '.[test]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log >&2; exit 1; }
	@$(BIN)/python -c "import sundae_compress.prune._kernel, sundae_compress.render._raster" && touch $(STAMP)

# DEMO_FLAGS: extra options for the demo's compress step, e.g. --no-finetune or "--iterations 20"
DEMO_FLAGS ?=

demo: $(STAMP)
	@$(BIN)/python examples/make_scene.py -o examples/out/scene.ply
	@$(BIN)/sundae-compress examples/out/scene.ply --ratio 0.1 -o examples/out/scene.sundae --overwrite $(DEMO_FLAGS)
	@$(BIN)/sundae-inspect examples/out/scene.sundae

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) examples/out benchmarks/work
