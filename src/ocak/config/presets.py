"""What ocak knows about OpenAI-compatible APIs: base URLs, key variables, quirks.

A preset is data (the config validates preset names against this table); the
OpenAI-compatible provider's ``translate`` applies its quirks to a request body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]
Locality = Literal["remote", "verify"]


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    base_url: str | None
    # The environment variable read when the config names none; None: no key by default.
    api_key_env: str | None
    # How this API wants the completion limit spelt; None: it accepts both.
    max_tokens_param: MaxTokensParam | None = None
    # Fields removed from every message (Groq refuses ``name``).
    drop_message_fields: frozenset[str] = frozenset()
    # "verify": a loopback address may be local, if the server proves it (another ocak).
    # "remote": never local unless the operator says ``local: true``.
    locality: Locality = "remote"
    quirks: str = ""
    # Polled to know whether a replica is up (and, for ocak, how busy): None for hosted APIs.
    health_path: str | None = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "groq",
            "https://api.groq.com/openai/v1",
            "GROQ_API_KEY",
            max_tokens_param="max_completion_tokens",
            drop_message_fields=frozenset({"name"}),
            quirks="refuses the `name` field of messages (dropped); `max_tokens` sent as "
            "`max_completion_tokens`",
        ),
        Preset(
            "openai",
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
            max_tokens_param="max_completion_tokens",
            quirks="`max_tokens` is deprecated and refused by reasoning models: sent as "
            "`max_completion_tokens`",
        ),
        Preset(
            "deepinfra",
            "https://api.deepinfra.com/v1/openai",
            "DEEPINFRA_TOKEN",
            max_tokens_param="max_tokens",
            quirks="`max_completion_tokens` sent as `max_tokens`",
        ),
        Preset(
            "together",
            "https://api.together.xyz/v1",
            "TOGETHER_API_KEY",
            max_tokens_param="max_tokens",
            quirks="`max_completion_tokens` sent as `max_tokens`",
        ),
        Preset(
            "openrouter",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
            max_tokens_param="max_tokens",
            quirks="`max_completion_tokens` sent as `max_tokens`; its SSE keep-alive "
            "comments are not forwarded",
        ),
        Preset(
            "ollama",
            "http://127.0.0.1:11434/v1",
            None,
            max_tokens_param="max_tokens",
            quirks="`max_completion_tokens` sent as `max_tokens`; on loopback but never "
            "local by itself (it can forward to Ollama's cloud models): say `local: true` "
            "if you vouch for it",
        ),
        Preset(
            "vllm",
            "http://127.0.0.1:8000/v1",
            None,
            quirks="takes both token limits; not local unless `local: true`",
            health_path="/health",
        ),
        Preset(
            "lmstudio",
            "http://127.0.0.1:1234/v1",
            None,
            max_tokens_param="max_tokens",
            quirks="`max_completion_tokens` sent as `max_tokens`; not local unless `local: true`",
        ),
        Preset(
            "ocak",
            "http://127.0.0.1:8000/v1",
            None,
            locality="verify",
            quirks="takes both token limits; on a loopback address it is local when it "
            "answers `x-ocak-locality: local` (checked before each local-only request)",
            health_path="/health",
        ),
    )
}

GENERIC = Preset("generic", None, None)
