"""examples/autogen_agent.py end to end on the local default model, with AutoGen itself.

AutoGen runs in its own environment (.venv-autogen, made by `make test` from
examples/requirements-autogen.txt), as an application would, and reaches ocak
over HTTP only. Its assistant sends ``tool_choice: auto``, which a 135M model
may answer in text; so the tool-call mechanics are driven through the same
AutoGen client with ``tool_choice="required"``, and the agent run as written
is checked to reach a final answer.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import jsonschema
import pytest

from helpers import ServerProcess
from paths import ROOT

PYTHON = ROOT / ".venv-autogen" / "bin" / "python"


@pytest.fixture(scope="module")
def report(server: ServerProcess) -> dict[str, Any]:
    assert PYTHON.exists(), "run `make test` (it creates .venv-autogen for the AutoGen example)"
    env = {**os.environ, "OCAK_URL": f"{server.url}/v1", "OCAK_MODEL": "default"}
    done = subprocess.run(
        [str(PYTHON), str(ROOT / "tests" / "autogen_driver.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_autogen_calls_the_tool_with_valid_arguments_and_answers(report: dict[str, Any]) -> None:
    trip = report["round_trip"]
    assert trip["finish"] == "function_calls", trip
    call = trip["call"]
    assert call["name"] == "get_weather"
    assert call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["arguments"]), trip["schema"])
    assert trip["tool_output"].startswith("It is sunny")
    final = trip["final"]
    assert final["finish"] in ("stop", "length")
    assert isinstance(final["content"], str) and final["content"].strip()


def test_the_example_agent_reaches_a_final_answer(report: dict[str, Any]) -> None:
    messages = report["agent"]
    assert messages[0] == {
        "source": "user",
        "type": "TextMessage",
        "text": "What is the weather in Istanbul?",
    }
    last = messages[-1]
    assert last["source"] == "assistant"
    assert last["type"] in ("TextMessage", "ToolCallSummaryMessage")
    assert last["text"].strip()
