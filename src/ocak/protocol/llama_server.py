"""llama-server's native request bodies (``/completion``, ``/tokenize``, ``/detokenize``),
translated onto OpenAI's completion request.

Field names are llama.cpp's (tools/server/README.md). The samplers ocak has map onto
the same names; the ones it lacks are accepted only at the value that turns them
off and refused by name otherwise.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ocak.errors import InvalidRequest, UnsupportedParameter
from ocak.protocol.neutral import Neutral, any_value, empty, one_of, refuse_non_neutral

# Field -> is its value neutral (the feature off)? Another value is a 400 naming it.
NEUTRAL: dict[str, Neutral] = {
    "n_probs": one_of(0),  # ocak reports no token probabilities
    "post_sampling_probs": one_of(False),
    "typical_p": one_of(1),
    "tfs_z": one_of(1),
    "mirostat": one_of(0),
    "mirostat_tau": any_value,
    "mirostat_eta": any_value,
    "dry_multiplier": one_of(0),
    "dry_base": any_value,
    "dry_allowed_length": any_value,
    "dry_penalty_last_n": any_value,
    "dry_sequence_breakers": any_value,
    "xtc_probability": one_of(0),
    "xtc_threshold": any_value,
    "top_n_sigma": one_of(-1, 0),
    "dynatemp_range": one_of(0),
    "dynatemp_exponent": any_value,
    "ignore_eos": one_of(False),
    "logit_bias": empty,
    "lora": empty,
    "n_indent": one_of(0),
    "t_max_predict_ms": one_of(0),
    "return_tokens": one_of(False),
    "image_data": empty,
    "multimodal_data": empty,
    "n_cmpl": one_of(1),
}


class LlamaCompletion(BaseModel):
    """``POST /completion``."""

    model_config = ConfigDict(extra="allow")

    prompt: str | list[Any] = ""
    n_predict: int | None = Field(None, ge=-2, description="-1: until the end (or the window).")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    repeat_last_n: int | None = Field(None, ge=-1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: list[str] | None = Field(None, max_length=16)
    stream: bool = False
    cache_prompt: bool | None = None  # ocak's scheduler reuses cached prefixes anyway
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    model: str | None = None

    def refuse_unsupported(self) -> None:
        refuse_non_neutral(self.model_extra, NEUTRAL)

    def text_prompt(self) -> str:
        """The prompt as text; token arrays and multimodal prompts are refused by name."""
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) == 1 and isinstance(self.prompt[0], str):
            return self.prompt[0]
        raise UnsupportedParameter(
            "prompt",
            "send the prompt as one string (token arrays and lists of prompts "
            "are not supported; /detokenize turns tokens into text)",
        )

    def openai(self, model: str) -> dict[str, Any]:
        """OpenAI's completion body (llama-server's sampler names; ``grammar`` and
        ``response_format`` as ocak extras)."""
        self.refuse_unsupported()
        prompt = self.text_prompt()
        data: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True}
        if self.n_predict == 0:
            raise InvalidRequest(
                "n_predict 0 (only reading the prompt) is not supported; use /tokenize "
                "to count it.",
                param="n_predict",
            )
        data["max_tokens"] = self.n_predict if self.n_predict and self.n_predict > 0 else None
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "repeat_penalty",
            "repeat_last_n",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.top_k:  # 0: off
            data["top_k"] = self.top_k
        if self.seed is not None and 0 <= self.seed < 0xFFFFFFFF:  # -1: random
            data["seed"] = self.seed
        stops = [s for s in self.stop or [] if s]
        if stops:
            data["stop"] = stops
        if self.grammar and self.json_schema is not None:
            raise InvalidRequest(
                "grammar and json_schema cannot both constrain one answer.", param="grammar"
            )
        if self.grammar:
            data["grammar"] = self.grammar
        if self.json_schema is not None:
            data["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "json_schema", "schema": self.json_schema},
            }
        return data


class LlamaTokenize(BaseModel):
    """``POST /tokenize``."""

    model_config = ConfigDict(extra="allow")

    content: str = ""
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False
    model: str | None = None

    def check(self) -> None:
        if not self.parse_special:
            raise UnsupportedParameter(
                "parse_special", "special tokens written in the text are always parsed"
            )


class LlamaDetokenize(BaseModel):
    """``POST /detokenize``."""

    model_config = ConfigDict(extra="allow")

    tokens: list[int] = Field(default_factory=list, max_length=1_000_000)
    model: str | None = None
