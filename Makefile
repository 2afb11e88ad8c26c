# fdseg: `make demo` and `make test` each create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is pinned here only to pick the local CPU wheel on CPU machines; the package itself asks for torch>=2.8.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test lint typecheck layers pytest bench clean

$(BIN)/fdseg: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/fdseg

venv: $(BIN)/fdseg

demo: venv
	$(BIN)/fdseg demo --out runs/demo

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy

layers: venv
	$(BIN)/lint-imports

test: lint typecheck layers
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python bench/loss_overhead.py
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
