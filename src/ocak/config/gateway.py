"""The gateway's part of the settings file: ``providers``, ``models`` (aliases), ``routing``.

Pydantic models only (no network, no httpx), validated with the rest of the
settings, so a bad value names its field path and line. References between
sections (a target's provider, a local model id) are checked when the gateway is
built (``ocak.gateway.build``), where the served engines are known.

    providers:
      groq: {type: openai, preset: groq, api_key_env: GROQ_API_KEY}
    models:
      assistant:
        targets:
          - {provider: groq, model: llama-3.3-70b-versatile, params: {temperature: 0.3}}
          - {local: default}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ocak.config.presets import PRESETS

REPLICATE_URL = "https://api.replicate.com/v1"
REPLICATE_KEY_ENV = "REPLICATE_API_TOKEN"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Seconds. ``first_token``: until a stream's first chunk (and, for a stream, the
    longest silence between chunks); ``total``: the whole answer."""

    connect: float = Field(5.0, gt=0, le=600, description="Opening the connection.")
    first_token: float = Field(
        60.0, gt=0, le=3600, description="Until the first chunk of a stream."
    )
    total: float = Field(600.0, gt=0, le=86_400, description="The whole answer.")

    def over(self, other: Timeouts | None) -> Timeouts:
        """These timeouts, with the fields ``other`` sets taking precedence."""
        if other is None:
            return self
        return self.model_copy(update={k: getattr(other, k) for k in other.model_fields_set})


class ProviderConfig(_Strict):
    """One upstream API: OpenAI-compatible (with a preset) or Replicate."""

    type: Literal["openai", "replicate"]
    preset: str | None = Field(None, description="groq, openai, deepinfra, ... (type openai).")
    base_url: str | None = Field(None, description="Overrides the preset's base URL.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (never the key itself)."
    )
    local: bool = Field(False, description="The operator vouches this provider runs locally.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers (no secrets: they are logged "
        "nowhere, but the file is not a secret store).",
    )
    timeouts: Timeouts | None = None
    health_path: str | None = Field(
        None,
        pattern=r"^/",
        description="Polled on the base URL's host to know the upstream is up (default: "
        "/health for the ocak and vllm presets, none for hosted APIs).",
    )
    health_interval: float = Field(2.0, ge=0.2, le=3600, description="Seconds between polls.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return None if v is None else v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or not all(c.isalnum() or c == "_" for c in v)):
            raise ValueError(
                "api_key_env is the *name* of an environment variable (letters, digits, _), "
                "not a key"
            )
        return v

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset '{v}' (known: {', '.join(PRESETS)})")
        return v

    @model_validator(mode="after")
    def _preset(self) -> ProviderConfig:
        if self.type == "openai":
            if self.preset is None and self.base_url is None:
                raise ValueError("a provider of type openai needs a preset or a base_url")
        elif self.preset is not None:
            raise ValueError("preset applies to type openai only")
        return self

    @property
    def url(self) -> str:
        if self.base_url is not None:
            return self.base_url
        if self.type == "replicate":
            return REPLICATE_URL
        preset = PRESETS[self.preset or ""]
        assert preset.base_url is not None
        return preset.base_url

    @property
    def health(self) -> str | None:
        """The health path to poll, if any."""
        if self.health_path is not None:
            return self.health_path
        return PRESETS[self.preset].health_path if self.preset else None

    @property
    def key_env(self) -> str | None:
        if self.api_key_env is not None:
            return self.api_key_env
        if self.type == "replicate":
            return REPLICATE_KEY_ENV
        return PRESETS[self.preset].api_key_env if self.preset else None


class TargetConfig(_Strict):
    """Where an alias may be served: ``{local: ID}`` or ``{provider: NAME, model: M}``."""

    local: str | None = Field(
        None,
        description="A local model id this server serves; with LoRA adapters from the "
        "store: ID@ADAPTER or ID@ADAPTER:SCALE.",
    )
    provider: str | None = Field(None, description="A provider named under providers.")
    model: str | None = Field(None, description="The provider's model name.")
    weight: float = Field(1.0, gt=0, le=1e6, description="Share among targets of equal rank.")
    rank: int | None = Field(
        None, ge=0, description="Lower ranks are tried first (default: the position)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Request parameters used when the client sets none."
    )
    timeouts: Timeouts | None = None
    retries: int | None = Field(None, ge=0, le=10, description="Overrides routing.retries.")

    @model_validator(mode="after")
    def _one_kind(self) -> TargetConfig:
        if self.local is not None:
            if self.provider is not None or self.model is not None:
                raise ValueError("a target is either {local: ID} or {provider: P, model: M}")
        elif self.provider is None or self.model is None:
            raise ValueError("a target needs local: ID, or both provider and model")
        if "model" in self.params or "stream" in self.params:
            raise ValueError("params cannot set model or stream")
        return self


class AliasConfig(_Strict):
    """A public model name and the targets that may serve it, in order."""

    targets: list[TargetConfig] = Field(min_length=1)
    locality: Literal["local"] | None = Field(
        None, description="local: served on this machine only, or not at all."
    )
    description: str | None = None
    knowledge: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Knowledge bases whose best chunks go into every chat request's prompt.",
    )
    balance: Literal["random", "least-busy"] = Field(
        "random",
        description="Among targets of one rank: weighted random, or the least busy replica "
        "first (its health's queue depth plus the requests sent since).",
    )
    affinity: Literal["session"] | None = Field(
        None,
        description="session: requests of one session (x-ocak-session, or the body's user) "
        "go to the same replica while it is up, where its prompt's KV cache is.",
    )


class RoutingConfig(_Strict):
    """How the router retries, backs off and cools failing targets down."""

    retries: int = Field(1, ge=0, le=10, description="Retries of one target before the next.")
    backoff: float = Field(0.25, ge=0, le=60, description="First retry delay (doubles).")
    backoff_max: float = Field(4.0, ge=0, le=600, description="Longest retry delay.")
    retry_after_max: float = Field(
        10.0, ge=0, le=3600, description="Longest Retry-After waited for; longer: next target."
    )
    breaker_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Requests in a row that failed on a target (retries included) before "
        "its breaker opens.",
    )
    breaker_cooldown: float = Field(
        30.0, gt=0, le=86_400, description="Seconds a broken target is skipped before a probe."
    )
    locality_ttl: float = Field(
        30.0, gt=0, le=86_400, description="Seconds a verified-local upstream stays verified."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
