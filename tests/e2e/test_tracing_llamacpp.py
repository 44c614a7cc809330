"""Traces of a real ``ocak serve`` on the default llama.cpp model: a streamed chat's queue,
prefill and decode spans (recorded from the decode thread's timestamps) arrive at a
test OTLP collector, under the gateway attempt, back to back, with their token counts;
the server sends its last spans when SIGTERM stops it."""

from __future__ import annotations

from pathlib import Path

import httpx

from helpers import ServerProcess
from ocak.telemetry import genai
from otlp_collector import children, otlp_collector

STORY = [{"role": "user", "content": "Tell me about the sea in one sentence."}]


def test_a_local_generation_has_queue_prefill_and_decode_spans(tmp_path: Path) -> None:
    with otlp_collector() as collector:
        server = ServerProcess(
            ["--ctx-size", "512", "--parallel", "2"],
            env={"OCAK_DATA_DIR": str(tmp_path), "OCAK_OTLP_ENDPOINT": collector.url},
        )
        try:
            server.wait_ready()
            with httpx.stream(
                "POST",
                f"{server.url}/v1/chat/completions",
                json={"model": "default", "messages": STORY, "max_tokens": 8, "stream": True},
                timeout=60,
            ) as r:
                assert r.status_code == 200
                r.read()
                trace_id = r.headers["traceparent"].split("-")[1]
        finally:
            assert server.stop() == 0, server.log()
        spans = collector.of_trace(trace_id)
    names = sorted(s.name for s in spans)
    assert names == sorted(
        [
            "POST /v1/chat/completions",
            "chat default",
            "admission",
            "attempt local/default",
            "queue",
            "prefill",
            "decode",
        ]
    ), names
    [attempt] = [s for s in spans if s.name == "attempt local/default"]
    assert attempt.attributes[genai.PROVIDER] == "llama.cpp"
    queue, prefill, decode = children(spans, attempt)
    assert (queue.name, prefill.name, decode.name) == ("queue", "prefill", "decode")
    assert queue.end_ns == prefill.start_ns and prefill.end_ns == decode.start_ns
    assert queue.start_ns >= attempt.start_ns and decode.end_ns > decode.start_ns
    assert prefill.attributes[genai.INPUT_TOKENS] > 10
    assert decode.attributes[genai.OUTPUT_TOKENS] == 8
    assert decode.attributes[genai.FINISH_REASONS] == ["length"]
    assert decode.attributes["ocak.tokens_per_second"] > 0
    [chat] = [s for s in spans if s.name == "chat default"]
    assert chat.attributes[genai.OUTPUT_TOKENS] == 8
