"""Characters served by a remote model through the gateway (issue 9's remote half).

A scripted OpenAI-compatible upstream stands in for the hosted provider: ocak
asks it for schema-constrained output (``response_format`` json_schema),
validates the packet, retries once, and otherwise answers with a clear error;
a local-only key never reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_stubs import OpenAIStub, hosted_gateway, ok
from helpers import ServerProcess

NPC: dict[str, Any] = {
    "id": "smith",
    "name": "Bram",
    "persona": "A gruff blacksmith.",
    "emotions": ["neutral", "joy", "anger"],
    "text_max_chars": 60,
    "actions": [
        {
            "name": "give_item",
            "description": "Hand the player an item.",
            "parameters": {
                "type": "object",
                "properties": {"item": {"type": "string", "enum": ["dagger", "horseshoe"]}},
                "required": ["item"],
            },
        }
    ],
    "model": "hosted",
}
PACKET = {
    "text": "Here, take this.",
    "narration": "*hands over a dagger*",
    "emotion": {"label": "joy", "strength": 3},
    "actions": [{"name": "give_item", "parameters": {"item": "dagger"}}],
    "relationship": {"trust": 2, "respect": 1, "familiarity": 1},
}

SECRET = "sk-hosted-secret-7d1f0e"


@dataclass
class Setup:
    server: ServerProcess
    stub: OpenAIStub
    key: str
    local_key: str

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key or self.key}"}
        return httpx.post(f"{self.server.url}{path}", json=body, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data: Path = tmp_path_factory.mktemp("characters-gateway")
    with hosted_gateway(data, SECRET) as gw:
        s = Setup(gw.server, gw.upstream, gw.key, gw.local_key)
        assert s.post("/v1/characters", NPC).status_code == 201
        yield s


def session(s: Setup) -> str:
    r = s.post("/v1/sessions", {"player_id": "p1", "characters": ["smith"], "greet": False})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_a_remote_model_gets_the_packet_schema_and_its_packet_is_served(s: Setup) -> None:
    s.stub.reset()
    s.stub.push(ok(tokens=pieces(json.dumps(PACKET))))
    r = s.post(f"/v1/sessions/{session(s)}/messages", {"text": "Got anything for me?"})
    assert r.status_code == 200, r.text
    turn = r.json()
    packet = turn.get("packet", turn)
    assert packet["text"] == "Here, take this."
    assert packet["emotion"]["label"] == "joy"
    assert packet["actions"] == [{"name": "give_item", "parameters": {"item": "dagger"}}]
    (sent,) = s.stub.posts()
    assert sent.body is not None
    assert sent.body["model"] == "big-model"
    fmt = sent.body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["required"][0] == "text"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"


def test_an_invalid_remote_packet_is_retried_once_then_a_clear_error(s: Setup) -> None:
    s.stub.reset()
    bad = ok(tokens=pieces('{"text": "Hi", "mood": "great"}'))
    s.stub.push(bad, bad)
    r = s.post(f"/v1/sessions/{session(s)}/messages", {"text": "Hello?"})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "no_valid_packet"
    assert SECRET not in r.text
    assert len(s.stub.posts()) == 2  # one retry, no more


def test_a_retry_that_yields_a_valid_packet_is_served(s: Setup) -> None:
    s.stub.reset()
    s.stub.push(ok(tokens=pieces("not json at all")), ok(tokens=pieces(json.dumps(PACKET))))
    r = s.post(f"/v1/sessions/{session(s)}/messages", {"text": "Hello?"})
    assert r.status_code == 200, r.text
    assert len(s.stub.posts()) == 2


def test_a_local_only_key_never_reaches_the_remote_model(s: Setup) -> None:
    s.stub.reset()
    sid = session(s)
    r = s.post(f"/v1/sessions/{sid}/messages", {"text": "Hello?"}, key=s.local_key)
    assert r.status_code == 403, r.text
    assert s.stub.posts() == []


@pytest.fixture
def s(setup: Setup) -> Setup:
    return setup
