"""Traces (issue 20): with ``otlp_endpoint`` set, a request's spans reach a real OTLP/HTTP
collector (run here, protobuf over loopback) with their parent/child structure and the
GenAI attributes, and the trace id the client got (``traceparent``, ``x-request-id``) is
the log line's; a gateway fallback shows both attempts with their targets; a character
turn shows its steps; off, nothing is exported and no ``traceparent`` is answered."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from app_helpers import BRAM, PACKET, served
from gateway_stubs import OpenAIStub, status
from ocak.config import CharacterSettings, ConfigError, Settings
from ocak.engines.fake import FakeEngine
from ocak.telemetry import genai
from ocak.telemetry.tracing import traces_url
from otlp_collector import Collector, ReceivedSpan, children, otlp_collector

SECRET_PROMPT = "the vault code is 7731"
PROVIDER_KEY = "sk-upstream-key-for-tracing-0123456789"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "ocak.access"]


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def no_content(spans: list[ReceivedSpan], *texts: str) -> None:
    dumped = repr([(s.name, s.attributes, s.resource) for s in spans])
    for text in texts:
        assert text not in dumped


def test_a_local_stream_is_traced_to_the_collector(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ocak.access")
    answer: dict[str, Any] = {}

    async def main(collector: Collector) -> None:
        engine = FakeEngine("default", script=lambda r: "a quiet reply", context_length=100_000)
        async with served(tmp_path, [engine], otlp_endpoint=collector.url) as s:
            body = {
                "model": "default",
                "messages": [{"role": "user", "content": SECRET_PROMPT}],
                "stream": True,
                "max_tokens": 40,
                "temperature": 0.3,
                "top_p": 0.9,
            }
            async with s.client.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                text = "".join([chunk async for chunk in r.aiter_text()])
            assert "data: [DONE]" in text
            answer.update(r.headers)
            missing = await s.client.post(
                "/v1/chat/completions",
                json={"model": "nosuch", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert missing.status_code == 404
            answer["missing"] = missing.headers["traceparent"].split("-")[1]
            probe = await s.client.get("/health")  # probes are not traced
            assert probe.status_code == 200 and "traceparent" not in probe.headers
        # the app has closed: its last spans were flushed at close

    with otlp_collector() as collector:
        asyncio.run(main(collector))
    version, trace_id, span_id, flags = answer["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled (0x02: a random trace id)
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert answer["x-request-id"] == f"req_{trace_id}"
    line, failed_line = [e for e in access_lines(caplog) if e["path"] == "/v1/chat/completions"]
    assert failed_line["trace_id"] == answer["missing"] != trace_id
    assert line["trace_id"] == trace_id and line["request_id"] == f"req_{trace_id}"

    assert collector.content_types[0] == "application/x-protobuf"
    spans = collector.of_trace(trace_id)
    server = one(spans, "POST /v1/chat/completions")
    assert (server.kind, server.parent_id, server.span_id) == ("server", "", span_id)
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["ocak.request_id"] == f"req_{trace_id}"
    assert server.resource["service.name"] == "ocak"

    chat = one(spans, "chat default")
    assert chat.parent_id == server.span_id
    a = chat.attributes
    assert a[genai.OPERATION] == "chat" and a[genai.PROVIDER] == "fake"
    assert a[genai.REQUEST_MODEL] == "default" and a[genai.RESPONSE_MODEL] == "default"
    assert (a[genai.MAX_TOKENS], a[genai.TEMPERATURE], a[genai.TOP_P]) == (40, 0.3, 0.9)
    assert a[genai.STREAM] is True
    assert a[genai.INPUT_TOKENS] > 0 and a[genai.OUTPUT_TOKENS] == 3  # "a quiet reply"
    assert a[genai.FINISH_REASONS] == ["stop"]
    assert a[genai.RESPONSE_ID].startswith("chatcmpl-")
    assert 0 < a[genai.TIME_TO_FIRST_CHUNK] < 5
    assert a[genai.TARGET] == "local/default" and a[genai.LOCALITY] == "local"
    assert [c.name for c in children(spans, chat)] == ["admission", "attempt local/default"]
    attempt = one(spans, "attempt local/default")
    assert attempt.attributes[genai.OUTCOME] == "served" and attempt.kind == "internal"
    assert chat.start_ns <= attempt.start_ns <= attempt.end_ns <= chat.end_ns <= server.end_ns
    no_content(spans, SECRET_PROMPT, "quiet reply")

    failed = collector.of_trace(answer["missing"])
    missing = one(failed, "chat nosuch")  # a request that failed is marked so, by its code
    assert missing.status == 2 and missing.attributes[genai.ERROR_TYPE] == "model_not_found"
    assert one(failed, "POST /v1/chat/completions").attributes["http.response.status_code"] == 404


def test_a_fallback_shows_both_attempts_under_the_callers_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hosted target answering 500 (retried once), then the local one: three attempt
    spans, children of the request's, in the trace the client's traceparent named."""
    monkeypatch.setenv("OCAK_TEST_TRACE_KEY", PROVIDER_KEY)
    upstream = OpenAIStub().start()
    upstream.push(status(500), status(500))
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer: dict[str, Any] = {}

    async def main(collector: Collector) -> None:
        engine = FakeEngine("default", script=lambda r: "fallback answer")
        settings: dict[str, Any] = {
            "otlp_endpoint": collector.url + "/v1/traces",
            "otlp_headers": {"x-collector-token": "tok"},
            "service_name": "game-backend-ocak",
            "providers": {
                "hosted": {
                    "type": "openai",
                    "base_url": f"{upstream.url}/v1",
                    "api_key_env": "OCAK_TEST_TRACE_KEY",
                }
            },
            "models": {
                "assistant": {
                    "targets": [{"provider": "hosted", "model": "big-model"}, {"local": "default"}]
                }
            },
            "routing": {"backoff": 0.01, "backoff_max": 0.02},
        }
        async with served(tmp_path, [engine], **settings) as s:
            r = await s.client.post(
                "/v1/chat/completions",
                json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]},
                headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-ocak-backend"] == "local/default"
            answer.update(r.headers)

    try:
        with otlp_collector() as collector:
            asyncio.run(main(collector))
    finally:
        upstream.stop()
    _, trace_id, span_id, _ = answer["traceparent"].split("-")
    assert trace_id == caller_trace  # the client's trace, continued
    assert answer["x-request-id"] == f"req_{caller_trace}-{span_id}"
    spans = collector.of_trace(trace_id)
    server = one(spans, "POST /v1/chat/completions")
    assert (
        server.parent_id == caller_span and server.resource["service.name"] == "game-backend-ocak"
    )
    chat = one(spans, "chat assistant")
    assert chat.parent_id == server.span_id
    assert chat.attributes[genai.REQUEST_MODEL] == "assistant"
    assert chat.attributes[genai.RESPONSE_MODEL] == "default"
    assert chat.attributes[genai.PROVIDER] == "fake"
    attempts = [c for c in children(spans, chat) if c.name.startswith("attempt ")]
    assert [(c.name, c.attributes[genai.OUTCOME]) for c in attempts] == [
        ("attempt hosted/big-model", "failed"),
        ("attempt hosted/big-model", "failed"),  # its one retry
        ("attempt local/default", "served"),
    ]
    hosted = attempts[0]
    assert hosted.kind == "client" and hosted.status == 2  # ERROR
    assert hosted.attributes[genai.PROVIDER] == "openai"
    assert hosted.attributes[genai.REQUEST_MODEL] == "big-model"
    assert hosted.attributes[genai.ERROR_TYPE] == "upstream_error"
    assert attempts[1].attributes["ocak.retry"] == 1
    assert attempts[2].attributes[genai.PROVIDER] == "fake"
    no_content(spans, PROVIDER_KEY, "fallback answer")


