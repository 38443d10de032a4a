# Set-up and entry points. `make bench` and `make test` each build everything
# they need on a fresh machine: a .venv with the pinned torch, then this package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

# Compile the CUDA kernels whenever a CUDA toolkit is here, GPU or not, so that
# CUDA code can never silently rot.
CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
ifneq ($(CUDA_HOME),)
export CUDA_HOME
export FORCE_CUDA ?= 1
export TORCH_CUDA_ARCH_LIST ?= 9.0
endif
export MAX_JOBS ?= 2

.PHONY: deps install test bench bench-ops sdist-check clean

$(VENV)/.deps-stamp: Makefile pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install $(TORCH_PIN)
	$(PY) -m pip install ninja build numpy pytest matplotlib av tqdm pyyaml onnx onnxscript onnxruntime import-linter
	touch $@

deps: $(VENV)/.deps-stamp

# The install is editable, so only the compiled sources call for a rebuild.
$(VENV)/.build-stamp: $(VENV)/.deps-stamp setup.py $(shell find csrc -type f)
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.build-stamp
	$(PY) -c "import afnet_kernels, json; print(json.dumps(afnet_kernels.backends(), indent=1))"

test: install
	$(PY) -m pytest -q -ra tests

bench: install
	$(VENV)/bin/afnet bench

bench-ops: install
	$(PY) benchmarks/ops.py

# The sdist, installed into a fresh venv with only torch and the sdist, imports and runs (CI).
sdist-check: deps
	PY=$(PY) TORCH_PIN="$(TORCH_PIN)" .ci/sdist-roundtrip

clean:
	rm -rf build *.egg-info afnet_kernels/*.so $(VENV)/.build-stamp
