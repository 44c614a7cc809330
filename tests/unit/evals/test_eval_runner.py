"""``ocak eval`` against a real ocak over loopback HTTP (uvicorn, fake models): two
models compared over repeats, the JSON and HTML files, exit codes for the threshold, a
bad suite and an unreachable server, registry prompt versions as targets, resuming an
interrupted run, and 429s slowing a run down instead of failing it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from eval_helpers import ADD, CAPITAL, CITY_JSON, eval_server
from helpers import free_port
from ocak.cli.main import app
from ocak.evals.checkpoint import Checkpoint, checkpoint_path
from ocak.evals.client import EvalClient
from ocak.evals.runner import evaluate
from ocak.evals.suite import SuiteError, load_suite
from ocak.providers.errors import retry_after


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
SUITE: dict[str, Any] = {
    "name": "geography",
    "models": ["alpha", "beta"],
    "repeats": 5,
    "threshold": 0.8,
    "defaults": {"max_tokens": 40, "temperature": 0.7},
    "cases": [
        {
            "name": "capital",
            "messages": [{"role": "user", "content": CAPITAL}],
            "reference": "Paris",
            "assert": [
                {"type": "icontains", "value": "paris"},
                {"type": "llm-judge", "model": "judge"},
                {"type": "similar", "threshold": 0.6},
            ],
        },
        {
            "name": "city-json",
            "messages": [{"role": "user", "content": CITY_JSON}],
            "assert": [
                {"type": "json-schema", "schema": {"type": "object", "required": ["city"]}},
                {"type": "expression", "value": 'json is not None and json["city"] == "Paris"'},
            ],
        },
        {
            "name": "add",
            "messages": [{"role": "user", "content": ADD}],
            "assert": [{"type": "tool-call", "tool": "add", "parameters": ADD_SCHEMA}],
        },
        {"name": "echo", "messages": [{"role": "user", "content": HOSTILE}]},
    ],
}


def write_suite(folder: Path, data: dict[str, Any], name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["eval", *args, "--no-progress"], env=env or {})


def test_two_models_over_repeats_give_rates_files_and_exit_codes(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, SUITE)
    out, html = tmp_path / "out" / "results.json", tmp_path / "report.html"
    with eval_server(tmp_path / "data") as server:
        r = cli(str(suite), "--url", server.url, "-o", str(out), "--html", str(html))
        # beta is right every other time: 3 of 5 repeats per graded case, below 0.8
        assert r.exit_code == 1, r.output
        assert "below the threshold" in r.output and "beta" in r.output.split("threshold")[-1]
        assert server.scripts.asked["alpha"] == 20 and server.scripts.asked["beta"] == 20
        assert server.scripts.asked["judge"] == 10  # one judgement per capital sample

        doc = json.loads(out.read_text())
        assert doc["format"] == "ocak-eval/1" and doc["passed"] is False
        targets = {t["id"]: t for t in doc["targets"]}
        assert targets["alpha"]["pass_rate"] == 1.0 and targets["alpha"]["passed_threshold"]
        assert targets["beta"]["passed"] == 3 * 3 + 5  # echo has no graders: always passes
        low, high = targets["beta"]["wilson_95"]
        assert low < targets["beta"]["pass_rate"] < high
        assert targets["beta"]["score_std"] > 0 and targets["alpha"]["errors"] == 0
        assert targets["alpha"]["latency_ms"]["p50"] > 0
        assert targets["alpha"]["completion_tokens"]["p90"] >= 1
        cases = {(c["target"], c["case"]): c for c in doc["cases"]}
        capital = cases[("beta", "capital")]
        assert (capital["samples"], capital["passed"]) == (5, 3)
        assert capital["graders"]["llm-judge judge"] == 0.6
        assert len(doc["samples"]) == 40 and not checkpoint_path(out).exists()
        tool = next(s for s in doc["samples"] if s["case"] == "add" and s["target"] == "alpha")
        assert tool["tool_calls"][0]["name"] == "add" and tool["grades"][0]["passed"]
        row = next(line for line in r.output.splitlines() if "│ capital" in line)
        assert row.split("│")[2:4] == [" " * 13 + "5/5 ", " " * 11 + "3/5 "]  # the table
        assert "70% (48%–85%)" in r.output

        page = html.read_text()
        assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<del>" in page
        assert "<script" not in page.lower() and "<img" not in page  # the output is escaped
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<link" not in page and 'src="http' not in page and "@import" not in page
        assert "Lyon, I think." in page  # beta's wrong answers, side by side

        r = cli(str(suite), "--url", server.url, "-o", str(out), "--threshold", "0.5")
        assert r.exit_code == 0, r.output


def test_bad_suites_and_unreachable_servers_exit_2_without_a_traceback(tmp_path: Path) -> None:
    bad = write_suite(tmp_path, {"name": "x", "models": ["a"], "cases": [{"name": "c"}]})
    r = cli(str(bad))
    assert r.exit_code == 2 and "cases[0].messages: a case needs messages" in r.output
    assert "Traceback" not in r.output
    assert cli(str(tmp_path / "missing.yaml")).exit_code == 2
    good = write_suite(tmp_path, {**SUITE, "repeats": 1}, "good.yaml")
    r = cli(str(good), "--url", f"http://127.0.0.1:{free_port()}", "-o", str(tmp_path / "r.json"))
    assert r.exit_code == 2 and "cannot reach ocak at http://127.0.0.1:" in r.output
    assert not (tmp_path / "r.json").exists()


def test_a_server_with_keys_needs_one_and_takes_it_from_the_environment(tmp_path: Path) -> None:
    one = {**SUITE, "repeats": 1, "cases": SUITE["cases"][:1], "models": ["alpha"]}
    suite = write_suite(tmp_path, one)
    with eval_server(tmp_path / "data", key=True) as server:
        r = cli(str(suite), "--url", server.url, "-o", str(tmp_path / "r.json"))
        assert r.exit_code == 2 and "refused the key" in r.output
        r = cli(str(suite), "--url", server.url, "-o", str(tmp_path / "r.json"),
                env={"OCAK_API_KEY": server.token})  # fmt: skip
        assert r.exit_code == 0, r.output


def test_prompt_versions_are_targets_and_the_version_used_is_recorded(tmp_path: Path) -> None:
    prompt = {
        "id": "npc",
        "messages": [
            {"role": "system", "content": "You are {{ npc }}, a cheerful innkeeper."},
            {"role": "user", "content": "Greet {{ player }}."},
        ],
        "variables": [{"name": "npc"}, {"name": "player"}],
    }
    suite = write_suite(
        tmp_path,
        {
            "name": "npc",
            "models": ["alpha"],
            "prompts": [{"id": "npc", "version": 1}, {"id": "npc", "label": "staging"}],
            "repeats": 2,
            "cases": [
                {
                    "name": "greet",
                    "variables": {"npc": "Bram", "player": "Ayla"},
                    "assert": [{"type": "contains", "value": "cheerful"}],
                }
            ],
        },
    )
    out = tmp_path / "r.json"
    with eval_server(tmp_path / "data") as server:
        grumpy = {"role": "system", "content": "You are {{ npc }}, grumpy."}
        staging = {"messages": [grumpy, prompt["messages"][1]], "labels": ["staging"]}
        for changes in ({}, staging):
            made = httpx.post(f"{server.url}/v1/prompts", json={**prompt, **changes}, timeout=10)
            assert made.status_code == 201, made.text
        r = cli(str(suite), "--url", server.url, "-o", str(out))
    assert r.exit_code == 1, r.output  # the staging version is not cheerful
    doc = json.loads(out.read_text())
    targets = {t["id"]: t for t in doc["targets"]}
    assert targets["alpha + npc@1"]["pass_rate"] == 1.0
    assert targets["alpha + npc@staging"]["pass_rate"] == 0.0
    assert targets["alpha + npc@staging"]["prompt_versions"] == [{"id": "npc", "version": 2}]
    sample = next(s for s in doc["samples"] if s["target"] == "alpha + npc@staging")
    assert sample["prompt_version"] == {"id": "npc", "version": 2}
    assert "Bram, grumpy." in sample["output"] and "Greet Ayla." in sample["output"]


def test_an_interrupted_run_resumes_with_only_the_rest_and_refuses_a_changed_suite(
    tmp_path: Path,
) -> None:
    data = {**SUITE, "repeats": 3, "concurrency": 1, "cases": SUITE["cases"][1:3]}
    path = write_suite(tmp_path, data)
    out = tmp_path / "r.json"
    partial = checkpoint_path(out)

    with eval_server(tmp_path / "data", delay=0.02) as server:
        # The real command, stopped with Ctrl-C once some samples are done.
        command = [sys.executable, "-m", "ocak", "eval", str(path), "--url", server.url,
                   "-o", str(out), "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not partial.exists() or len(partial.read_text().splitlines()) < 1 + 4:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and b"run again with --resume" in err, err
        done = len(partial.read_text().splitlines()) - 1
        assert 4 <= done < 12 and not out.exists()

        changed = write_suite(tmp_path, {**data, "repeats": 4}, "changed.yaml")
        r = cli(str(changed), "--url", server.url, "-o", str(out), "--resume")
        assert r.exit_code == 2 and "the suite changed since the checkpoint" in r.output
        assert "run without --resume" in r.output

        server.scripts.reset()
        r = cli(str(path), "--url", server.url, "-o", str(out), "--resume")
        assert r.exit_code == 1, r.output
        asked = server.scripts.asked["alpha"] + server.scripts.asked["beta"]
        assert asked == 12 - done and f"resumed: {done} samples" in r.output
    doc = json.loads(out.read_text())
    assert len(doc["samples"]) == 12 and doc["resumed_samples"] == done
    assert {(s["target"], s["case"], s["repeat"]) for s in doc["samples"]} == {
        (t, c, n) for t in ("alpha", "beta") for c in ("city-json", "add") for n in range(3)
    }
    assert not partial.exists()


def test_429s_wait_for_retry_after_and_bounded_retries_fail_the_sample(tmp_path: Path) -> None:
    one = {
        **SUITE,
        "repeats": 2,
        "concurrency": 1,
        "models": ["alpha"],
        "cases": SUITE["cases"][1:2],
    }
    suite = load_suite(write_suite(tmp_path, one))

    async def run(url: str, **client: Any) -> dict[str, Any]:
        async with EvalClient(url, **client) as c:
            outcome = await evaluate(suite, c, tmp_path / "r.json", progress=False)
            return outcome.document

    with eval_server(tmp_path / "data") as server:
        server.throttle.pending = 1
        start = time.monotonic()
        doc = run_sync(run(server.url))
        assert time.monotonic() - start >= 1.0  # it waited out Retry-After: 1
        assert doc["passed"] and server.throttle.refused == 1
        first = doc["samples"][0]
        assert first["attempts"] == 2 and first["waited_s"] >= 1.0
        assert doc["targets"][0]["retries"] == 1

        server.throttle.pending, server.throttle.retry_after = 3, "0"
        doc = run_sync(run(server.url, max_retries=2))
        failed = [s for s in doc["samples"] if s["error"]]
        assert len(failed) == 1 and failed[0]["status"] == 429 and failed[0]["attempts"] == 3
        assert "HTTP 429: Rate limit reached." in failed[0]["error"]
        assert doc["targets"][0]["errors"] == 1 and not doc["passed"]

    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "soon"}) is None
    assert (retry_after({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}) or 0) > 1e6


def test_a_resume_without_a_checkpoint_just_runs(tmp_path: Path) -> None:
    one = {**SUITE, "repeats": 1, "models": ["alpha"], "cases": SUITE["cases"][3:]}
    suite = write_suite(tmp_path, one)
    with eval_server(tmp_path / "data") as server:
        r = cli(str(suite), "--url", server.url, "-o", str(tmp_path / "r.json"), "--resume")
    assert r.exit_code == 0, r.output
    partial = checkpoint_path(tmp_path / "r.json")
    partial.write_text("garbage\n")
    with pytest.raises(SuiteError, match="not an ocak eval checkpoint"):
        Checkpoint(partial, "h", "n").start(resume=True)
