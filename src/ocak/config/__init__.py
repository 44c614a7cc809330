"""Server settings: defaults < YAML file < ``OCAK_*`` environment < CLI flags.

Every field is described and bounded so that the CLI, the environment and the
YAML file share one validation, and a bad value names its field.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ocak.config.durations import Period
from ocak.config.gateway import AliasConfig, ProviderConfig, RoutingConfig
from ocak.errors import InvalidRequest

# A field path in the settings file ("models", "assistant", "targets", 0) -> its line.
Lines = dict[tuple[str | int, ...], int]


def default_data_dir() -> Path:
    """Where ocak keeps its store (models, SQLite): ``$XDG_DATA_HOME/ocak``.

    Without ``XDG_DATA_HOME``: ``~/.local/share/ocak`` on Linux,
    ``~/Library/Application Support/ocak`` on macOS, ``%LOCALAPPDATA%\\ocak`` on Windows.
    """
    base = os.environ.get("XDG_DATA_HOME")
    if not base and sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif not base and sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    return Path(base or Path.home() / ".local" / "share") / "ocak"


class ConfigError(InvalidRequest):
    """A settings file or value that does not validate; the message names the field."""


class CharacterSettings(BaseSettings):
    """The character engine's knobs: ``characters:`` in the YAML, ``OCAK_CHARACTERS_*`` in
    the environment."""

    model_config = SettingsConfigDict(env_prefix="OCAK_CHARACTERS_", extra="ignore")

    history_budget: int = Field(
        600,
        ge=50,
        le=100_000,
        description="Tokens of verbatim history a character keeps in its prompt; past it, "
        "older turns are summarized into its memory.",
    )
    summary_tokens: int = Field(160, ge=16, le=2048, description="Longest summary, in tokens.")
    recall_limit: int = Field(3, ge=0, le=20, description="Memories recalled into each prompt.")
    knowledge_chunks: int = Field(
        2, ge=0, le=10, description="Chunks of a card's knowledge bases put into each prompt."
    )
    lore_budget: int = Field(
        512, ge=0, le=8192, description="Most lorebook tokens per turn (cards may ask for less)."
    )


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_keep_alive(value: Any) -> float | None:
    """A keep-alive: seconds, or ``30s``/``5m``/``1h30m``; ``-1`` (any negative) for ever
    (None); ``0`` at once. Ollama's spelling."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        return None if value < 0 else float(value)
    text = str(value).strip().lower()
    try:
        number = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not text or match is None:
            raise ValueError(
                f"'{value}' is not a duration: use seconds, 30s, 5m, 1h30m, 0 or -1"
            ) from None
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    return None if number < 0 else number


def parse_size(value: Any) -> int | None:
    """``512MiB``, ``4G``, ``1.5GiB`` or plain bytes."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"'{value}' is not a size: use bytes, 512MiB, 4GiB")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


KeepAlive = Annotated[float | None, BeforeValidator(parse_keep_alive)]
Size = Annotated[int | None, BeforeValidator(parse_size)]


def parse_headers(value: Any) -> Any:
    """HTTP headers as ``name=value,name2=value2`` (OTEL_EXPORTER_OTLP_HEADERS' spelling,
    values percent-decoded) or a JSON object; a mapping as it is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)  # a ValueError names the field
    found: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, item = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"'{part.strip()}' is not name=value (headers: a=1,b=2 or JSON)")
        found[name.strip()] = urllib.parse.unquote(item.strip())
    return found


Headers = Annotated[dict[str, str], NoDecode, BeforeValidator(parse_headers)]


class ModelOptions(BaseModel):
    """Settings of one model, by its id (``model_options`` in the YAML)."""

    model_config = ConfigDict(extra="forbid")

    keep_alive: KeepAlive = Field(
        None, description="Idle time before it is unloaded (default: keep_alive)."
    )


SamplerName = Literal["temperature", "top_p", "top_k", "min_p", "repeat_penalty"]
# llama-server's defaults: what a local model samples with when nothing else says
SERVER_SAMPLING: dict[SamplerName, float] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
}


