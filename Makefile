# The two commands a newcomer needs: `make test` and `make demo`. Both build .venv themselves.
PY ?= python3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
TORCH_STAMP := $(VENV)/.installed-torch

.PHONY: test test-all demo demo-tiny bench lint format clean

$(TORCH_STAMP):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# pinned: a bare `torch` requirement would pull the newest (on Linux x86-64: CUDA) build; TORCH_INDEX picks
	# the build, e.g. https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

# the demo needs only the core, metrics and plots; the tests also need transformers, ONNX, TensorFlow, ...
$(DEMO_STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/pip install -q -e ".[metrics,plot]"
	touch $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: $(DEMO_STAMP)
	$(BIN)/convbert demo

demo-tiny: $(DEMO_STAMP)
	$(BIN)/convbert demo --budget tiny

test: lint
	$(BIN)/pytest -q

test-all: $(STAMP)
	$(BIN)/pytest -q -m ""

bench: $(STAMP)
	$(BIN)/convbert bench

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
