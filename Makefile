# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := output/datasets/ml_dataset_latest_full.parquet
DEMO_RUN := runs/demo

.PHONY: venv demo test lint bench bench-gpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m atft.demo --data $(DATA) --run-dir $(DEMO_RUN)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks

test: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[dev,bench]"
	$(BIN)/python benchmarks/run_all.py

# one GPU: bf16 training samples/s, MFU, peak GPU memory, one epoch of the seed's command (< 8 min on an H100/H200);
# without a GPU it runs the --dry CPU pass and says so in benchmarks/results/gpu.md
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/bench_gpu.py

clean:
	rm -rf runs output _logs