class Settings(BaseSettings):
    """Settings of one ocak server process."""

    model_config = SettingsConfigDict(env_prefix="OCAK_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    grpc_port: int | None = Field(
        None, ge=0, le=65535, description="gRPC port on the same host (default: no gRPC)."
    )
    model: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["default"],
        description="Models to serve: 'default', a GGUF path, a store name, or NAME=PATH.",
    )
    ctx_size: int = Field(
        2048, ge=64, le=1_048_576, description="Context window per request, in tokens."
    )
    parallel: int = Field(8, ge=1, le=256, description="Sequences decoded together.")
    sampling_defaults: dict[SamplerName, float] = Field(
        default_factory=lambda: dict(SERVER_SAMPLING),
        description="Samplers for local models where neither the client, the alias nor the "
        "model sets them (llama-server's defaults; docs/sampling.md).",
    )
    local_max_tokens: int | None = Field(
        512,
        ge=1,
        description="max_tokens for a local model when the request sets none (a small model "
        "left unbounded can ramble to the end of its context); unset: the context's end.",
    )
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads (default: all).")
    max_queue: int = Field(
        64, ge=0, le=100_000, description="Requests that may wait for a free sequence."
    )
    queue_timeout: float = Field(
        120.0, gt=0, description="Seconds a request may wait in the queue before 503."
    )
    prefill_chunk: int = Field(
        128,
        ge=16,
        le=4096,
        description="Prompt tokens per prefill chunk (and the unit of prefix reuse).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where CTranslate2 models run: auto (a working CUDA GPU, else the CPU; "
        "a GPU that cannot run is refused, not skipped), cpu or cuda.",
    )
    ct2_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="CTranslate2 batches run at once (the threads are split); one by "
        "default, see bench/ct2.py for the measurement.",
    )
    ct2_batching: Literal["exact", "similar"] = Field(
        "exact",
        description="CTranslate2 batches: exact (equal prompt lengths, greedy answers as "
        "alone) or similar (close lengths, more throughput).",
    )
    max_memory: Size = Field(
        None,
        description="Memory the loaded models may use (weights and KV cache, estimated "
        "before loading); idle models are unloaded to make room (default: no budget).",
    )
    max_vram: Size = Field(
        None,
        description="GPU memory the loaded models on a GPU may use, budgeted like "
        "max_memory (default: no budget).",
    )
    keep_alive: KeepAlive = Field(
        300.0,
        description="Idle time before a model is unloaded: seconds or 30s/5m/1h, -1 for "
        "never, 0 at once (a request's own keep_alive wins).",
    )
    model_options: dict[str, ModelOptions] = Field(
        default_factory=dict, description="Per-model settings by id (keep_alive)."
    )
    priority: Literal["normal", "low"] = Field(
        "normal",
        description="CPU scheduling priority of the server: low lets a game beside it "
        "keep the CPU it needs.",
    )
    data_dir: Path = Field(default_factory=default_data_dir, description="ocak's data folder.")
    hf_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The Hugging Face Hub (or a mirror) `models pull` uses; default: "
        "HF_ENDPOINT, else https://huggingface.co.",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    # Keys, limits, logs and bad input (issue 6).
    allow_no_keys: bool = Field(
        False, description="Serve without API keys even when listening beyond loopback."
    )
    metrics_public: bool = Field(False, description="Serve /metrics without an API key.")
    log_content: bool = Field(
        False, description="Put prompts and completions in the request log lines."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=1 << 30, description="Largest request body (413 above)."
    )
    # Datasets from traffic (issue 20): chat requests and answers kept, with consent.
    store_content: bool = Field(
        False,
        description="Store each completed chat request's messages and its answer in ocak.db "
        "beside its usage row (keys and secrets redacted), for `ocak usage export`; off: "
        "usage rows carry no content.",
    )
    content_retention: Period = Field(
        30 * 86400.0,
        gt=0,
        le=10 * 366 * 86400,
        description="How long stored content is kept: 90m, 12h, 30d, 2w or seconds; older "
        "content is deleted at start and hourly.",
    )
    # Traces (issue 20): OpenTelemetry spans over OTLP/HTTP, only when an endpoint is set.
    otlp_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="OTLP/HTTP receiver for traces (an OpenTelemetry Collector, Jaeger: "
        "http://localhost:4318; /v1/traces is added unless given). Unset: no tracing. "
        "OTEL_EXPORTER_OTLP_ENDPOINT is not read: exporting is ocak's own setting.",
    )
    otlp_headers: Headers = Field(
        default_factory=dict,
        repr=False,
        description="Headers sent with each trace export (a hosted backend's key): "
        "name=value,name2=value2 or a JSON object. Never logged, never in a span.",
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded (0-1); a request whose caller sent a "
        "traceparent follows the caller's sampling decision.",
    )
    service_name: str = Field(
        "ocak", min_length=1, max_length=200, description="service.name of this server's spans."
    )
    max_messages: int = Field(
        1024, ge=1, le=1_000_000, description="Most messages one chat request may carry."
    )
    max_tokens_limit: int | None = Field(
        None,
        ge=1,
        le=1_048_576,
        description="Largest max_tokens a request may ask for, and the default when it "
        "asks for none (default: no cap but the context window).",
    )
    max_audio_bytes: int = Field(
        25 * 2**20,
        ge=1024,
        le=2**31,
        description="Largest audio file a transcription request may upload (OpenAI's: 25 MiB).",
    )
    max_document_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        le=2**31,
        description="Largest upload of documents into a knowledge base in one request.",
    )
    max_tuning_file_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        le=512 * 2**20,
        description="Largest fine-tuning training file (POST /v1/files).",
    )
    database_url: str | None = Field(
        None,
        pattern=r"^postgres(ql)?://",
        description="PostgreSQL for keys and usage records (postgresql://USER:PASSWORD@HOST:"
        "PORT/DB), shared by several ocak processes; unset: ocak.db in the data folder.",
    )
    tuning_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads a fine-tuning job trains with (default: half the cores), "
        "at low priority, so chat requests keep theirs.",
    )
    keep_recordings: bool = Field(
        False,
        description="Keep players' recordings (WAV, in the data folder's recordings/, deleted "
        "with their session). Off: a recording is transcribed and dropped.",
    )
    max_live_seconds: int = Field(
        60,
        ge=5,
        le=600,
        description="Longest line a live voice conversation hears before it ends the line.",
    )
    shutdown_timeout: int = Field(
        30, ge=0, le=3600, description="Seconds streams in flight may finish after SIGTERM."
    )
    # Web safety (issue 14): which Host names and browser origins are answered; TLS.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names this server answers besides loopback ones (DNS rebinding "
        "guard); '*.example.com' wildcards, '*' for any.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (scheme://host:port) whose pages may call this server, "
        "besides loopback origins and its own; wildcards as for allowed_hosts.",
    )
    tls_cert: Path | None = Field(None, description="TLS certificate (PEM): serve HTTPS.")
    tls_key: Path | None = Field(None, description="TLS private key (PEM) for tls_cert.")
    characters: CharacterSettings = Field(
        default_factory=CharacterSettings,
        description="The character engine: history budget, summaries, recall, lore.",
    )
    # The gateway (issue 5): upstream APIs, public model names, routing knobs.
    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict, description="Upstream APIs by name (keys come from env vars)."
    )
    models: dict[str, AliasConfig] = Field(
        default_factory=dict, description="Public model names (aliases) and their targets."
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig, description="Retries, backoff, circuit breaker."
    )
    # Where the settings file was read from, and the line of each field in it.
    _source: Path | None = PrivateAttr(None)
    _lines: Lines = PrivateAttr(default_factory=dict)

    @field_validator("model", "allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_lists(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file not found: {path}")
        return self

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Settings:
        """Settings from an optional YAML file, the environment and explicit overrides."""
        file_values: dict[str, Any] = read_yaml(path) if path else {}
        lines = yaml_lines(path) if path else {}
        env_values = _from_environment(cls, "OCAK_*")
        merged = {**file_values, **env_values}
        if isinstance(file_values.get("characters"), dict):  # OCAK_CHARACTERS_* over the file's
            env_characters = _from_environment(CharacterSettings, "OCAK_CHARACTERS_*")
            merged["characters"] = {**file_values["characters"], **env_characters}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls(**merged)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, path, lines)) from exc
        settings._source, settings._lines = path, lines
        return settings

    def config_error(self, loc: tuple[str | int, ...], message: str) -> ConfigError:
        """A problem found after validation (a reference to nothing), with its line."""
        return ConfigError(_located(loc, message, self._source, self._lines))


