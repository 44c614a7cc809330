"""OpenAI's embeddings request and answer (``POST /v1/embeddings``)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from ocak.errors import InvalidRequest

MAX_INPUTS = 2048  # OpenAI's limit of inputs in one request

Tokens = list[Annotated[int, Field(ge=0)]]


class EmbeddingRequest(BaseModel):
    """``input`` is a text, a list of texts, a token array or a list of token arrays
    (token ids of the model's own tokenizer, as ``/tokenize`` gives them)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | Tokens | list[Tokens]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list of texts or of token arrays; none, or too many, is a 400."""
        value = self.input
        if isinstance(value, str):
            found: list[Any] = [value]
        elif value and all(isinstance(x, int) for x in value):
            found = [list(value)]
        else:
            found = list(value)
        if not found:
            raise InvalidRequest("input must hold at least one text.", param="input")
        if len(found) > MAX_INPUTS:
            raise InvalidRequest(
                f"input holds {len(found)} items; at most {MAX_INPUTS} per request.",
                param="input",
            )
        return found


def embedding_list(
    vectors: NDArray[np.float32], model: str, tokens: int, encoding: str
) -> dict[str, Any]:
    """OpenAI's answer: one ``embedding`` per input, floats or base64 of little-endian
    float32 (what the openai SDK asks for and decodes)."""
    data = []
    for i, row in enumerate(vectors):
        value: Any = (
            base64.b64encode(row.astype("<f4").tobytes()).decode()
            if encoding == "base64"
            else row.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
