# The two commands of the README: `make quick` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# PyTorch's wheel index; e.g. https://download.pytorch.org/whl/cpu for the CPU-only wheel.
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quick test lint typecheck clean

# Avalanche and clbench go in with --no-deps and their requirements from requirements.txt:
# Avalanche asks for qpsolvers' open_source_solvers extra (jax, jaxlib, a dozen QP solvers)
# that nothing clbench runs needs (requirements.txt says why).
$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps avalanche-lib==0.6.0
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

quick: $(STAMP)
	$(BIN)/clbench run experiments/quick.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PATH=$(abspath $(BIN)):$$PATH tools/typecheck.sh

test: lint
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
