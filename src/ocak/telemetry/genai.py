"""The OpenTelemetry GenAI semantic-convention attributes ocak's spans carry.

ocak follows the GenAI conventions as they stood when they left the main
semantic-conventions repository (v1.41.0; status Development, now maintained in
open-telemetry/semantic-conventions-genai). Every ``gen_ai.*`` name here is checked by a
test against the registry in ``opentelemetry-semantic-conventions``. No prompt or answer
text is ever put in a span: only names, settings, counts and timings.
"""

from __future__ import annotations

from typing import Any

SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
MAX_TOKENS = "gen_ai.request.max_tokens"
TEMPERATURE = "gen_ai.request.temperature"
TOP_P = "gen_ai.request.top_p"
SEED = "gen_ai.request.seed"
STREAM = "gen_ai.request.stream"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHED_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
CONVERSATION = "gen_ai.conversation.id"
AGENT_ID = "gen_ai.agent.id"
AGENT_NAME = "gen_ai.agent.name"
DATA_SOURCE = "gen_ai.data_source.id"
ERROR_TYPE = "error.type"

# ocak's own attributes (not in the conventions): where a request went and how it ended.
TARGET = "ocak.target"  # the alias target: "local/default", "groq/llama-3.3-70b-versatile"
LOCALITY = "ocak.locality"  # where it ran: local or remote
OUTCOME = "ocak.outcome"  # of a gateway attempt: served, failed, skipped, error, cancelled

GENAI_NAMES = (
    OPERATION, PROVIDER, REQUEST_MODEL, RESPONSE_MODEL, RESPONSE_ID, MAX_TOKENS, TEMPERATURE,
    TOP_P, SEED, STREAM, INPUT_TOKENS, OUTPUT_TOKENS, CACHED_INPUT_TOKENS, FINISH_REASONS,
    TIME_TO_FIRST_CHUNK, CONVERSATION, AGENT_ID, AGENT_NAME, DATA_SOURCE,
)  # fmt: skip


def request_attributes(
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stream: bool | None = None,
) -> dict[str, Any]:
    """A model request's settings, those that are set."""
    values = {
        MAX_TOKENS: max_tokens,
        TEMPERATURE: temperature,
        TOP_P: top_p,
        SEED: seed,
        STREAM: stream,
    }
    return {k: v for k, v in values.items() if v is not None}


def usage_attributes(
    input_tokens: int, output_tokens: int, finish_reason: str | None, cached: int = 0
) -> dict[str, Any]:
    """What a finished generation used, and why it stopped."""
    found: dict[str, Any] = {INPUT_TOKENS: input_tokens, OUTPUT_TOKENS: output_tokens}
    if cached:
        found[CACHED_INPUT_TOKENS] = cached
    if finish_reason:
        found[FINISH_REASONS] = (finish_reason,)
    return found
