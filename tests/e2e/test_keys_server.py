"""Keys, limits, usage records, metrics and log lines on a real ``ocak serve`` (default model)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from helpers import ServerProcess, running, wait_until
from keys_helpers import create_key, ocak, usage_rows

MSG: list[Any] = [{"role": "user", "content": "Say hello."}]


class Keyed:
    def __init__(self, server: ServerProcess, data: Path, keys: dict[str, str]) -> None:
        self.server = server
        self.data = data
        self.keys = keys

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.server.url}/v1", api_key=key, max_retries=0)


def table_cells(line: str) -> list[str]:
    """The cells of one row of a rich table."""
    return [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """A server whose data folder has keys, made with the ``ocak keys`` command."""
    data = tmp_path_factory.mktemp("ocak-keyed")
    keys = {
        "main": create_key(data, "main"),
        "only-other": create_key(data, "only-other", "--models", "other-model"),
        "slow": create_key(data, "slow", "--rpm", "2"),
    }
    proc = ServerProcess(
        ["--parallel", "4", "--ctx-size", "512", "--max-tokens-limit", "16"],
        env={"OCAK_DATA_DIR": str(data)},
    )
    try:
        proc.wait_ready()
        yield Keyed(proc, data, keys)
    finally:
        proc.stop()


def test_keys_list_shows_names_and_prefixes_never_keys(keyed: Keyed) -> None:
    out = ocak(keyed.data, "keys", "list").stdout
    for name, key in keyed.keys.items():
        assert name in out
        assert key[:12] in out
        assert key not in out and key[12:20] not in out


def test_the_official_client_works_with_a_key_and_fails_without(keyed: Keyed) -> None:
    reply = keyed.client(keyed.keys["main"]).chat.completions.create(
        model="default", messages=MSG, max_tokens=4
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    with pytest.raises(openai.AuthenticationError) as info:
        keyed.client("ocak-not-a-key").chat.completions.create(model="default", messages=MSG)
    assert info.value.code == "invalid_api_key"
    r = httpx.post(f"{keyed.server.url}/v1/chat/completions", json={"model": "x"}, timeout=30)
    assert r.status_code == 401  # before the body is even looked at
    assert httpx.get(f"{keyed.server.url}/health", timeout=30).status_code == 200


def test_a_model_restricted_key_gets_403(keyed: Keyed) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        keyed.client(keyed.keys["only-other"]).chat.completions.create(
            model="default", messages=MSG
        )
    assert info.value.code == "permission_denied"


def test_a_model_restricted_key_lists_only_its_models(keyed: Keyed) -> None:
    listed = keyed.client(keyed.keys["only-other"]).models.list()
    assert [m.id for m in listed.data] == []  # 'other-model' is not served here
    assert "default" in [m.id for m in keyed.client(keyed.keys["main"]).models.list().data]
    with pytest.raises(openai.PermissionDeniedError):
        keyed.client(keyed.keys["only-other"]).models.retrieve("default")


def test_requests_per_minute_give_429_with_retry_after(keyed: Keyed) -> None:
    client = keyed.client(keyed.keys["slow"])
    for _ in range(2):
        client.chat.completions.create(model="default", messages=MSG, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="default", messages=MSG, max_tokens=1)
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_usage_rows_match_what_the_responses_said(keyed: Keyed) -> None:
    client = keyed.client(keyed.keys["main"])
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=MSG, max_tokens=5
    )
    reply = raw.parse()
    (row,) = usage_rows(keyed.data, request_id=raw.headers["x-request-id"])
    assert reply.usage is not None
    assert row["key_name"] == "main" and row["model"] == "default"
    assert row["backend"] == "llama.cpp:default" and row["locality"] == "local"
    assert row["prompt_tokens"] == reply.usage.prompt_tokens
    assert row["completion_tokens"] == reply.usage.completion_tokens
    assert row["status"] == "completed" and row["http_status"] == 200
    assert 0 < row["ttft_ms"] <= row["total_ms"]

    with client.chat.completions.with_streaming_response.create(
        model="default",
        messages=MSG,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    usage = chunks[-1].usage
    assert usage is not None
    # Committed before the last byte: the row is there as soon as the stream has ended.
    (srow,) = usage_rows(keyed.data, request_id=request_id)
    assert srow["stream"] == 1 and srow["status"] == "completed"
    assert srow["completion_tokens"] == usage.completion_tokens

    out = ocak(keyed.data, "usage", "--by", "key", "--since", "1h").stdout
    cells = next(c for c in map(table_cells, out.splitlines()) if c and c[0] == "main")
    assert int(cells[1].replace(",", "")) == len(usage_rows(keyed.data, key_name="main"))


def test_the_max_tokens_cap_is_the_default(keyed: Keyed) -> None:
    reply = keyed.client(keyed.keys["main"]).completions.create(
        model="default", prompt="Once upon a time", max_tokens=None, temperature=0
    )
    assert reply.usage is not None and reply.usage.completion_tokens <= 16
    with pytest.raises(openai.BadRequestError) as info:
        keyed.client(keyed.keys["main"]).chat.completions.create(
            model="default", messages=MSG, max_tokens=17
        )
    assert info.value.param == "max_tokens"


def test_a_client_that_leaves_mid_stream_is_recorded_as_cancelled(tmp_path: Path) -> None:
    """On a server without this module's 16-token cap: greedy, this prompt runs to its
    300-token limit (checked: finish_reason "length", about 4 s here), and the client
    leaves after the first chunk."""
    body = {
        "model": "default",
        "prompt": "Once upon a time, in a land of dragons,",
        "max_tokens": 300,
        "temperature": 0,
        "stream": True,
    }
    with running(
        ["--parallel", "1", "--ctx-size", "512"], env={"OCAK_DATA_DIR": str(tmp_path)}
    ) as server:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            request_id = r.headers["x-request-id"]
            next(r.iter_lines())
        # Closing after the first chunk: the server sees the disconnect and stops.
        assert wait_until(lambda: usage_rows(tmp_path, request_id=request_id), timeout=30)
    (row,) = usage_rows(tmp_path, request_id=request_id)
    assert row["status"] == "cancelled" and row["http_status"] == 200
    assert 0 < row["completion_tokens"] < 300


def test_metrics_need_a_key_and_count_requests(keyed: Keyed) -> None:
    url = f"{keyed.server.url}/metrics"
    assert httpx.get(url, timeout=30).status_code == 401
    auth = {"Authorization": f"Bearer {keyed.keys['main']}"}
    text = httpx.get(url, headers=auth, timeout=30).text
    completed = (
        'ocak_requests_total{backend="llama.cpp:default",model="default",status="completed"}'
    )
    assert completed in text
    assert 'ocak_active_sequences{model="default"}' in text
    assert 'ocak_queue_depth{model="default"}' in text
    assert "ocak_time_to_first_token_seconds_bucket" in text


def test_one_json_line_per_request_and_no_key_in_the_log(keyed: Keyed) -> None:
    r = httpx.post(
        f"{keyed.server.url}/v1/chat/completions",
        json={"model": "default", "messages": MSG, "max_tokens": 2},
        headers={"Authorization": f"Bearer {keyed.keys['main']}", "x-request-id": "trace-42"},
        timeout=120,
    )
    assert r.headers["x-request-id"] == "trace-42"

    def logged() -> list[dict[str, Any]]:
        lines = [x for x in keyed.server.log().splitlines() if x.startswith("{")]
        return [e for e in map(json.loads, lines) if e.get("request_id") == "trace-42"]

    assert wait_until(logged)
    (entry,) = logged()
    assert entry["key"] == "main" and entry["status"] == "completed"
    log = keyed.server.log()
    for key in keyed.keys.values():
        assert key not in log
    assert "Say hello" not in log  # prompts are not logged by default


def test_a_client_that_leaves_before_a_non_streaming_answer_is_cancelled_not_failed(
    keyed: Keyed,
) -> None:
    long_prompt = "Summarise this: " + "the quick brown fox jumps over the lazy dog " * 40
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{keyed.server.url}/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": long_prompt}]},
            headers={
                "Authorization": f"Bearer {keyed.keys['main']}",
                "x-request-id": "leaves-early",
            },
            timeout=httpx.Timeout(30, read=0.1),  # ~400 prompt tokens take longer than that
        )
    assert wait_until(lambda: usage_rows(keyed.data, request_id="leaves-early"), timeout=60)
    (row,) = usage_rows(keyed.data, request_id="leaves-early")
    assert row["status"] == "cancelled", {
        k: row[k] for k in ("status", "http_status", "error_code", "completion_tokens", "model")
    }
    assert "unexpected error" not in keyed.server.log()
