"""The loop docs/prompts.md shows, as a user runs it, on two real models: write a prompt
(two versions, ``ocak prompts``), evaluate both versions on both models (``ocak eval``,
repeats), promote one to ``production``, see the next request get it (the OpenAI SDK,
by label), watch its trace arrive at an OTLP collector, and turn the stored traffic
(``ocak usage export``) into the cases of another eval suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml

from helpers import running, wait_until
from keys_helpers import ocak
from otlp_collector import otlp_collector

pytestmark = pytest.mark.slow

GEMMA = "gemma-3-270m"
V1 = {
    "description": "The innkeeper's greeting",
    "messages": [
        {"role": "system", "content": "You are {{ npc }}, an innkeeper. Answer in one sentence."},
        {"role": "user", "content": "I am {{ player }}. Greet me."},
    ],
    "variables": [{"name": "npc", "type": "string"}, {"name": "player", "type": "string"}],
    "params": {"max_tokens": 24},
}
V2 = {
    **V1,
    "messages": [
        {"role": "system", "content": "You are {{ npc }}, an innkeeper. Answer in one sentence."},
        {"role": "user", "content": "My name is {{ player }}. Say hello to {{ player }}."},
    ],
}
VARIABLES = {"npc": "Bram", "player": "Ayla"}


def ocak_eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocak", "eval", *args], capture_output=True, text=True, timeout=300
    )


def test_write_evaluate_promote_trace_and_replay(gemma_file: Path, tmp_path: Path) -> None:
    data = tmp_path
    (data / "models").mkdir()
    (data / "models" / f"{GEMMA}.gguf").symlink_to(gemma_file)
    for n, version in ((1, V1), (2, V2)):
        (data / f"v{n}.yaml").write_text(yaml.safe_dump(version))
    created = ocak(data, "prompts", "create", "npc-greeting", "-f", str(data / "v1.yaml"),
                   "--label", "production").stdout  # fmt: skip
    assert created.startswith("npc-greeting@1 ")
    assert ocak(data, "prompts", "create", "npc-greeting", "-f", str(data / "v2.yaml"),
                "--note", "say the name").stdout.startswith("npc-greeting@2 ")  # fmt: skip
    diff = ocak(data, "prompts", "diff", "npc-greeting", "1", "2").stdout
    assert "+  content: My name is {{ player }}. Say hello to {{ player }}." in diff, diff

    suite = data / "greeting.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "greeting",
                "models": ["default", GEMMA],
                "prompts": [{"id": "npc-greeting", "version": n} for n in (1, 2)],
                "repeats": 3,
                "threshold": 0.5,
                "defaults": {"temperature": 0.7},
                "cases": [{"name": "greets", "variables": VARIABLES,
                           "assert": [{"type": "icontains", "value": "Ayla"}]}],
            }
        )
    )  # fmt: skip
    with otlp_collector() as traces:
        args = ["--parallel", "4", "--ctx-size", "512", "--otlp-endpoint", traces.url,
                "--store-content"]  # fmt: skip
        with running(args, env={"OCAK_DATA_DIR": str(data)}) as server:
            out, html = data / "results.json", data / "report.html"
            r = ocak_eval(str(suite), "--url", server.url, "-o", str(out), "--html", str(html))
            assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
            doc = json.loads(out.read_text())
            rates = {t["id"]: t["pass_rate"] for t in doc["targets"]}
            assert len(rates) == 4, rates  # two models × two versions
            assert all(t["samples"] == 3 for t in doc["targets"]), doc["targets"]
            assert r.returncode == (0 if min(rates.values()) >= 0.5 else 1), (rates, r.stderr)
            assert "npc-greeting@2" in html.read_text()  # the report names the versions

            # Promote version 2: the next request that names the label gets it.
            ocak(data, "prompts", "label", "npc-greeting", "production", "2")
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="default",
                messages=[],
                extra_body={"prompt": {"id": "npc-greeting", "label": "production",
                                       "variables": VARIABLES}},
            )  # fmt: skip
            reply = raw.parse()
            assert reply.model_extra is not None
            assert reply.model_extra["prompt"] == {"id": "npc-greeting", "version": 2}
            assert raw.headers["x-ocak-prompt"] == "npc-greeting@2"
            trace_id = raw.headers["traceparent"].split("-")[1]

            # Its trace arrives at the collector: the request and the model call in it.
            def arrived() -> bool:
                names = {s.name for s in traces.spans if s.trace_id == trace_id}
                return any(n.startswith("chat ") for n in names)

            assert wait_until(arrived, timeout=30), [s.name for s in traces.spans][-20:]
            chat = next(
                s for s in traces.spans if s.trace_id == trace_id and s.name.startswith("chat ")
            )
            assert chat.attributes["gen_ai.request.model"] == "default"
            assert chat.attributes["gen_ai.usage.output_tokens"] >= 1

            # The stored traffic, exported, is the cases file of another suite.
            export = data / "traffic.jsonl"
            ocak(data, "usage", "export", "--format", "jsonl", "-o", str(export))
            lines = [json.loads(x) for x in export.read_text().splitlines()]
            assert len(lines) == 13, len(lines)  # twelve eval samples and the request
            assert lines[-1]["messages"][1]["content"] == "My name is Ayla. Say hello to Ayla."
            replay = data / "replay.yaml"
            replay.write_text(
                yaml.safe_dump(
                    {
                        "name": "replay",
                        "models": ["default"],
                        "repeats": 1,
                        "defaults": {"max_tokens": 16},
                        "cases_file": "traffic.jsonl",
                        "assert": [{"type": "regex", "pattern": r"\w"}],
                    }
                )
            )
            again = data / "replay.json"
            r = ocak_eval(str(replay), "--url", server.url, "-o", str(again))
            assert r.returncode == 0, r.stderr
            cases = json.loads(again.read_text())["cases"]
            assert len(cases) == 13, cases
