"""Knowledge bases through the serving layer: imports, searches, and the retrieval that puts
the best chunks into a chat request's prompt.

Each knowledge base keeps the embedding model its vectors came from; its queries are
embedded by the same model, locally (``EmbeddingServing.vectors``), so a search never
sends a query off the machine. The store (``knowledge/``) is one SQLite file,
``knowledge.db`` in the data folder, opened on first use (a server that never has a
knowledge base makes no file).

Retrieval for a chat (``"knowledge": ["lore"]`` in the request, or an alias's
``knowledge``): the last user message is the query; the chunks found are put in that
message, before the question, so everything ahead of it (system prompt, earlier turns) is
the prompt the cache already holds. Each chunk is numbered by rank with its source, so the
model can cite it, and the best one comes last, next to the question: small models lean
on what they read last (measured with the 135M default: with the best chunk first, or in
a system message, it answered from the wrong excerpt or none). The response names them.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocak import telemetry
from ocak.engines.embedding import BUNDLED_EMBEDDER
from ocak.errors import InvalidRequest
from ocak.knowledge.store import AddResult, DocInfo, Hit, KbInfo, KnowledgeStore, SearchMode
from ocak.protocol.openai import ChatCompletionRequest
from ocak.serving.context import CallContext
from ocak.serving.embeddings import EmbeddingServing
from ocak.telemetry import genai

KNOWLEDGE = "x-ocak-knowledge"  # the response header naming the chunks a prompt held
DEFAULT_K = 4
MAX_K = 20
MAX_KBS = 8  # knowledge bases one request may name


@dataclass(frozen=True, slots=True)
class Used:
    """A chunk put into a prompt, as the response names it."""

    kb: str
    hit: Hit

    def to_dict(self) -> dict[str, Any]:
        h = self.hit
        out: dict[str, Any] = {
            "kb": self.kb,
            "source": h.source,
            "chunk": h.chunk_id,
            "heading": h.heading,
            "start": h.start,
            "end": h.end,
            "score": round(h.score, 6),
        }
        if h.page is not None:
            out["page"] = h.page
        return out


@dataclass(frozen=True, slots=True)
class Retrieval:
    """What a request asks to retrieve: from which bases, how many chunks."""

    bases: list[str]
    k: int = DEFAULT_K

    @classmethod
    def parse(cls, value: Any) -> Retrieval:
        """``["lore", ...]`` or ``{"bases": [...], "k": 4}``; anything else is a 400."""
        if isinstance(value, list):
            value = {"bases": value}
        if not isinstance(value, dict):
            raise InvalidRequest(
                "knowledge is a list of knowledge base names, or {'bases': [...], 'k': N}.",
                param="knowledge",
            )
        bases, k = value.get("bases"), value.get("k", DEFAULT_K)
        if (
            not isinstance(bases, list)
            or not bases
            or len(bases) > MAX_KBS
            or not all(isinstance(b, str) and b for b in bases)
        ):
            raise InvalidRequest(
                f"knowledge names 1 to {MAX_KBS} knowledge bases by name.", param="knowledge"
            )
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise InvalidRequest(f"knowledge.k is 1 to {MAX_K}.", param="knowledge.k")
        return cls(list(dict.fromkeys(bases)), k)


class KnowledgeServing:
    """The knowledge bases' one entry (see the module doc)."""

    def __init__(self, data_dir: Path, embeddings: EmbeddingServing) -> None:
        self.path = data_dir / "knowledge.db"
        self.embeddings = embeddings
        self._store: KnowledgeStore | None = None
        self._opening = threading.Lock()

    @property
    def store(self) -> KnowledgeStore:
        with self._opening:
            if self._store is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._store = KnowledgeStore(self.path)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- bases and documents -----------------------------------------------------------

    async def create(self, name: str, model: str = BUNDLED_EMBEDDER) -> KbInfo:
        """A new, empty knowledge base whose vectors ``model`` makes (loaded to know its
        dimensions)."""
        local = self.embeddings.catalog.resolve(model)
        embedder = await self.embeddings.catalog.get(local)
        return await asyncio.to_thread(self.store.create, name, local, embedder.dimensions)

    async def bases(self) -> list[KbInfo]:
        return await asyncio.to_thread(self.store.list)

    async def info(self, name: str) -> tuple[KbInfo, list[DocInfo]]:
        info = await asyncio.to_thread(self.store.info, name)
        return info, await asyncio.to_thread(self.store.documents, name)

    async def remove(self, name: str) -> None:
        await asyncio.to_thread(self.store.remove, name)

    async def remove_document(self, name: str, source: str) -> bool:
        return await asyncio.to_thread(self.store.remove_document, name, source)

    async def add(self, ctx: CallContext, name: str, source: str, data: bytes) -> AddResult:
        """Import one document (re-embedding only what changed); its tokens count on the
        request's record. One document is one transaction: a failure changes nothing."""
        info = await asyncio.to_thread(self.store.info, name)
        embedder = await self.embeddings.catalog.get(self.embeddings.catalog.resolve(info.model))
        ctx.record.model, ctx.record.locality = info.model, "local"
        ctx.record.backend = f"embed:{info.model}"

        def embed(texts: list[str]) -> Any:
            ids = embedder.ids_for(texts, truncate=True)
            ctx.record.prompt_tokens += sum(len(x) for x in ids)
            return embedder.embed(ids)

        return await asyncio.to_thread(self.store.add, name, source, data, embed)

    # -- search and retrieval ----------------------------------------------------------

    async def search(
        self,
        ctx: CallContext | None,
        name: str,
        query: str,
        k: int = 5,
        mode: SearchMode = "hybrid",
        *,
        part_of: bool = False,
    ) -> list[Hit]:
        """The ``k`` best chunks of ``name`` for ``query``, the query embedded locally by
        the base's own model (``part_of``: for another request, as its step)."""
        if not query.strip():
            raise InvalidRequest("The search query is empty.", param="query")
        info = await asyncio.to_thread(self.store.info, name)
        vector = None
        if mode != "keyword":
            found = await self.embeddings.vectors(ctx, info.model, [query], part_of=part_of)
            vector = found[0]
        return await asyncio.to_thread(self.store.search, name, query, vector, k, mode)

    async def retrieve(self, ctx: CallContext | None, asked: Retrieval, query: str) -> list[Used]:
        """The ``k`` best chunks over the named bases (each searched hybrid; merged by
        their fused scores)."""
        found: list[Used] = []
        for name in asked.bases:
            hits = await self.search(ctx, name, query, asked.k, part_of=True)
            found += [Used(name, h) for h in hits]
        found.sort(key=lambda u: u.hit.score, reverse=True)
        return found[: asked.k]

    async def lore(self, bases: list[str], query: str, k: int) -> list[Used]:
        """For a character's turn (its card's ``knowledge_bases``): the best chunks for
        what the player said, as a step of the turn (no record of its own)."""
        if not query.strip() or k <= 0:
            return []
        return await self.retrieve(None, Retrieval(list(dict.fromkeys(bases)), k), query)

    async def augment(
        self, ctx: CallContext, body: ChatCompletionRequest, asked: Retrieval
    ) -> tuple[ChatCompletionRequest, list[Used]]:
        """``body`` with the retrieved chunks in a system message before its last user
        message (see the module doc); the request's ``knowledge`` field is dropped."""
        last = _last_user(body)
        data = body.model_dump(exclude_unset=True)
        data.pop("knowledge", None)
        if last is None:
            return type(body).model_validate(data), []
        question = body.messages[last].text(last)
        attributes = {genai.OPERATION: "retrieval", genai.DATA_SOURCE: ",".join(asked.bases)}
        with telemetry.span("retrieval knowledge", attributes) as span:
            used = await self.retrieve(ctx, asked, question)
            if span is not None:
                span.set_attribute("ocak.chunks", len(used))
        if used:
            message = dict(data["messages"][last])
            message["content"] = f"{context_message(used)}\n\n{question}"
            data["messages"][last] = message
        return type(body).model_validate(data), used


def _last_user(body: ChatCompletionRequest) -> int | None:
    for i in range(len(body.messages) - 1, -1, -1):
        if body.messages[i].role == "user" and body.messages[i].text(i).strip():
            return i
    return None


def context_message(used: list[Used]) -> str:
    """The chunks as the model reads them: numbered by rank, each with its source, the
    best last (see the module doc)."""
    parts = []
    for n, u in reversed(list(enumerate(used, 1))):
        where = u.hit.source + (f", page {u.hit.page}" if u.hit.page is not None else "")
        heading = f" ({u.hit.heading})" if u.hit.heading else ""
        parts.append(f"[{n}] {where}{heading}:\n{u.hit.text.strip()}")
    return "Excerpts that may help (cite them by number):\n" + "\n\n".join(parts)
