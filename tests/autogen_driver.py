"""Drive examples/autogen_agent.py with AutoGen; run by test_autogen.py in .venv-autogen.

Prints one JSON object with what happened, for the test to check:
``call`` (the tool call AutoGen's client parsed), ``tool_output``, ``final``
(the answer after the tool result) and ``agent`` (the example agent's messages).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "autogen_agent.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("autogen_agent_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def tool_round_trip(example: Any) -> dict[str, Any]:
    """The agent's mechanics through AutoGen's own client, with tool_choice='required'."""
    from autogen_core import CancellationToken
    from autogen_core.models import (
        AssistantMessage,
        FunctionExecutionResult,
        FunctionExecutionResultMessage,
        SystemMessage,
        UserMessage,
    )
    from autogen_core.tools import FunctionTool

    tool = FunctionTool(example.get_weather, description="Get the current weather in a city.")
    client = example.model_client(temperature=0, seed=0)
    history: list[Any] = [
        SystemMessage(content="You are a helpful assistant. Use the tools to answer."),
        UserMessage(content="What is the weather in Istanbul?", source="user"),
    ]
    first = await client.create(history, tools=[tool], tool_choice="required")
    out: dict[str, Any] = {"finish": first.finish_reason, "schema": tool.schema["parameters"]}
    if not isinstance(first.content, list):
        out["content"] = first.content
        return out
    call = first.content[0]
    out["call"] = {"id": call.id, "name": call.name, "arguments": call.arguments}
    result = await tool.run_json(json.loads(call.arguments), CancellationToken())
    text = tool.return_value_as_string(result)
    out["tool_output"] = text
    history += [
        AssistantMessage(content=first.content, source="assistant"),
        FunctionExecutionResultMessage(
            content=[
                FunctionExecutionResult(
                    content=text, call_id=call.id, name=call.name, is_error=False
                )
            ]
        ),
    ]
    final = await client.create(history, tools=[tool], tool_choice="none")
    out["final"] = {"finish": final.finish_reason, "content": final.content}
    await client.close()
    return out


async def agent_run(example: Any) -> list[dict[str, str]]:
    """The example agent as written (tool_choice auto), to a final message."""
    client = example.model_client(temperature=0, seed=0, max_tokens=120)
    result = await example.agent(client).run(task="What is the weather in Istanbul?")
    await client.close()
    return [
        {"source": m.source, "type": type(m).__name__, "text": m.to_text()} for m in result.messages
    ]


async def main() -> None:
    example = load_example()
    report = {"round_trip": await tool_round_trip(example), "agent": await agent_run(example)}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
