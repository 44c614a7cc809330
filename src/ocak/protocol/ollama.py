"""Ollama's wire types (``/api/chat``, ``/api/generate``, ``/api/show``...) as pydantic v2
models, and their translation into OpenAI's request dict that ocak serves.

Requests keep fields they do not know (newer clients keep working, as Ollama itself
ignores unknown options) but refuse, with a 400 naming the field, what ocak cannot
honour: images, ``think``, ``template``, ``context``, ``suffix``, logprobs, and
sampler options set away from their neutral value (``mirostat``, ``tfs_z``,
``typical_p``). Options about how a server loads a model (``num_gpu``,
``num_thread``...) are the server's start settings here and are ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ocak.config import parse_keep_alive
from ocak.errors import InvalidRequest, UnsupportedParameter
from ocak.protocol.neutral import refuse_non_neutral

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]

# Ollama's num_predict: -1 no limit, -2 until the context is full (ocak: no max_tokens).
NO_LIMIT = (-1, -2)


class Options(BaseModel):
    """``options``: Ollama's sampler names, mapped onto ocak's request fields."""

    model_config = ConfigDict(extra="allow")

    num_predict: int | None = None
    temperature: Temperature | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Unit | None = None
    min_p: Unit | None = None
    repeat_penalty: Annotated[float, Field(ge=0.0)] | None = None
    repeat_last_n: Annotated[int, Field(ge=-1)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    num_ctx: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    # An ocak extension (Ollama has none; its clients pass options through as they are):
    # "auto" (the default), "none", "required", or a tool's name to force that tool.
    tool_choice: str | dict[str, Any] | None = None

    # Accepted only at the value that turns them off (what clients send by default).
    NEUTRAL: ClassVar[dict[str, tuple[Any, ...]]] = {
        "mirostat": (None, 0),
        "tfs_z": (None, 1, 1.0),
        "typical_p": (None, 1, 1.0),
        "vocab_only": (None, False),
        "embedding_only": (None, False),
        "logits_all": (None, False),
    }

    def sampling(self) -> dict[str, Any]:
        """The OpenAI request fields (and llama-server's sampler names) these options set."""
        refuse_non_neutral(self.model_extra, self.NEUTRAL, prefix="options.")
        out: dict[str, Any] = {}
        if self.num_predict is not None:
            if self.num_predict > 0:
                out["max_tokens"] = self.num_predict
            elif self.num_predict not in NO_LIMIT:
                raise InvalidRequest(
                    "Invalid value for 'options.num_predict': a positive token count, "
                    "-1 (no limit) or -2 (fill the context).",
                    param="options.num_predict",
                )
        names = (
            "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n",
            "seed", "stop", "presence_penalty", "frequency_penalty",
        )  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.top_k == 0:
            out.pop("top_k")  # Ollama's 0: top-k off, which is ocak's default
        return out


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(BaseModel):
    """Ollama's tool call: ``function.arguments`` is an object, not a JSON string."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    function: ToolCallFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(pattern="^(system|user|assistant|tool)$")
    content: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # the ollama client's name for a tool result's tool
    tool_call_id: str | None = None  # LangChain's
    thinking: str | None = None  # a thinking model's reasoning in history: not sent on


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: float | str | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def _common(self) -> dict[str, Any]:
        """Fields every generation shares: sampling, format, keep_alive; refusals first."""
        if self.think not in (None, False):
            raise UnsupportedParameter("think", "ocak's models answer without a thinking phase")
        if self.logprobs:
            raise UnsupportedParameter("logprobs")
        if self.top_logprobs:
            raise UnsupportedParameter("top_logprobs")
        data: dict[str, Any] = {"model": self.model, "stream": self.stream}
        if self.options is not None:
            data.update(self.options.sampling())
        fmt = response_format(self.format)
        if fmt is not None:
            data["response_format"] = fmt
        if "keep_alive" in self.model_fields_set and self.keep_alive is not None:
            try:
                parse_keep_alive(self.keep_alive)
            except ValueError as exc:
                raise InvalidRequest(
                    f"Invalid value for 'keep_alive': {exc}.", param="keep_alive"
                ) from None
            data["keep_alive"] = self.keep_alive  # serving reads it from the request's extras
        return data

    @property
    def num_ctx(self) -> int | None:
        return self.options.num_ctx if self.options is not None else None


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Ollama's ``format``: ``"json"`` is any JSON object, an object is a JSON schema."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    raise InvalidRequest(
        "Invalid value for 'format': \"json\" or a JSON schema object.", param="format"
    )


def _arguments(call: ToolCall) -> str:
    args = call.function.arguments
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


class ChatRequest(_Request):
    """``POST /api/chat``."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None

    def openai(self) -> dict[str, Any]:
        """OpenAI's chat request for this body (tool calls and results translated back)."""
        data = self._common()
        data["messages"] = self._messages()
        if self.tools:
            data["tools"] = self.tools
        choice = self.options.tool_choice if self.options is not None else None
        choice = choice or (self.model_extra or {}).get("tool_choice")
        if isinstance(choice, str) and choice not in ("auto", "none", "required"):
            choice = {"type": "function", "function": {"name": choice}}
        if choice is not None:
            data["tool_choice"] = choice
        return data

    def _messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        calls: list[tuple[str, str]] = []  # (id, name) of the last assistant turn's calls
        for i, m in enumerate(self.messages):
            if m.images:
                raise UnsupportedParameter(f"messages.[{i}].images", "ocak's models read text only")
            item: dict[str, Any] = {"role": m.role, "content": m.content or ""}
            if m.role == "assistant" and m.tool_calls:
                calls = []
                item["tool_calls"] = []
                for j, c in enumerate(m.tool_calls):
                    cid = c.id or f"call_{i}_{j}"
                    calls.append((cid, c.function.name))
                    item["tool_calls"].append(
                        {
                            "id": cid,
                            "type": "function",
                            "function": {"name": c.function.name, "arguments": _arguments(c)},
                        }
                    )
            elif m.role == "tool":
                item["tool_call_id"] = m.tool_call_id or _call_for(calls, m.tool_name)
                if m.tool_name:
                    item["name"] = m.tool_name
            out.append(item)
        return out


def _call_for(calls: list[tuple[str, str]], name: str | None) -> str | None:
    """The id of the call a tool result answers: by the tool's name, else the last call."""
    for cid, called in calls:
        if name is not None and called == name:
            return cid
    return calls[-1][0] if calls else None


class GenerateRequest(_Request):
    """``POST /api/generate``: a prompt, through the model's chat template unless ``raw``."""

    prompt: str | None = None
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None

    def openai(self) -> dict[str, Any]:
        """OpenAI's chat request (or, with ``raw``, a completion request) for this body."""
        if self.images:
            raise UnsupportedParameter("images", "ocak's models read text only")
        if self.template:
            raise UnsupportedParameter("template", "ocak uses the model's own chat template")
        if self.context:
            raise UnsupportedParameter(
                "context", "send the conversation to /api/chat instead (Ollama deprecated it)"
            )
        if self.suffix:
            raise UnsupportedParameter("suffix")
        data = self._common()
        if self.raw:
            if self.system:
                raise UnsupportedParameter("system", "a raw prompt has no template to put it in")
            if "response_format" in data:
                raise UnsupportedParameter("format", "not with a raw prompt; drop raw")
            data.update(prompt=self.prompt or "", max_tokens=data.get("max_tokens"))
            return data
        messages = [{"role": "system", "content": self.system}] if self.system else []
        data["messages"] = [*messages, {"role": "user", "content": self.prompt or ""}]
        return data

    @property
    def empty(self) -> bool:
        """No prompt: Ollama's way to load (or, with keep_alive 0, unload) a model."""
        return not self.prompt


class ModelRequest(BaseModel):
    """``POST /api/show`` (and ``/api/pull``'s name): Ollama's clients send ``model``,
    older ones ``name``."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    name: str | None = None
    verbose: bool | None = None

    @property
    def id(self) -> str:
        found = self.model or self.name
        if not found:
            raise InvalidRequest(
                "Invalid value for 'model': a model name is required.", param="model"
            )
        return found


class PullRequest(ModelRequest):
    """``POST /api/pull``: the name (``hf.co/OWNER/REPO[:QUANT]``) and whether to stream."""

    stream: bool = True
    insecure: bool | None = None  # Ollama's registry over plain HTTP; the Hub is HTTPS


class EmbedRequest(BaseModel):
    """``POST /api/embed``: a text or a list of texts."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = True  # Ollama's default: cut a text to the model's window
    dimensions: Annotated[int, Field(ge=1)] | None = None
    keep_alive: str | int | float | None = None  # the embedder stays loaded: accepted

    def inputs(self) -> list[str]:
        found = [self.input] if isinstance(self.input, str) else list(self.input)
        if not found:
            raise InvalidRequest("input must hold at least one text.", param="input")
        return found

    def openai(self) -> dict[str, Any]:
        """OpenAI's body for an alias's hosted target."""
        out: dict[str, Any] = {"input": self.input, "encoding_format": "float"}
        if self.dimensions is not None:
            out["dimensions"] = self.dimensions
        return out


class LegacyEmbedRequest(BaseModel):
    """``POST /api/embeddings`` (Ollama's older route): one ``prompt``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
