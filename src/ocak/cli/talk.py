"""``ocak run`` and ``ocak chat``: talk to a model in the terminal, in-process."""

from __future__ import annotations

import asyncio
import sys

import typer

from ocak.cli.common import fail, fail_on, setup_logging
from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.factory import engine_for
from ocak.errors import OcakError
from ocak.models.store import resolve
from ocak.protocol.generation import Finished, GenerationRequest, Message, TextDelta

MODEL = typer.Option("default", "--model", "-m", help="'default', a GGUF path or a store name.")
TEMPERATURE = typer.Option(0.7, "--temperature", help="0 is greedy.")
MAX_TOKENS = typer.Option(512, "--max-tokens", help="Longest answer, in tokens.")
SEED = typer.Option(None, "--seed", help="Fix the sampling seed for a repeatable answer.")
SYSTEM = typer.Option(None, "--system", "-s", help="System prompt.")
CTX = typer.Option(4096, "--ctx-size", "-c", help="Context window.")


def _load(model: str, ctx_size: int) -> Engine:
    setup_logging("warning")
    try:
        settings = Settings.load(parallel=1, ctx_size=ctx_size)
        engine = engine_for(resolve(model, settings.model_dir), settings)
    except OcakError as exc:
        fail_on(exc)
    asyncio.run(engine.load())
    if engine.state != "ready":
        fail(f"could not load {model}: {engine.error}")
    return engine


async def _stream(engine: Engine, request: GenerationRequest) -> tuple[str, Finished | None]:
    pieces: list[str] = []
    finished: Finished | None = None
    async for event in engine.generate(request):
        if isinstance(event, TextDelta):
            pieces.append(event.text)
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, Finished):
            finished = event
    return "".join(pieces), finished


def run(
    prompt: str = typer.Argument(..., help="What to ask."),
    model: str = MODEL,
    system: str = SYSTEM,
    temperature: float = TEMPERATURE,
    max_tokens: int = MAX_TOKENS,
    seed: int = SEED,
    ctx_size: int = CTX,
) -> None:
    """Answer one prompt, streaming to the terminal."""
    engine = _load(model, ctx_size)
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", prompt))
    request = GenerationRequest(
        model=engine.model_id,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
    )
    try:
        _, finished = asyncio.run(_stream(engine, request))
    except OcakError as exc:
        fail_on(exc)
    except KeyboardInterrupt:
        finished = None
    sys.stdout.write("\n")
    asyncio.run(engine.close())
    if finished is not None and finished.reason == "length":
        sys.stderr.write(f"[stopped at --max-tokens {max_tokens}]\n")


HELP = "Commands: /reset clears the conversation, /exit (or Ctrl-D) quits."


def chat(
    model: str = MODEL,
    system: str = SYSTEM,
    temperature: float = TEMPERATURE,
    max_tokens: int = MAX_TOKENS,
    seed: int = SEED,
    ctx_size: int = CTX,
) -> None:
    """Interactive multi-turn chat in the terminal."""
    engine = _load(model, ctx_size)
    history: list[Message] = [Message("system", system)] if system else []
    base = list(history)
    sys.stderr.write(f"Chatting with {engine.model_id}. {HELP}\n")
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write("\n")
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            break
        if text == "/reset":
            history = list(base)
            sys.stderr.write("(conversation cleared)\n")
            continue
        if text.startswith("/"):
            sys.stderr.write(f"Unknown command {text}. {HELP}\n")
            continue
        history.append(Message("user", text))
        request = GenerationRequest(
            model=engine.model_id,
            messages=list(history),
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )
        try:
            answer, _ = asyncio.run(_stream(engine, request))
        except KeyboardInterrupt:
            answer = ""
            sys.stdout.write(" [interrupted]")
        except OcakError as exc:
            sys.stdout.write("\n")
            sys.stderr.write(f"error: {exc.message}\n")
            history.pop()
            continue
        sys.stdout.write("\n")
        history.append(Message("assistant", answer))
    asyncio.run(engine.close())
