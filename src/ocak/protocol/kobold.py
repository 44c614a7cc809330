"""KoboldCpp's (KoboldAI United's) generate body, translated onto OpenAI's completion request.

KoboldCpp serves one model and takes a raw prompt; its clients (SillyTavern, the
Skyrim mods' KoboldCpp connectors, ``koboldapi``) send many sampler fields on
every request. The ones ocak honours map onto OpenAI's names (and llama-server's
for the samplers OpenAI lacks); the ones it cannot honour are accepted only at
the value that turns them off (what these clients send by default) and refused
by name otherwise, so a setting never silently does nothing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ocak.errors import InvalidRequest, UnsupportedParameter
from ocak.protocol.neutral import Neutral, any_value, empty, one_of, refuse_non_neutral

# KoboldCpp's own default when a client sends no max_length.
DEFAULT_MAX_LENGTH = 100
MAX_STOP = 16


# Field -> is its value neutral (the sampler off)? A field here with another value is a 400.
NEUTRAL: dict[str, Neutral] = {
    "rep_pen_slope": one_of(0, 1),  # ocak's penalty is flat over the range
    "tfs": one_of(1),
    "top_a": one_of(0),
    "typical": one_of(1),
    "mirostat": one_of(0),
    "mirostat_tau": any_value,  # only read when mirostat is on
    "mirostat_eta": any_value,
    "dry_multiplier": one_of(0),
    "dry_base": any_value,  # only read when dry_multiplier > 0
    "dry_allowed_length": any_value,
    "dry_sequence_breakers": any_value,
    "dry_penalty_last_n": any_value,
    "xtc_probability": one_of(0),
    "xtc_threshold": any_value,  # only read when xtc_probability > 0
    "smoothing_factor": one_of(0),
    "smoothing_curve": any_value,
    "dynatemp_range": one_of(0),
    "dynatemp_exponent": any_value,
    "nsigma": one_of(0),
    "top_n_sigma": one_of(0),
    "adaptive_target": any_value,
    "use_default_badwordsids": one_of(False),  # True bans the end-of-stream token
    "banned_tokens": empty,
    "banned_strings": empty,
    "logit_bias": empty,
    "ban_eos_token": one_of(False),
    "bypass_eos": one_of(False),
    "logprobs": one_of(False),
    "images": empty,
    "n": one_of(1),
    "use_world_info": one_of(False),
    "render_special": one_of(False),
}


class KoboldGenerate(BaseModel):
    """``POST /api/v1/generate`` and ``/api/extra/generate/stream``."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    memory: str | None = Field(None, description="Text put before the prompt, as KoboldCpp does.")
    max_length: int | None = Field(None, ge=1, description="Tokens to generate (100 if unset).")
    max_context_length: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    rep_pen: float | None = Field(None, gt=0.0)
    rep_pen_range: int | None = Field(None, ge=-1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stop_sequence: list[str] | None = None
    trim_stop: bool = Field(
        True, description="False: the stop sequence that matched ends the text."
    )
    singleline: bool | None = None
    grammar: str | None = None
    grammar_retain_state: bool | None = None
    sampler_seed: int | None = None
    genkey: str | None = Field(None, max_length=200)
    model: str | None = Field(None, description="ocak: the model to use (the first if unset).")

    @field_validator("stop_sequence")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        stops = [s for s in v or [] if s]  # KoboldCpp skips empty ones
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        return stops

    def refuse_unsupported(self) -> None:
        """A sampler ocak does not have, set to a value that turns it on: 400 by name."""
        refuse_non_neutral(self.model_extra, NEUTRAL)
        if self.grammar_retain_state:
            raise UnsupportedParameter("grammar_retain_state")

    @property
    def full_prompt(self) -> str:
        """KoboldCpp puts ``memory`` before the prompt."""
        return (self.memory or "") + self.prompt

    def stops(self) -> list[str]:
        stops = list(self.stop_sequence or [])
        if self.singleline and "\n" not in stops:
            stops.append("\n")
        return stops

    def openai(self, model: str) -> dict[str, Any]:
        """OpenAI's completion body (llama-server's names for the extra samplers, an ocak
        ``grammar`` extra for GBNF)."""
        self.refuse_unsupported()
        if not self.full_prompt:
            raise InvalidRequest("The prompt is empty.", param="prompt")
        data: dict[str, Any] = {
            "model": model,
            "prompt": self.full_prompt,
            "max_tokens": self.max_length or DEFAULT_MAX_LENGTH,
            "stream": True,
        }
        for ours, theirs in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("seed", "sampler_seed"),
            ("presence_penalty", "presence_penalty"),
            ("min_p", "min_p"),
            ("repeat_penalty", "rep_pen"),
        ):
            value = getattr(self, theirs)
            if value is not None:
                data[ours] = value
        if self.top_k:  # 0: off, as in KoboldCpp
            data["top_k"] = self.top_k
        if self.rep_pen_range is not None:
            data["repeat_last_n"] = self.rep_pen_range
        if self.sampler_seed is not None and self.sampler_seed < 0:
            data.pop("seed")  # -1: a random seed
        stops = self.stops()
        if stops:
            data["stop"] = stops
        if self.grammar:
            data["grammar"] = self.grammar
        return data


class KoboldKey(BaseModel):
    """``/api/extra/generate/check`` and ``/api/extra/abort``: which generation."""

    model_config = ConfigDict(extra="allow")

    genkey: str | None = Field(None, max_length=200)


class KoboldTokens(BaseModel):
    """``POST /api/extra/tokencount`` (and ``/api/extra/tokenize``)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    model: str | None = None


class KoboldDetokenize(BaseModel):
    """``POST /api/extra/detokenize``."""

    model_config = ConfigDict(extra="allow")

    ids: list[int] = Field(default_factory=list, max_length=1_000_000)
    model: str | None = None
