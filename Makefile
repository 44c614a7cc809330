# ocak: two commands from a fresh clone: `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Trim llama.cpp's build to the library (about 7 minutes on 2 cores instead of 10+).
# pip caches the built wheel, so later installs do not rebuild it.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF
ARGS ?=

.PHONY: serve test install dev lint typecheck bench clean proto

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (ocak needs Python 3.11+; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The AutoGen example's own environment (an application talking to ocak over HTTP).
AUTOGEN_VENV := .venv-autogen
$(AUTOGEN_VENV)/.installed: examples/requirements-autogen.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found"; exit 1; }
	$(PYTHON) -m venv $(AUTOGEN_VENV)
	$(AUTOGEN_VENV)/bin/pip install --quiet -r examples/requirements-autogen.txt
	@touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/ocak serve $(ARGS)

# The whole suite. pytest exits 5 when no test was collected: not a failure here.
test: dev $(AUTOGEN_VENV)/.installed
	$(BIN)/python -m pytest $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# Regenerate the gRPC code (src/ocak/grpc/v1) from proto/; commit the result.
# tests/test_grpc_codegen.py fails when the committed code no longer matches.
proto: dev
	$(BIN)/python proto/generate.py

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: dev
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
