# Bootstraps a virtual environment in .venv with nothing but Python, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python examples/quant_matmul.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=25

clean:
	rm -rf $(VENV)

# ---------------------------------------------------------------------------- GPU self-check
# docs/gpu.md. `make gpu-check` runs on the GPU machine's own Python (which holds torch),
# never the .venv (there is no network there to build one): the repository goes first on
# PYTHONPATH, then the wheels of .whl/ (what that machine lacks, lark), installed into
# $(GPU_DEPS). `make gpu-wheels` downloads those wheels on a machine with network access.
GPU_PYTHON ?= python3
GPU_WHEELS ?= .whl
GPU_DEPS ?= .gpu-deps
GPU_CHECK_ARGS ?=
OUT ?=
WHEEL_PYTHON ?= $(PYTHON)
GPU_WHEEL_PYTHON_VERSION ?= 3.12
GPU_LARK_VERSION ?= $(shell $(BIN)/python -c "import importlib.metadata as m; print(m.version('lark'))" 2>/dev/null || echo 1.3.1)
GPU_WHEEL_PACKAGES ?= lark==$(GPU_LARK_VERSION)
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

.PHONY: gpu-wheels gpu-deps gpu-check gpu-clean

gpu-wheels:
	$(WHEEL_PYTHON) -m pip download --no-deps --only-binary=:all: \
		--python-version $(GPU_WHEEL_PYTHON_VERSION) --implementation cp $(GPU_PLATFORMS) \
		-d $(GPU_WHEELS) $(GPU_WHEEL_PACKAGES)

gpu-deps:
	rm -rf $(GPU_DEPS)
	@if ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1; then \
		echo "$(GPU_PYTHON): installing $(GPU_WHEELS)/*.whl into $(GPU_DEPS)"; \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --target $(GPU_DEPS) $(GPU_WHEELS)/*.whl \
		|| for wheel in $(GPU_WHEELS)/*.whl; do $(GPU_PYTHON) -m zipfile -e $$wheel $(GPU_DEPS) || exit 1; done; \
	else \
		echo "gpu-deps: no wheels in $(GPU_WHEELS)/ (make gpu-wheels on a machine with network access); using what $(GPU_PYTHON) has"; \
	fi

gpu-check: gpu-deps
	PYTHONPATH="$(CURDIR):$(abspath $(GPU_DEPS))$${PYTHONPATH:+:$$PYTHONPATH}" \
		TILELANG_GPU_CHECK_COMMAND="make gpu-check" \
		$(GPU_PYTHON) benchmarks/gpu_check.py $(if $(OUT),--out "$(OUT)") $(GPU_CHECK_ARGS)

gpu-clean:
	rm -rf $(GPU_DEPS) gpu-report.md gpu-report.json
