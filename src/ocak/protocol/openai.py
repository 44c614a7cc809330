"""OpenAI wire types (chat completions, completions, models) as pydantic v2 models.

Requests ignore fields they do not know (newer clients keep working) but refuse,
with a 400 naming the parameter, documented OpenAI parameters ocak cannot honour
yet. Each request turns itself into the engine-facing ``GenerationRequest``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ocak.errors import InvalidRequest, UnsupportedParameter
from ocak.protocol.generation import PENALTY_LAST_N, Adapter, GenerationRequest, Message
from ocak.protocol.neutral import refuse_non_neutral

MAX_STOP_SEQUENCES = 16


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ContentPart(BaseModel):
    """Any content part; only text parts are understood by ocak's text models."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ToolCallFunction(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self, index: int) -> str:
        """The message's text; refuses parts that are not text."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces: list[str] = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"Content part of type '{part.type}' is not supported: "
                    "ocak's models read text only.",
                    param=f"messages.[{index}].content.[{j}].type",
                )
            pieces.append(part.text)
        return "".join(pieces)

    def to_message(self, index: int) -> Message:
        role = "system" if self.role == "developer" else self.role
        return Message(
            role=role,
            content=self.text(index),
            name=self.name,
            tool_calls=[c.model_dump() for c in self.tool_calls] if self.tool_calls else None,
            tool_call_id=self.tool_call_id,
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Field(ge=1)]
TopK = Annotated[int, Field(ge=0)]
MinP = Annotated[float, Field(ge=0.0, le=1.0)]
RepeatPenalty = Annotated[float, Field(gt=0.0, le=10.0, allow_inf_nan=False)]
RepeatLastN = Annotated[int, Field(ge=-1)]
MAX_ADAPTERS = 8
ADAPTER_SCALE = 10.0  # |scale| at most this: past it a LoRA only adds noise


class AdapterChoice(BaseModel):
    """A LoRA adapter from the model store for this request (an ocak field, like
    llama-server's ``lora``; local llama.cpp models only)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="The adapter's name.")
    scale: float = Field(
        1.0,
        ge=-ADAPTER_SCALE,
        le=ADAPTER_SCALE,
        allow_inf_nan=False,
        description="How strongly it applies: 0 as if absent, 1 as trained.",
    )


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


class _SamplingFields(_Request):
    model: str = Field(min_length=1)
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: PositiveInt | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    # llama-server's and vLLM's extra samplers (OpenAI's clients send them in extra_body)
    top_k: TopK | None = Field(None, description="Keep the k most likely tokens; 0 = off.")
    min_p: MinP | None = Field(
        None, description="Drop tokens under min_p times the top token's probability; 0 = off."
    )
    repeat_penalty: RepeatPenalty | None = Field(
        None, description="llama.cpp's penalty on tokens in the last repeat_last_n; 1 = off."
    )
    repeat_last_n: RepeatLastN | None = Field(
        None, description="How many recent tokens the penalties look at; -1 = all, 0 = off."
    )
    user: str | None = None
    adapters: list[AdapterChoice] | None = Field(
        None,
        max_length=MAX_ADAPTERS,
        description="LoRA adapters applied to a local llama.cpp model, on top of any the "
        "model name carries (BASE@ADAPTER:SCALE).",
    )

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = _stop_list(v)
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return v

    def _check_n(self) -> None:
        if self.n is not None and self.n > 1:
            raise UnsupportedParameter("n", "only n=1 is supported; send several requests")

    def _sampling(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty or 0.0,
            "frequency_penalty": self.frequency_penalty or 0.0,
            "top_k": self.top_k or 0,
            "min_p": self.min_p or 0.0,
            "repeat_penalty": 1.0 if self.repeat_penalty is None else self.repeat_penalty,
            "repeat_last_n": PENALTY_LAST_N if self.repeat_last_n is None else self.repeat_last_n,
            "stop": _stop_list(self.stop),
            "adapters": tuple(Adapter(a.name, a.scale) for a in self.adapters or ()),
        }

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


PROMPT_MODEL = "@prompt"  # the model of a request that names none: its prompt version's


class PromptRef(BaseModel):
    """A registry prompt a chat request is rendered from (ocak's extension): by version
    number, by label (``production``), or its latest version."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="The prompt's id.")
    version: PositiveInt | None = Field(None, le=2**31 - 1, description="A version number.")
    label: str | None = Field(None, max_length=32, description="A label: 'production', ...")
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Values of the version's declared variables."
    )


class ChatCompletionRequest(_SamplingFields):
    """``POST /v1/chat/completions``."""

    prompt: PromptRef | None = Field(
        None,
        description="A registry prompt rendered server-side into the first messages; "
        "its version's model and params apply where the request sets none.",
    )
    # With a ``prompt``, its rendered messages come first and these follow (may be none).
    messages: list[ChatMessage] = Field(default_factory=list, validate_default=True)
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    UNSUPPORTED: ClassVar[dict[str, tuple[Any, ...]]] = {
        "logprobs": (None, False),
        "top_logprobs": (None, 0),
        "logit_bias": (None, {}),
        "functions": (None, []),
        "function_call": (None, "none", "auto"),
        "audio": (None,),
        "modalities": (None, ["text"]),
        "prediction": (None,),
        "web_search_options": (None,),
    }

    @model_validator(mode="before")
    @classmethod
    def _model_from_prompt(cls, data: Any) -> Any:
        """A request with a prompt may leave the model to the prompt's version."""
        if isinstance(data, dict) and data.get("prompt") is not None and "model" not in data:
            return {**data, "model": PROMPT_MODEL}
        return data

    @field_validator("messages")
    @classmethod
    def _some_messages(cls, messages: list[ChatMessage], info: ValidationInfo) -> list[ChatMessage]:
        if not messages and info.data.get("prompt") is None:
            raise ValueError("a chat request needs at least one message (or a prompt)")
        return messages

    def generation_request(self) -> GenerationRequest:
        """The engine request for the messages and sampling; ``structured.chat.plan_body``
        folds ``tools`` and ``response_format`` in."""
        refuse_non_neutral(self.model_extra, self.UNSUPPORTED)
        self._check_n()
        return GenerationRequest(
            messages=[m.to_message(i) for i, m in enumerate(self.messages)],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            **self._sampling(),
        )


class CompletionRequest(_SamplingFields):
    """``POST /v1/completions`` (the legacy text completion endpoint)."""

    prompt: str | list[str]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    echo: bool | None = None
    suffix: str | None = None

    UNSUPPORTED: ClassVar[dict[str, tuple[Any, ...]]] = {
        "logprobs": (None, 0),
        "logit_bias": (None, {}),
        "best_of": (None, 1),
    }

    def to_generation_request(self) -> GenerationRequest:
        refuse_non_neutral(self.model_extra, self.UNSUPPORTED)
        self._check_n()
        if self.echo:
            raise UnsupportedParameter("echo")
        if self.suffix:
            raise UnsupportedParameter("suffix")
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise UnsupportedParameter(
                    "prompt", "a list of prompts is not supported; send one prompt per request"
                )
            prompt = prompt[0]
        return GenerationRequest(prompt=prompt, max_tokens=self.max_tokens, **self._sampling())


# ---------------------------------------------------------------------------
# Responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    # ``knowledge`` (the chunks retrieval put into the prompt) only when there were some
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class ChoiceDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ocak"
    # chat, embedding, speech-to-text, text-to-speech, adapter: pickers of chat models skip
    # the others (an ocak field; OpenAI's clients keep it as an extra)
    kind: str = "chat"
    meta: dict[str, Any] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
