"""Datasets from traffic (``store_content``): what a chat request and its answer leave in
the usage store, and the retention that deletes them.

``ContentCapture`` (request_log.py) keeps a chat request's whole body and rebuilds its
answer (``AnswerStream`` for SSE, ``answer_from_json`` otherwise) on ``record.exchange``;
the accounting sink hands it, with the usage row's id, to ``ContentKeeper``, which stores
the messages the model saw (a registry prompt's rendered ones), the parameters worth
keeping and the answer, redacted. Only completed chat requests are kept; never audio,
never an upload. ``retention_task`` deletes content older than ``content_retention``
when the server starts and then periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from typing import Any

from ocak.errors import OcakError
from ocak.protocol.record import RequestRecord
from ocak.store.content import Content, Scrub, insert_content, purge_content
from ocak.store.db import Store

log = logging.getLogger("ocak.server")

STORED_PATHS = frozenset({"/v1/chat/completions"})
ANSWER_LIMIT = 1024 * 1024  # an answer's JSON, or a stream's text and arguments; past it: not kept
PURGE_INTERVAL = 3600.0
# Request fields kept beside the messages: what shaped the answer.
KEPT = (
    "model", "tools", "tool_choice", "parallel_tool_calls", "response_format", "temperature",
    "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "presence_penalty",
    "frequency_penalty",
)  # fmt: skip


def _tool_call(call: Any) -> dict[str, Any] | None:
    """A tool call in OpenAI's shape (arguments a JSON string, as the API has them)."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return None
    fn = call["function"]
    arguments = fn.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    out: dict[str, Any] = {"type": "function", "function": {"name": fn.get("name") or ""}}
    if call.get("id"):
        out = {"id": call["id"], **out}
    out["function"]["arguments"] = arguments
    return out


def _assistant(content: Any, calls: list[Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    shaped = [c for c in map(_tool_call, calls) if c is not None]
    if shaped:
        message["tool_calls"] = shaped
    return message


def answer_from_json(body: bytes) -> dict[str, Any] | None:
    """The answer of a whole (not streamed) chat completion: its first choice's message."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    calls = message.get("tool_calls")
    return {
        "message": _assistant(message.get("content"), calls if isinstance(calls, list) else []),
        "finish_reason": choices[0].get("finish_reason"),
    }


class AnswerStream:
    """A streamed answer rebuilt from its SSE frames as they pass: text, tool calls by index,
    finish reason. Memory is bounded by ``limit`` (the text and arguments, and any one
    unfinished line), not by the frames' overhead."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.finish_reason: str | None = None
        self.over = False  # past the limit: the text is a prefix, the answer is not kept
        self.failed = False  # an error frame: not an answer
        self._pending = bytearray()
        self._text: list[str] = []
        self._size = 0
        self._calls: dict[int, dict[str, Any]] = {}

    @property
    def text(self) -> str:
        return "".join(self._text)

    def feed(self, data: bytes) -> None:
        if self.over:
            return
        self._pending.extend(data)
        while (end := self._pending.find(b"\n")) >= 0:
            line = bytes(self._pending[:end]).rstrip(b"\r")
            del self._pending[: end + 1]
            if line.startswith(b"data:"):
                self._frame(line[5:].strip())
        if len(self._pending) > self.limit:
            self.over = True
            self._pending.clear()

    def _grow(self, n: int) -> bool:
        self._size += n
        if self._size > self.limit:
            self.over = True
        return not self.over

    def _frame(self, data: bytes) -> None:
        if data == b"[DONE]":
            return
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if "error" in payload:
            self.failed = True
            return
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1: the first choice is the answer kept
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(text, str) and self._grow(len(text)):
                self._text.append(text)
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                for call in delta["tool_calls"]:
                    self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _call(self, call: Any) -> None:
        if not isinstance(call, dict):
            return
        index = call.get("index", 0)
        entry = self._calls.setdefault(
            index if isinstance(index, int) else 0,
            {"id": None, "function": {"name": "", "arguments": ""}},
        )
        if call.get("id"):
            entry["id"] = call["id"]
        fn = call.get("function")
        if not isinstance(fn, dict):
            return
        if fn.get("name") and not entry["function"]["name"]:
            entry["function"]["name"] = str(fn["name"])
        pieces = fn.get("arguments")
        if isinstance(pieces, str) and self._grow(len(pieces)):
            entry["function"]["arguments"] += pieces

    def answer(self) -> dict[str, Any] | None:
        """The answer in a whole completion's shape; None past the limit or after an error."""
        if self.over or self.failed:
            return None
        calls = [self._calls[i] for i in sorted(self._calls)]
        content = self.text if self._text or not calls else None
        return {"message": _assistant(content, calls), "finish_reason": self.finish_reason}


def _has_audio(body: dict[str, Any], messages: list[Any]) -> bool:
    """Whether a chat request carries or asks for sound (``audio``, an ``input_audio``
    part): such a request is never stored."""
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        return True
    for m in messages:
        parts = m.get("content") if isinstance(m, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and (
                part.get("type") in ("input_audio", "audio") or "input_audio" in part
            ):
                return True
    return False


def _message(m: Any) -> Any:
    """A message as a dataset keeps it: fields that say nothing (None) left out."""
    if not isinstance(m, dict):
        return m
    return {k: v for k, v in m.items() if v is not None or k == "content"}


def content_of(record: RequestRecord) -> Content | None:
    """What to store of a request: None unless it is a completed chat request with an
    answer, and never when it carries audio."""
    exchange = record.exchange
    if exchange is None or record.status != "completed" or record.http_status != 200:
        return None
    answer = exchange.get("answer")
    try:
        body = json.loads(exchange.get("request") or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or not isinstance(answer, dict):
        return None
    messages = record.rendered if record.rendered is not None else body.get("messages")
    if not isinstance(messages, list) or not messages or _has_audio(body, messages):
        return None
    params = {k: body[k] for k in KEPT if body.get(k) is not None}
    prompt = body.get("prompt")
    if isinstance(prompt, dict) and prompt.get("variables"):
        params["prompt_variables"] = prompt["variables"]
    return Content([_message(m) for m in messages], params, answer)


class ContentKeeper:
    """Stores a request's content beside its usage row, redacted with ``scrub`` (the
    providers' key values) and the key shapes ``ocak.store.content.redact`` knows."""

    def __init__(self, db: Store, scrub: Scrub | None = None) -> None:
        self.db = db
        self.scrub = scrub

    def keep(self, usage_id: int, record: RequestRecord) -> None:
        content = content_of(record)
        if content is not None:
            insert_content(self.db, usage_id, record.started_at, content, self.scrub)


def purge_expired(db: Store, retention: float) -> int:
    """Delete content older than ``retention`` seconds; how many rows went (0 when the
    database is closing or busy: the next round deletes them)."""
    try:
        return purge_content(db, time.time() - retention)
    except (sqlite3.Error, OcakError) as exc:
        log.warning("could not delete expired stored content: %s", exc)
        return 0


def retention_task(db: Store | None, retention: float) -> asyncio.Task[None] | None:
    """Delete expired content now and every hour (every half retention, when that is
    shorter), off the event loop; whether or not content is stored now, what was stored
    before still expires. None without a store."""
    if db is None:
        return None
    interval = min(PURGE_INTERVAL, max(1.0, retention / 2))

    async def run() -> None:
        while True:
            gone = await asyncio.to_thread(purge_expired, db, retention)
            if gone:
                log.info("deleted %d stored requests past their retention", gone)
            await asyncio.sleep(interval)

    return asyncio.create_task(run(), name="ocak-content-retention")


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
