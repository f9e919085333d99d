# Two commands do all set-up on a fresh machine:
#   make demo   train a tiny ViT on CIFAR-10 and report its test accuracy
#   make test   create the environment and run every test (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
DATA   ?= ../shared/data

.PHONY: venv demo test cifar10-60min bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,oracle,cuda]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m minivit.cli attention-example
	$(PY) -m minivit.cli train --preset cifar10-tiny --epochs 1 --data-dir $(DATA) --backend numba --out runs/demo

# The documented recipe: cifar10-tiny, 28 epochs, about 55 minutes on 2 CPU cores.
cifar10-60min: venv
	$(PY) -m minivit.cli train --preset cifar10-tiny --epochs 28 --batch-size 64 --lr 1e-3 \
		--eval-every 4 --data-dir $(DATA) --backend numba --out runs/cifar10-60min

bench: venv
	$(PY) benchmarks/train_step.py

# tests: the CPU suite (with the CUDA compile gate, tests/test_cuda_compile.py, which
# needs the real CUDA target), then the CUDA backend under numba's simulator (which must
# be switched on before numba is imported, hence a process of its own).
test: venv
	$(PY) -m pytest -q tests
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q tests/cuda

clean:
	rm -rf $(VENV) runs .pytest_cache
