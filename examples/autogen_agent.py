"""An AutoGen agent with a Python tool, served by whatever ocak's config says.

The agent talks to ocak's OpenAI-compatible API by ``base_url`` and asks for the
model alias ``assistant``. Which model answers is ocak's business: with
``examples/ocak.yaml`` it is Llama on Groq when ``GROQ_API_KEY`` is set, and the
embedded local model otherwise. This file does not change between the two.

    ocak serve --config examples/ocak.yaml          # in one terminal
    python examples/autogen_agent.py "What is the weather in Istanbul?"
"""

from __future__ import annotations

import asyncio
import os
import sys

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ModelFamily
from autogen_ext.models.openai import OpenAIChatCompletionClient

OCAK_URL = os.environ.get("OCAK_URL", "http://127.0.0.1:8000/v1")
MODEL = os.environ.get("OCAK_MODEL", "assistant")


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny and 24 degrees Celsius in {city}."


def model_client(**create_args: object) -> OpenAIChatCompletionClient:
    """AutoGen's OpenAI client pointed at ocak; only base_url differs from hosted use."""
    return OpenAIChatCompletionClient(
        model=MODEL,
        base_url=OCAK_URL,
        api_key=os.environ.get("OCAK_API_KEY", "unused"),
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": True,
            "structured_output": True,
            "family": ModelFamily.UNKNOWN,
        },
        **create_args,  # type: ignore[arg-type]
    )


def agent(client: OpenAIChatCompletionClient) -> AssistantAgent:
    return AssistantAgent(
        "assistant",
        model_client=client,
        tools=[get_weather],
        system_message="You are a helpful assistant. Use the tools to answer.",
        reflect_on_tool_use=True,
    )


async def main(task: str) -> None:
    client = model_client(temperature=0, seed=0)
    result = await agent(client).run(task=task)
    for message in result.messages:
        print(f"[{message.source}] {type(message).__name__}: {message.to_text()}")
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "What is the weather in Istanbul?"))
