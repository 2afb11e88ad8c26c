# fdseg: `make demo` and `make test` each create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The [nnunet] extra lives in its own venv: nnU-Net pulls a PyPI torchvision that does not load beside a CPU
# torch, which would break the optional imports of the core venv.
NNUNET_VENV := .venv-nnunet
NNUNET_BIN := $(NNUNET_VENV)/bin
# torch==2.13.0 is pinned here only to pick the local CPU wheel on CPU machines; the package itself asks for torch>=2.8.
TORCH_SPEC ?= torch==2.13.0
# Test files are spread over the cores (pytest-xdist); a file stays on one worker, so its module fixtures are built once.
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: venv demo test lint typecheck layers pytest test-nnunet bench clean

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
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) --ignore=tests/integrations/nnunet
	$(MAKE) test-nnunet

# torch is named again so that the resolver keeps the CPU wheel (and picks the torchvision built for it).
$(NNUNET_BIN)/.fdseg-nnunet: pyproject.toml
	test -x $(NNUNET_BIN)/python || $(PY) -m venv $(NNUNET_VENV)
	$(NNUNET_BIN)/python -m pip install -q --upgrade pip
	$(NNUNET_BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(NNUNET_BIN)/python -m pip install -q -e ".[dev,nnunet]" "$(TORCH_SPEC)"
	touch $@

# The nnU-Net integration tests, in the [nnunet] venv; where the extra cannot be installed they run in the
# core venv and skip, saying why.
test-nnunet: venv
	@if $(MAKE) $(NNUNET_BIN)/.fdseg-nnunet; then \
		$(NNUNET_BIN)/python -m pytest -q tests/integrations/nnunet; \
	else \
		echo "note: the [nnunet] extra could not be installed here; its tests skip"; \
		$(BIN)/python -m pytest -q tests/integrations/nnunet; \
	fi

bench: venv
	$(BIN)/python bench/loss_overhead.py
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) $(NNUNET_VENV) .mypy_cache .pytest_cache .ruff_cache
