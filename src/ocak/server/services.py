"""Everything a running server holds, built in one place: ``build_services(settings)``.

HTTP routes and the gRPC servicer read the same ``Services`` (``app.state.ocak``):
the engines, the usage/keys database, the key checker, metrics, the record sinks,
the gateway and the serving layer over them, and the character service. Nothing
is a module global; ``close()`` (at shutdown) closes the engines, the providers'
HTTP client and the databases it opened, checkpointing their WALs into the files, and
sends the last batch of trace spans.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request

from ocak.characters import store as characters_store
from ocak.characters.recordings import Recordings
from ocak.characters.service import CharacterService
from ocak.characters.serving import serving_resolver
from ocak.config import Settings
from ocak.engines.embedding import BUNDLED_EMBEDDER
from ocak.engines.registry import EngineRegistry
from ocak.gateway.service import Gateway, build_gateway
from ocak.protocol.record import Sink
from ocak.server.accounting import Accounting
from ocak.server.auth import Authenticator, keys_required
from ocak.server.content import ContentKeeper
from ocak.server.genkeys import Generations
from ocak.server.limits import SharedLimiter
from ocak.server.metrics import Metrics
from ocak.server.request_log import RequestLog
from ocak.serving.audio import AudioServing, SpeechModels
from ocak.serving.embeddings import Embedders, EmbeddingServing
from ocak.serving.knowledge import KnowledgeServing
from ocak.serving.prompts import PromptServing
from ocak.serving.service import ModelServing
from ocak.serving.tuning import FineTuning
from ocak.store.backend import open_store
from ocak.store.db import Store
from ocak.store.postgres import PostgresDatabase
from ocak.telemetry import Tracing


@dataclass(eq=False)
class Services:
    settings: Settings
    engines: EngineRegistry
    db: Store | None  # the usage/keys store; None: keys off, no usage rows (tests)
    auth: Authenticator
    metrics: Metrics
    gateway: Gateway  # aliases, providers and the router over them and the engines
    serving: ModelServing  # the one entry for model requests
    audio: AudioServing  # and for speech in and out
    embeddings: EmbeddingServing  # and for embeddings
    knowledge: KnowledgeServing  # the knowledge bases (knowledge.db, opened on first use)
    prompts: PromptServing  # the prompt registry (prompts.db, opened on first use)
    tuning: FineTuning  # fine-tuning files and jobs (tuning.db, opened on first use)
    # Called with each request's record before its response ends (usage row, key charge)
    sinks: list[Sink] = field(default_factory=list)
    late_sinks: list[Sink] = field(default_factory=list)  # right after it (metrics, log)
    started: float = field(default_factory=time.time)
    # Work that outlives its request (a pull whose client left): held until it ends.
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    # KoboldCpp's running generations by genkey (check and abort).
    generations: Generations = field(default_factory=Generations)
    owns_db: bool = True  # False: the caller's database, closed by the caller
    # OpenTelemetry traces (off without settings.otlp_endpoint): flushed at close.
    tracing: Tracing = field(default_factory=Tracing)
    _characters: CharacterService | None = None
    _closed: bool = False

    @property
    def characters(self) -> CharacterService:
        """The character service; ``characters.db`` is opened on first use (a server that
        never hosts a character makes no file for them)."""
        if self._characters is None:
            db = characters_store.open_characters_store(self.settings)
            self._characters = CharacterService(
                db,
                serving_resolver(self.serving),
                self.settings.characters,
                max_tokens_cap=self.settings.max_tokens_limit,
                knowledge=self._lore,
                embed=self._embed if self.embeddings.catalog.folders else None,
                recordings=Recordings.in_data_dir(self.settings.data_dir, keep=False),
            )
        return self._characters

    async def _embed(self, texts: list[str]) -> Any:
        """The bundled embedder's vectors, for a character's recall by meaning."""
        return await self.embeddings.vectors(None, BUNDLED_EMBEDDER, texts, part_of=True)

    async def _lore(self, bases: list[str], query: str, k: int) -> list[tuple[str, str]]:
        """A card's knowledge bases searched for a character turn."""
        used = await self.knowledge.lore(bases, query, k)
        return [(f"{u.kb}/{u.hit.source}", u.hit.text) for u in used]

    async def close(self) -> None:
        """Close what was built, inner parts last; each database checkpoints its WAL.
        A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        await self.engines.close_all()
        await self.gateway.close()  # the providers' shared HTTP client
        self.knowledge.close()
        self.prompts.close()
        await self.tuning.close()  # a job in progress stops and is marked failed
        if self._characters is not None:
            self._characters.db.close()
            self._characters = None
        if self.db is not None and self.owns_db:
            self.db.close()
        await asyncio.to_thread(self.tracing.shutdown)  # the last spans (closing ones too)


def build_services(
    settings: Settings,
    engines: EngineRegistry,
    *,
    db: Store | Literal["open"] | None = "open",
    sinks: list[Sink] | None = None,
    gateway: Gateway | None = None,
) -> Services:
    """Build the server's parts from ``settings`` over ``engines`` (not yet loaded).

    ``db="open"`` opens the usage/keys store (``ocak.db`` in ``settings.data_dir``, checkpointed in
    the background); tests pass their own or None. ``sinks`` run before ocak's own
    (accounting). A bad alias or provider reference raises ``ConfigError`` naming its line.
    """
    store = open_store(settings) if db == "open" else db
    if store is not None and db == "open":
        store.checkpoint_in_background()  # keep WAL checkpoints out of usage-record commits
    speech = SpeechModels.bundled(settings)  # their names may be an alias's local targets
    embedders = Embedders.bundled()
    local = [*speech.local_names(), *embedders.local_names()]
    try:
        gw = gateway or build_gateway(settings, engines, speech=local)
    except BaseException:
        if db == "open" and store is not None:
            store.close()
        raise
    # With PostgreSQL, rate windows are counted in the store: shared by every process.
    limiter = SharedLimiter(store) if isinstance(store, PostgresDatabase) else None
    auth = Authenticator(store, required=keys_required(settings), limiter=limiter)
    embeddings = EmbeddingServing(auth, embedders, gw.router)
    knowledge = KnowledgeServing(settings.data_dir, embeddings)
    prompts = PromptServing(settings.data_dir, settings.database_url)
    metrics = Metrics(engines, known=gw.knows)  # aliases are model names too, in labels
    # Requests and answers beside usage rows, only with the operator's consent; redacted of
    # the providers' keys (and every key shape) before they are written.
    keeper = ContentKeeper(store, gw.secrets.scrub) if settings.store_content and store else None
    return Services(
        settings=settings,
        engines=engines,
        db=store,
        auth=auth,
        metrics=metrics,
        gateway=gw,
        serving=ModelServing(settings, auth, engines, gw.router, knowledge, prompts),
        audio=AudioServing(settings, auth, speech, gw.router),
        embeddings=embeddings,
        knowledge=knowledge,
        prompts=prompts,
        tuning=FineTuning(settings),
        sinks=[Accounting(store, auth, keeper), *(sinks or [])],
        late_sinks=[metrics.observe, RequestLog(log_content=settings.log_content)],
        owns_db=db == "open",
        tracing=Tracing.from_settings(settings),
    )


def get_state(request: Request) -> Services:
    state: Services = request.app.state.ocak
    return state
