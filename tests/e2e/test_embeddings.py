"""``/v1/embeddings`` on a real ``ocak serve`` with the bundled embedder
(all-MiniLM-L6-v2), driven by the real ``openai`` client: vectors that rank meaning,
floats and base64, ``dimensions``, token arrays, usage rows and bad input in OpenAI's
shape; an embedding alias routed to a hosted upstream (a scripted one on loopback) with
its answer relayed as it wrote it, a fallback to the local embedder when it fails, and a
local-only key's texts never reaching it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from helpers import AppServer, ServerProcess
from keys_helpers import create_key, usage_rows

pytestmark = pytest.mark.slow

SECRET = "sk-hosted-embeddings-secret"
HOSTED = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
    "model": "embed-hosted",
    "usage": {"prompt_tokens": 3, "total_tokens": 3},
}
CONFIG = """
providers:
  hosted: {{type: openai, base_url: "{url}/v1", api_key_env: OCAK_TEST_EMBED_KEY}}
routing: {{retries: 0, backoff: 0.01}}
models:
  vectors:
    targets: [{{provider: hosted, model: embed-hosted}}, {{local: all-minilm-l6-v2}}]
  hosted-vectors: {{targets: [{{provider: hosted, model: embed-hosted}}]}}
"""


class Upstream:
    """OpenAI's /embeddings, scripted: a fixed answer, or a 500 while ``failing``."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.failing = False
        self.lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/embeddings", self.embed, methods=["POST"])])
        self.server = AppServer(app).__enter__()

    async def embed(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.got.append({"body": body, "auth": request.headers.get("authorization")})
            failing = self.failing
        if failing:
            return JSONResponse({"error": {"message": "down", "type": "server_error"}}, 500)
        return JSONResponse(HOSTED)


@dataclass
class Setup:
    server: ServerProcess
    upstream: Upstream
    data: Path
    client: openai.OpenAI
    local: openai.OpenAI  # a key with locality: local


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data = tmp_path_factory.mktemp("embeddings")
    upstream = Upstream()
    key = create_key(data, "app")
    local_key = create_key(data, "offline", "--locality", "local")
    (data / "ocak.yaml").write_text(CONFIG.format(url=upstream.server.url))
    server = ServerProcess(
        ["--config", str(data / "ocak.yaml")],
        env={"OCAK_DATA_DIR": str(data), "OCAK_TEST_EMBED_KEY": SECRET},
        log_path=data / "server.log",
    )
    try:
        server.wait_ready()
        url = f"{server.url}/v1"
        yield Setup(
            server,
            upstream,
            data,
            openai.OpenAI(base_url=url, api_key=key, max_retries=0),
            openai.OpenAI(base_url=url, api_key=local_key, max_retries=0),
        )
    finally:
        server.stop()
        upstream.server.__exit__()


def vectors(r: Any) -> np.ndarray:
    return np.array([d.embedding for d in r.data], dtype=np.float32)


def test_the_openai_client_gets_vectors_that_rank_meaning(setup: Setup) -> None:
    texts = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Bond yields rose."]
    got = setup.client.embeddings.create(model="all-minilm-l6-v2", input=texts)  # base64
    v = vectors(got)
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.5 > sims[0, 2], sims
    floats = setup.client.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    assert np.allclose(vectors(floats), v, atol=1e-6)  # OpenAI's name is the same model
    assert got.usage.prompt_tokens == got.usage.total_tokens > 3 * 3
    short = setup.client.embeddings.create(model="all-minilm-l6-v2", input=texts, dimensions=64)
    w = vectors(short)
    assert w.shape == (3, 64) and np.allclose(np.linalg.norm(w, axis=1), 1.0, atol=1e-5)
    row = usage_rows(setup.data, model="all-minilm-l6-v2")[-1]
    assert row["prompt_tokens"] == short.usage.prompt_tokens and row["status"] == "completed"


def test_token_arrays_are_the_models_own_ids(setup: Setup) -> None:
    base = f"{setup.server.url}/v1"
    auth = {"Authorization": f"Bearer {setup.client.api_key}"}
    text = setup.client.embeddings.create(
        model="all-minilm-l6-v2", input="hello world", encoding_format="float"
    )
    ids = [101, 7592, 2088, 102]  # [CLS] hello world [SEP] in its WordPiece vocabulary
    r = httpx.post(
        f"{base}/embeddings", json={"model": "all-minilm-l6-v2", "input": ids}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["data"][0]["embedding"], text.data[0].embedding, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "all-minilm-l6-v2", "input": []}, 400, "input"),
        ({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 385}, 400, "dimensions"),
        ({"model": "all-minilm-l6-v2", "input": ["ok", "word " * 400]}, 400, "input.[1]"),
        ({"model": "all-minilm-l6-v2", "input": [[5, 99999999]]}, 400, "input.[0]"),
        ({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"}, 400, None),
        ({"model": "nope", "input": "x"}, 404, None),
    ],
)
def test_bad_input_is_an_openai_error_naming_the_field(
    setup: Setup, body: dict[str, Any], status: int, param: str | None
) -> None:
    auth = {"Authorization": f"Bearer {setup.client.api_key}"}
    r = httpx.post(f"{setup.server.url}/v1/embeddings", json=body, headers=auth)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error


def test_an_alias_relays_the_hosted_answer_and_falls_back_to_the_local_model(
    setup: Setup,
) -> None:
    r = setup.client.embeddings.with_raw_response.create(
        model="vectors", input="hi", encoding_format="float"
    )
    assert r.headers["x-ocak-backend"] == "hosted/embed-hosted"
    assert json.loads(r.text) == HOSTED  # relayed as the upstream wrote it
    sent = setup.upstream.got[-1]
    assert sent["body"]["model"] == "embed-hosted" and sent["body"]["input"] == "hi"
    assert sent["auth"] == f"Bearer {SECRET}"
    setup.upstream.failing = True
    try:
        r = setup.client.embeddings.with_raw_response.create(model="vectors", input="hi")
        assert r.headers["x-ocak-backend"] == "embed:all-minilm-l6-v2"
        assert len(r.parse().data[0].embedding) == 384
    finally:
        setup.upstream.failing = False


def test_a_local_only_key_never_sends_its_texts_upstream(setup: Setup) -> None:
    before = len(setup.upstream.got)
    r = setup.local.embeddings.with_raw_response.create(model="vectors", input="secret lore")
    assert r.headers["x-ocak-locality"] == "local"
    with pytest.raises(openai.APIStatusError):
        setup.local.embeddings.create(model="hosted-vectors", input="secret lore")
    assert len(setup.upstream.got) == before
