"""Registry prompts in chat requests: ``"prompt": {"id": ..., "label": ...}`` rendered here.

The store (``prompts/``) is one SQLite file, ``prompts.db`` in the data folder, opened on
first use and read at every request, so a label moved by ``ocak prompts label`` or the
HTTP API applies to the next request, in this process or another. A request's prompt is
rendered before admission, so the key's permission, the input caps and the record see
the messages and model the version gives: its rendered messages come first, then the
request's own (a conversation after a system prompt); its model when the request names
none; its params (temperature, max_tokens, ...) where the request sets none, as an
alias's params apply. The record (usage row, log line) and the response name the version.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ocak.errors import InvalidRequest
from ocak.prompts.model import Rendered
from ocak.prompts.store import PromptStore
from ocak.protocol.openai import PROMPT_MODEL, ChatCompletionRequest
from ocak.serving.context import CallContext

PROMPT_HEADER = "x-ocak-prompt"  # the response header naming the version used: "id@3"


def version_name(rendered: Rendered) -> str:
    """How records and headers name a version: ``npc-greeting@3``."""
    return f"{rendered.prompt}@{rendered.version}"


class PromptServing:
    """The prompt registry's one entry for the server (see the module doc)."""

    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.path = data_dir / "prompts.db"
        self.database_url = database_url  # PostgreSQL, shared with other ocak processes
        self._store: PromptStore | None = None
        self._opening = threading.Lock()

    @property
    def store(self) -> PromptStore:
        with self._opening:
            if self._store is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._store = PromptStore(self.path, self.database_url)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def apply(self, ctx: CallContext, body: ChatCompletionRequest) -> ChatCompletionRequest:
        """``body`` with its prompt rendered into messages, model and params (404 for a
        prompt, version or label the store lacks; 400 for variables that do not fit)."""
        ref = body.prompt
        if ref is None:
            return body
        if ref.version is not None and ref.label is not None:
            raise InvalidRequest(
                "Give the prompt's version or its label, not both.", param="prompt"
            )
        try:
            rendered = self.store.render(
                ref.id, ref.variables, version=ref.version, label=ref.label
            )
        except InvalidRequest as exc:
            if exc.param and not exc.param.startswith("prompt"):
                exc.param = f"prompt.{exc.param}"
            raise
        data = body.model_dump(exclude_unset=True, exclude={"prompt"})
        own = data.get("messages", [])
        data["messages"] = [*rendered.chat_messages(), *own]
        if body.model == PROMPT_MODEL:
            if rendered.model is None:
                raise InvalidRequest(
                    f"The prompt '{version_name(rendered)}' names no model: give one.",
                    param="model",
                )
            data["model"] = rendered.model
        extra = body.model_extra or {}
        capped = "max_completion_tokens" in body.model_fields_set  # the client's cap wins
        for name, value in rendered.params.items():
            if name in body.model_fields_set or name in extra or (capped and name == "max_tokens"):
                continue
            data[name] = value
        ctx.record.prompt = version_name(rendered)
        ctx.record.rendered = data["messages"]
        ctx.prompt = rendered
        return ChatCompletionRequest.model_validate(data)

    @staticmethod
    def named(ctx: CallContext) -> dict[str, Any] | None:
        """The response's ``prompt`` object: the version a request was rendered from."""
        rendered = ctx.prompt
        if not isinstance(rendered, Rendered):
            return None
        return {"id": rendered.prompt, "version": rendered.version}