def test_off_nothing_is_exported_and_no_traceparent_is_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ocak.access")
    answer: dict[str, Any] = {}

    async def main() -> None:
        async with served(tmp_path, [FakeEngine("default")]) as s:
            assert not s.app.state.ocak.tracing.enabled
            r = await s.client.post(
                "/v1/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
                headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            )
            assert r.status_code == 200
            answer.update(r.headers)

    with otlp_collector() as collector:
        asyncio.run(main())
    assert "traceparent" not in answer
    assert re.fullmatch(r"req_[0-9a-f]{20}", answer["x-request-id"])
    assert all("trace_id" not in line for line in access_lines(caplog))
    assert collector.requests == 0 and collector.spans == []


def test_an_unsampled_trace_sends_no_spans_but_keeps_its_id(tmp_path: Path) -> None:
    answer: dict[str, Any] = {}

    async def main(collector: Collector) -> None:
        settings = {"otlp_endpoint": collector.url, "trace_sample_ratio": 0.0}
        async with served(tmp_path, [FakeEngine("default")], **settings) as s:
            r = await s.client.post(
                "/v1/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200
            answer.update(r.headers)

    with otlp_collector() as collector:
        asyncio.run(main(collector))
    assert not int(answer["traceparent"].split("-")[3], 16) & 1  # not sampled, and said so
    assert answer["x-request-id"] == f"req_{answer['traceparent'].split('-')[1]}"
    assert collector.spans == []


def test_a_character_turn_shows_its_steps(tmp_path: Path) -> None:
    """A turn with Bram: invoke_agent, its packet attempt and that attempt's model call; a
    small history budget makes the turns after the first fold older ones into a summary."""
    session: dict[str, str] = {}

    async def main(collector: Collector) -> None:
        engine = FakeEngine("default", script=lambda r: PACKET, context_length=100_000)
        settings = {
            "otlp_endpoint": collector.url,
            "characters": CharacterSettings(history_budget=50, recall_limit=0),
        }
        async with served(tmp_path, [engine], **settings) as s:
            r = await s.client.post("/v1/characters/import", content=BRAM.read_bytes())
            assert r.status_code == 201, r.text
            r = await s.client.post(
                "/v1/sessions", json={"player_id": "ayse", "characters": ["bram"]}
            )
            assert r.status_code == 201, r.text
            session["id"] = sid = r.json()["id"]
            for line in ["Good morning, Bram!", "What news from the north road today?"] * 3:
                r = await s.client.post(f"/v1/sessions/{sid}/messages", json={"text": line})
                assert r.status_code == 200, r.text
            for _ in range(100):  # the summary folds in the background after a turn
                if not s.app.state.ocak.characters._folding:
                    break
                await asyncio.sleep(0.02)

    with otlp_collector() as collector:
        asyncio.run(main(collector))
    turns = collector.named("invoke_agent Bram")
    assert len(turns) == 6
    turn = turns[0]
    spans = collector.of_trace(turn.trace_id)
    server = one(spans, "POST /v1/sessions/{session_id}/messages")
    assert turn.parent_id == server.span_id
    assert turn.attributes[genai.CONVERSATION] == session["id"]
    assert turn.attributes[genai.AGENT_ID] == "bram"
    packet = one(spans, "packet")
    assert packet.parent_id == turn.span_id and packet.attributes["ocak.valid"] is True
    [chat] = children(spans, packet)
    assert chat.name == "chat default"
    assert chat.attributes[genai.PROVIDER] == "fake"
    assert chat.attributes[genai.FINISH_REASONS] == ["stop"]
    assert chat.attributes[genai.OUTPUT_TOKENS] > 0
    summaries = collector.named("summary")
    assert summaries, [s.name for s in collector.spans]
    summary = summaries[0]
    parent = next(s for s in collector.of_trace(summary.trace_id) if s.span_id == summary.parent_id)
    assert parent.name == "invoke_agent Bram"
    summary_call = [c.name for c in children(collector.of_trace(summary.trace_id), summary)]
    assert summary_call == ["chat default"]


def test_every_genai_name_is_in_the_semantic_conventions() -> None:
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes

    known = {v for k, v in vars(gen_ai_attributes).items() if k.startswith("GEN_AI_")}
    assert set(genai.GENAI_NAMES) <= known


def test_tracing_settings_are_validated() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        Settings.load(otlp_endpoint="collector:4318")
    with pytest.raises(ConfigError, match="trace_sample_ratio"):
        Settings.load(trace_sample_ratio=1.5)
    with pytest.raises(ConfigError, match="otlp_headers"):
        Settings.load(otlp_headers="no-equals-sign")
    headers = Settings.load(otlp_headers="x-honeycomb-team=abc%3D,tenant=t1").otlp_headers
    assert headers == {"x-honeycomb-team": "abc=", "tenant": "t1"}
    assert "abc=" not in repr(Settings(otlp_headers=headers))