def _from_environment(kind: type[BaseSettings], variables: str) -> dict[str, Any]:
    """The values ``kind`` reads from its environment variables; a bad one is a ConfigError."""
    try:
        return kind().model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ConfigError(
            f"in the environment ({variables} variables): " + describe_validation_error(exc, None)
        ) from exc


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with the line of a syntax error in the message."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return data


def yaml_lines(path: Path) -> Lines:
    """The line (1-based) of every mapping key and list item of a YAML file."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}  # read_yaml has said what is wrong
    lines: Lines = {}

    def walk(node: yaml.Node, at: tuple[str | int, ...]) -> None:
        lines[at] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*at, str(key.value))
                walk(value, child)
                lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*at, i))

    if root is not None:
        walk(root, ())
    return lines


def _located(
    loc: tuple[str | int, ...], message: str, path: Path | None, lines: Lines | None
) -> str:
    """``ocak.yaml:7: models.assistant.targets.0.provider: message``."""
    line = None
    for n in range(len(loc), 0, -1):  # the field, or its nearest parent in the file
        line = (lines or {}).get(loc[:n])
        if line is not None:
            break
    where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    return f"{where}{dotted}: {message}"


def describe_validation_error(
    exc: ValidationError, path: Path | None, lines: Lines | None = None
) -> str:
    """One line per problem, each naming the field path (and its line, when known)."""
    problems = []
    for err in exc.errors():
        # pydantic names union members and validators in the location; the file does not
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        problems.append(_located(loc, err["msg"], path, lines))
    return "; ".join(problems)
