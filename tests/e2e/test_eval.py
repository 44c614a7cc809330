"""``ocak eval`` as a user runs it: the real CLI (a subprocess) against a real ``ocak
serve`` with two real models (the bundled SmolLM2 and Gemma 3 270M from the model
store), repeats, the JSON and HTML files, and the exit code for a threshold missed and
met."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from helpers import running

GEMMA = "gemma-3-270m"


def ocak_eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocak", "eval", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_eval_compares_two_real_models_and_exits_by_the_threshold(
    gemma_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / f"{GEMMA}.gguf").symlink_to(gemma_file)
    suite = tmp_path / "suite.yaml"
    cases = [
        {
            "name": "capital",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "assert": [{"type": "regex", "pattern": r"\w"}, "is-json"],  # not JSON: fails
        },
        {
            "name": "colour",
            "messages": [{"role": "user", "content": "Name a colour."}],
            "assert": [{"type": "expression", "value": "len(output) > 0"}],
        },
    ]
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "two real models",
                "models": ["default", GEMMA],
                "repeats": 3,
                "concurrency": 4,
                "defaults": {"max_tokens": 12, "temperature": 0.8},
                "cases": cases,
            }
        )
    )
    out, html = tmp_path / "results.json", tmp_path / "report.html"
    args = ["--parallel", "4", "--ctx-size", "512"]
    with running(args, env={"OCAK_DATA_DIR": str(tmp_path)}) as server:
        r = ocak_eval(str(suite), "--url", server.url, "-o", str(out), "--html", str(html))
        assert r.returncode == 1, r.stderr  # the JSON case cannot pass
        assert "below the threshold" in r.stderr and "Traceback" not in r.stderr
        doc = json.loads(out.read_text())
        assert [t["id"] for t in doc["targets"]] == ["default", GEMMA]
        for target in doc["targets"]:
            assert target["samples"] == 6 and target["errors"] == 0, target
            assert target["latency_ms"]["p50"] > 0 and target["completion_tokens"]["p50"] > 0
        by_case = {(c["target"], c["case"]): c for c in doc["cases"]}
        assert by_case[("default", "capital")]["graders"] == {"regex /\\w/": 1.0, "is-json": 0.0}
        assert all(s["output"] for s in doc["samples"]) and len(doc["samples"]) == 12
        assert {s["model"] for s in doc["samples"]} == {"default", GEMMA}
        page = html.read_text()
        assert GEMMA in page and "<svg" in page and "<script" not in page

        # Only the passing case, once each, with a threshold it meets: exit 0.
        suite.write_text(yaml.safe_dump({**yaml.safe_load(suite.read_text()), "cases": cases[1:]}))
        r = ocak_eval(str(suite), "--url", server.url, "-o", str(out), "--repeats", "1")
        assert r.returncode == 0, r.stderr + r.stdout
        assert json.loads(out.read_text())["passed"] is True
