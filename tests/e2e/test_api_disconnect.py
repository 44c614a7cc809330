"""A client that leaves stops its generation and frees its sequence, on every engine."""

from __future__ import annotations

import httpx
import pytest

from helpers import ServerProcess, active, wait_until

COUNT = {
    "model": "default",
    "prompt": "Count from one to one thousand: one, two, three,",
    "max_tokens": 900,
    "temperature": 0,
}


def freed_within(engine: str) -> float:
    """Seconds to free a sequence: one decode step in principle; CTranslate2 notices a
    cancellation at its next step callback, and its steps are slower here."""
    return 5.0 if engine == "llama.cpp" else 10.0


def test_disconnect_frees_the_sequence_at_once(server: ServerProcess, engine: str) -> None:
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{server.url}/v1/completions", json={**COUNT, "stream": True}) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in got)
        assert active(server) >= 1
    # The connection is closed; the server must stop generating promptly
    # (900 tokens would take many seconds).
    assert wait_until(lambda: active(server) == 0, timeout=freed_within(engine))
    # And a following request is served at once.
    r2 = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "default", "prompt": "Hi", "max_tokens": 2},
        timeout=30,
    )
    assert r2.status_code == 200


def test_non_streaming_client_that_gives_up_frees_its_sequence(
    server: ServerProcess, engine: str
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=COUNT, timeout=1.0)
    assert wait_until(lambda: active(server) == 0, timeout=freed_within(engine))
