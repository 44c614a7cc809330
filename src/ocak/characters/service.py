"""The character engine: sessions and turns over the store and the serving models.

A turn is one async stream of ``TurnEvent``s (the HTTP route sends it as SSE
or collects it into JSON, the same path either way):

    Speaking          the speaker is chosen and its model has accepted the request
    TextPiece ...     speakable text as it is generated (stage directions removed)
    Reset             the attempt was invalid; discard the text, a retry follows
    Generated ...     usage of each model call (for usage records)
    TurnDone          the packet, after the exchange has been committed

Turns of one session run one at a time (a per-session lock). The exchange (the
input line and the packet) is committed before ``TurnDone`` is yielded, so an
acknowledged turn is never lost; a turn that fails or is abandoned stores
nothing.

A traced turn is an ``invoke_agent {character}`` span, with its steps as children:
``retrieval knowledge`` / ``retrieval memories``, ``summary`` (older turns folded into
memory), and one ``packet`` per attempt at the answer, each holding its model call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ocak import telemetry
from ocak.characters import prompt as P
from ocak.characters import store
from ocak.characters.api import (
    ActionOut,
    EmotionOut,
    Recorded,
    RelationshipOut,
    SessionOut,
    TurnOut,
    TurnUsage,
    TurnView,
)
from ocak.characters.cards import Character
from ocak.characters.directions import StageFilter, TextFieldStream, split_directions
from ocak.characters.events import (
    Feeling,
    Generated,
    Reset,
    Speaking,
    TextComplete,
    TextPiece,
    TurnDone,
    TurnEvent,
    TurnInput,
)
from ocak.characters.lorebook import ActiveLore
from ocak.characters.memory import fold, prompt_parts
from ocak.characters.packet import (
    STRENGTH_MAX,
    NoValidPacket,
    PacketError,
    ParsedPacket,
    narration_max,
    packet_token_bound,
    parse_packet,
    wire_schema,
)
from ocak.characters.recordings import Recordings
from ocak.characters.serving import ModelResolver, ServingModel
from ocak.characters.turns import choose_speaker
from ocak.config import CharacterSettings
from ocak.errors import ContextLengthExceeded, InvalidRequest, NotFound, OcakError
from ocak.protocol.generation import (
    Constraint,
    Finished,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
)
from ocak.store.db import Store
from ocak.telemetry import genai

ATTEMPTS = 2  # one try and one retry
log = logging.getLogger("ocak.characters")


# The packet's emotion as soon as it is written (a voiced turn speaks its later sentences
# with it). Quotes inside the text field are escaped, so this cannot match there.
_EMOTION = re.compile(
    r'"emotion"\s*:\s*\{\s*"label"\s*:\s*"(\w+)"\s*,\s*"strength"\s*:\s*(\d+)\s*[,}]'
)


@dataclass(slots=True)
class _Attempt:
    raw: list[str] = field(default_factory=list)
    streamed: list[str] = field(default_factory=list)
    finished: Finished | None = None
    felt: bool = False

    def feeling(self) -> Feeling | None:
        """The emotion, the first time the raw packet shows it whole."""
        if self.felt:
            return None
        found = _EMOTION.search("".join(self.raw))
        if found is None:
            return None
        self.felt = True
        return Feeling(found[1], min(int(found[2]), STRENGTH_MAX) / STRENGTH_MAX)


def _lines(inp: TurnInput, addressed: str | None, player: str) -> list[store.NewTurn]:
    out = []
    if inp.event:
        out.append(store.NewTurn("event", inp.event, memory=f"Event: {inp.event}"))
    if inp.text:
        out.append(
            store.NewTurn("player", inp.text, addressed=addressed, memory=f"{player}: {inp.text}")
        )
    return out


# (knowledge bases, what the player said, how many chunks) -> chunks as (source, text)
LoreSearch = Callable[[list[str], str, int], Awaitable[list[tuple[str, str]]]]
# texts -> their unit vectors, one row each (the bundled embedder)
Embed = Callable[[list[str]], Awaitable[NDArray[np.float32]]]
MEANING_POOL = 2000  # newest memories of one character and player ranked by meaning
MEANING_TOP = 50
VECTOR_CACHE = 50_000  # memories' vectors kept in this process (never written to disk)


class CharacterService:
    def __init__(
        self,
        db: Store,
        resolve: ModelResolver,
        settings: CharacterSettings | None = None,
        *,
        max_tokens_cap: int | None = None,
        knowledge: LoreSearch | None = None,
        embed: Embed | None = None,
        recordings: Recordings | None = None,
    ) -> None:
        self.db = db
        # The players' kept recordings (on this machine's disk), deleted with their session.
        self.recordings = recordings
        self.resolve = resolve
        # Searches a card's knowledge bases by meaning (serving/knowledge.py's ``lore``).
        self.knowledge = knowledge
        # Ranks memories by meaning; their vectors live in this process only (a player's
        # deleted lines leave nothing behind on disk), made again after a restart.
        self.embed = embed
        self._vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self.settings = settings or CharacterSettings()
        # The server's --max-tokens-limit: a packet that may need more is refused, not cut.
        self.max_tokens_cap = max_tokens_cap
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # summaries folded between turns, whose usage the session's next turn reports
        self._folded: dict[str, list[Generated]] = {}
        self._folding: set[asyncio.Task[None]] = set()

    # -- cards ------------------------------------------------------------------

    def card(self, character_id: str) -> Character:
        card = store.get_character(self.db, character_id)
        if card is None:
            raise NotFound(f"No character '{character_id}'.", param="character")
        return card

    # -- sessions ---------------------------------------------------------------

    def create_session(
        self,
        player_id: str,
        characters: list[str],
        *,
        player_name: str | None = None,
        scene: str = "",
        greet: bool = True,
    ) -> SessionOut:
        cards = [self.card(c) for c in dict.fromkeys(characters)]
        session_id = f"sess_{uuid.uuid4().hex[:24]}"
        name = player_name or player_id
        store.create_session(self.db, session_id, player_id, name, scene, [c.id for c in cards])
        session = store.get_session(self.db, session_id)
        assert session is not None
        greetings = [self._greeting(c, name) for c in cards if greet and c.greeting]
        if greetings:
            store.add_turns(self.db, session, greetings)
        return self.session(session_id)

    def _greeting(self, card: Character, player: str) -> store.NewTurn:
        assert card.greeting is not None
        spoken, directions = split_directions(P.fill(card.greeting, player))
        if len(spoken) > card.text_max_chars:
            spoken = spoken[: card.text_max_chars].rsplit(" ", 1)[0]
        emotion = "neutral" if "neutral" in card.emotions else card.emotions[0]
        narration = "; ".join(directions)[: narration_max(card)]
        packet = ParsedPacket(spoken, narration, emotion, 0.3, [], {})
        return store.NewTurn(
            "character",
            spoken,
            speaker=card.id,
            packet=self._stored(packet, card),
            memory=f"{card.name}: {spoken}",
        )

    def _session_row(self, session_id: str) -> store.SessionRow:
        session = store.get_session(self.db, session_id)
        if session is None:
            raise NotFound(f"No session '{session_id}'.", param="session_id")
        return session

    def require_session(self, session_id: str) -> None:
        """404 unless the session exists."""
        self._session_row(session_id)

    def session(self, session_id: str) -> SessionOut:
        session = self._session_row(session_id)
        members = store.active_members(self.db, session_id)
        relationships = {
            c: RelationshipOut.of(store.get_relationship(self.db, c, session.player_id))
            for c in members
        }
        summaries = {}
        for c in members:
            found = store.latest_summary(self.db, session_id, c)
            if found:
                summaries[c] = found[1]
        return SessionOut(
            id=session.id,
            player_id=session.player_id,
            player_name=session.player_name,
            scene=session.scene,
            characters=members,
            created_at=session.created_at,
            turns=[self._view(t) for t in store.session_turns(self.db, session_id)],
            relationships=relationships,
            summaries=summaries,
        )

    @staticmethod
    def _view(turn: store.TurnRow) -> TurnView:
        p = turn.packet or {}
        return TurnView(
            seq=turn.seq,
            kind=turn.kind,
            speaker=turn.speaker,
            addressed=turn.addressed,
            text=turn.text,
            narration=p.get("narration"),
            emotion=EmotionOut(**p["emotion"]) if "emotion" in p else None,
            actions=[ActionOut(**a) for a in p["actions"]] if "actions" in p else None,
            interrupted=bool(p.get("interrupted")),
            created_at=turn.created_at,
        )

    def last_emotion(self, session_id: str, character_id: str) -> tuple[str, float]:
        """The emotion ``character_id`` showed last in the session (neutral before)."""
        for turn in reversed(store.session_turns(self.db, session_id)):
            if turn.kind == "character" and turn.speaker == character_id and turn.packet:
                felt = turn.packet.get("emotion") or {}
                return str(felt.get("label", "neutral")), float(felt.get("strength", 0.0))
        return "neutral", 0.0

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    async def membership(self, session_id: str, character_id: str, *, join: bool) -> SessionOut:
        session = self._session_row(session_id)
        async with self._lock(session_id):
            members = store.active_members(self.db, session_id)
            if join:
                card = self.card(character_id)
                if character_id not in members:
                    store.add_turns(self.db, session, [store.NewTurn("join", "", card.id)])
            else:
                if character_id not in members:
                    raise NotFound(
                        f"The character '{character_id}' is not in this session.",
                        param="character",
                    )
                store.add_turns(self.db, session, [store.NewTurn("leave", "", character_id)])
        return self.session(session_id)

    def delete_session(self, session_id: str) -> None:
        """Forget a session: its lines and transcripts, its characters' memories of it and
        any kept recordings."""
        if not store.delete_session(self.db, session_id):
            raise NotFound(f"No session '{session_id}'.", param="session_id")
        if self.recordings is not None:
            self.recordings.forget(session_id)
        self.forget_vectors()

    def forget_vectors(self) -> None:
        """Drop the memories' vectors held in memory (after a deletion: none of a deleted
        line stays; the others are made again at the next recall)."""
        self._vectors.clear()

    async def cut(
        self,
        session_id: str,
        character_id: str,
        heard: str,
        *,
        seq: int | None = None,
        inp: TurnInput | None = None,
    ) -> None:
        """The player cut in while ``character_id`` spoke and heard only ``heard``: its
        stored turn ``seq`` keeps that much, marked interrupted; a turn not yet stored
        (``inp``: the player's line) is stored so, the player's line whole."""
        session = self._session_row(session_id)
        card = self.card(character_id)
        memory = f"{card.name}: {heard}" if heard else None
        async with self._lock(session_id):
            if seq is not None:
                row = next(t for t in store.session_turns(self.db, session_id) if t.seq == seq)
                packet = dict(row.packet or {})
                packet["wire"] = {**packet.get("wire", {}), "text": heard}
                packet["interrupted"] = True
                store.cut_turn(self.db, session_id, seq, heard, packet, memory)
                return
            new = _lines(inp, character_id, session.player_name) if inp is not None else []
            if heard:
                label, strength = self.last_emotion(session_id, character_id)
                stored = self._stored(ParsedPacket(heard, "", label, strength), card)
                new.append(
                    store.NewTurn(
                        "character",
                        heard,
                        speaker=card.id,
                        packet={**stored, "interrupted": True},
                        memory=memory,
                    )
                )
            if new:
                store.add_turns(self.db, session, new)

    # -- turns ------------------------------------------------------------------

    async def turn(
        self,
        session_id: str,
        inp: TurnInput,
        *,
        authorize: Callable[[str], None] | None = None,
        local_only: bool = False,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Run one turn; see the module docstring for the events.

        ``local_only``: the turn must not leave this machine (a local-only key).
        """
        session = self._session_row(session_id)
        async with self._lock(session_id):
            ids = store.active_members(self.db, session_id)
            members = [c for c in (store.get_character(self.db, i) for i in ids) if c is not None]
            if not inp.respond:
                seqs = store.add_turns(
                    self.db,
                    session,
                    _lines(inp, inp.character, session.player_name),
                    request_id=inp.request_id,
                )
                heard = inp.text if inp.spoken else None
                yield TurnDone(Recorded(session_id=session_id, seq=seqs[-1], transcript=heard))
                return
            text = " ".join(t for t in (inp.text, inp.event) if t)
            speaker = choose_speaker(
                members,
                text,
                explicit=inp.character,
                last_spoke=store.last_spoke(self.db, session_id),
            )
            if authorize is not None:
                authorize(speaker.model)
            model = await self.resolve(speaker.model, local_only=local_only)
            new = _lines(inp, speaker.id, session.player_name)
            span = telemetry.start(
                f"invoke_agent {speaker.name}",
                {
                    genai.OPERATION: "invoke_agent",
                    genai.AGENT_ID: speaker.id,
                    genai.AGENT_NAME: speaker.name,
                    genai.CONVERSATION: session_id,
                    genai.REQUEST_MODEL: speaker.model,
                },
            )
            failure: BaseException | None = None
            try:
                turn = self._generate(session, speaker, members, new, model, inp, span)
                async for event in turn:
                    yield event
            except BaseException as exc:
                failure = exc
                raise
            finally:
                telemetry.finish(span, error=failure)

    async def _by_meaning(
        self, character_id: str, player_id: str, new: list[store.NewTurn]
    ) -> list[store.Memory] | None:
        """The character's memories with the player, ranked by likeness to the new lines
        (recall fuses this with its keyword search); None without an embedder."""
        query = " ".join(t.text for t in new if t.kind != "character")
        if self.embed is None or not self.settings.recall_limit or not query.strip():
            return None
        with telemetry.span("retrieval memories", {genai.OPERATION: "retrieval"}) as span:
            found = await self._rank(character_id, player_id, query)
            if span is not None:
                span.set_attribute("ocak.memories", len(found))
            return found

    async def _rank(self, character_id: str, player_id: str, query: str) -> list[store.Memory]:
        assert self.embed is not None  # _by_meaning asks only with one
        pool = store.memories_of(self.db, character_id, player_id, MEANING_POOL)
        if not pool:
            return []
        missing = list(dict.fromkeys(t for t, _, _ in pool if t not in self._vectors))
        vectors = await self.embed([*missing, query])
        for text, vector in zip(missing, vectors[:-1], strict=True):
            self._vectors[text] = vector
        for text, _, _ in pool:
            self._vectors.move_to_end(text)
        while len(self._vectors) > VECTOR_CACHE:
            self._vectors.popitem(last=False)
        matrix = np.stack([self._vectors[t] for t, _, _ in pool])
        order = np.argsort(-(matrix @ vectors[-1]), kind="stable")[:MEANING_TOP]
        return [pool[i] for i in order]

    async def _knowledge(
        self, card: Character, new: list[store.NewTurn], model: ServingModel
    ) -> list[ActiveLore]:
        """The chunks of the card's knowledge bases that best match the player's new lines,
        as lore (after the lorebook's keyword entries)."""
        query = " ".join(t.text for t in new if t.kind != "character")
        k = self.settings.knowledge_chunks
        if self.knowledge is None or not card.knowledge_bases or not query.strip() or not k:
            return []
        attributes = {
            genai.OPERATION: "retrieval",
            genai.DATA_SOURCE: ",".join(card.knowledge_bases),
        }
        with telemetry.span("retrieval knowledge", attributes) as span:
            found = await self.knowledge(card.knowledge_bases, query, k)
            if span is not None:
                span.set_attribute("ocak.chunks", len(found))
        return [ActiveLore(-1, source, text, model.count_tokens(text)) for source, text in found]

    async def _generate(
        self,
        session: store.SessionRow,
        card: Character,
        members: list[Character],
        new: list[store.NewTurn],
        model: ServingModel,
        inp: TurnInput,
        span: telemetry.Span | None = None,
    ) -> AsyncIterator[TurnEvent]:
        bound = packet_token_bound(card)
        if self.max_tokens_cap is not None and bound > self.max_tokens_cap:
            raise InvalidRequest(
                f"{card.name}'s packets may need {bound} tokens, more than this server allows "
                f"per answer ({self.max_tokens_cap}, --max-tokens-limit). Lower the card's "
                "text_max_chars or its actions, or raise the limit.",
                param="character",
            )
        room = model.context_length - bound
        budget = self.settings.history_budget
        with telemetry.active(span):
            found = await self._knowledge(card, new, model)
            by_meaning = await self._by_meaning(card.id, session.player_id, new)
        for used in self._folded.pop(session.id, []):
            yield used
        parts: P.PromptParts | None = None
        for fold_all in (False, True):
            keep = 0 if fold_all else budget
            summarizing = fold(
                self.db, session, card, members, model, keep, self.settings.summary_tokens
            )
            with telemetry.active(span):  # run whole under the turn's span, then reported
                folded = [usage_event async for usage_event in summarizing]
            for usage_event in folded:
                yield usage_event
            parts = prompt_parts(
                self.db, self.settings, session, card, members, new, model, by_meaning
            )
            parts.lore = [*parts.lore, *found]
            if self._estimate(model, P.build_messages(parts)) <= room:
                break
        assert parts is not None
        messages = P.build_messages(parts)
        estimate = self._estimate(model, messages)
        if estimate > room:
            raise ContextLengthExceeded(
                prompt_tokens=estimate, max_tokens=bound, context=model.context_length
            )
        constraint = Constraint("json", wire_schema(card))
        temperature = card.temperature if inp.temperature is None else inp.temperature
        totals = TurnUsage()
        packet: ParsedPacket | None = None
        problem = ""
        for attempt in range(ATTEMPTS):
            request = GenerationRequest(
                model=model.model_id,
                messages=messages,
                max_tokens=bound,
                temperature=temperature,
                seed=None if inp.seed is None else inp.seed + attempt,
                constraint=constraint,
                session=session.id,
            )
            step = telemetry.start("packet", {"ocak.attempt": attempt + 1}, parent=span)
            valid: bool | None = None
            failure: BaseException | None = None
            try:
                events = model.generate(request)
                try:
                    with telemetry.active(step):  # the model call is the step's child
                        first = await anext(events)  # admission errors raise here, before Speaking
                except BaseException:
                    await _aclose(events)
                    raise
                if attempt == 0:
                    yield Speaking(card.id, card.name, model)
                state = _Attempt()
                async for piece in self._stream(first, events, state):
                    yield piece
                assert state.finished is not None
                usage = state.finished.usage
                totals.prompt_tokens += usage.prompt_tokens
                totals.completion_tokens += usage.completion_tokens
                totals.cached_tokens += usage.cached_tokens
                totals.attempts += 1
                yield Generated(usage, state.finished.reason)
                try:
                    if state.finished.reason == "length":
                        raise PacketError(f"the packet did not complete within {bound} tokens")
                    if state.finished.reason != "stop":
                        raise PacketError(f"generation ended with '{state.finished.reason}'")
                    packet = parse_packet("".join(state.raw), card)
                except PacketError as exc:
                    problem = str(exc)
                    valid = False
                    if attempt + 1 < ATTEMPTS and state.streamed:
                        yield Reset(problem)
                    continue
                streamed = "".join(state.streamed)
                if packet.text != streamed:
                    if packet.text.startswith(streamed):
                        yield TextPiece(packet.text[len(streamed) :])
                    else:  # cannot happen with text first; a provider may order keys otherwise
                        if streamed:
                            yield Reset("text re-sent whole")
                        yield TextPiece(packet.text)
                valid = True
                break
            except BaseException as exc:
                failure = exc
                raise
            finally:
                telemetry.finish(
                    step, None if valid is None else {"ocak.valid": valid}, error=failure
                )
        if packet is None:
            raise NoValidPacket(
                f"The model '{model.model_id}' produced no valid packet for {card.name} "
                f"after {ATTEMPTS} attempts: {problem}."
            )
        done = TurnDone(self._commit(session, card, new, packet, parts, model, totals, inp))
        with telemetry.active(span):  # the summary that follows belongs to this turn
            self._fold_soon(session, card, members, model)
        yield done

    def _fold_soon(
        self,
        session: store.SessionRow,
        card: Character,
        members: list[Character],
        model: ServingModel,
    ) -> None:
        """Summarize older turns now that the answer is out, while the player reads or hears
        it, not when the next line arrives: a fold costs seconds of model time on a CPU.
        (The next turn still folds itself if this has not run; its lock orders the two.)"""

        async def run() -> None:
            budget, tokens = self.settings.history_budget, self.settings.summary_tokens
            try:
                async with self._lock(session.id):
                    async for used in fold(self.db, session, card, members, model, budget, tokens):
                        self._folded.setdefault(session.id, []).append(used)
            except OcakError as exc:  # the engine busy or closing: the next turn folds
                log.info("summary of session %s deferred: %s", session.id, exc.message)

        task = asyncio.create_task(run())
        self._folding.add(task)
        task.add_done_callback(self._folding.discard)

    @staticmethod
    async def _stream(
        first: GenerationEvent, rest: AsyncIterator[GenerationEvent], state: _Attempt
    ) -> AsyncIterator[TextPiece | TextComplete | Feeling]:
        text_field = TextFieldStream()
        complete = False
        stage = StageFilter()

        def take(event: GenerationEvent) -> str:
            if isinstance(event, Finished):
                state.finished = event
                return ""
            if not isinstance(event, TextDelta):  # no tools are offered: nothing else comes
                return ""
            state.raw.append(event.text)
            return stage.feed(text_field.feed(event.text))

        try:
            event: GenerationEvent | None = first
            while event is not None:
                piece = take(event)
                if piece:
                    state.streamed.append(piece)
                    yield TextPiece(piece)
                if text_field.closed and not complete:
                    complete = True
                    yield TextComplete()
                felt = state.feeling()
                if felt is not None:
                    yield felt
                if state.finished is not None:
                    break
                event = await anext(rest, None)
        finally:
            await _aclose(rest)
        if state.finished is None:
            raise OcakError("the engine ended a generation without a finish event")

    def _stored(self, packet: ParsedPacket, card: Character) -> dict[str, Any]:
        return {
            "narration": packet.narration,
            "emotion": {"label": packet.emotion, "strength": packet.strength},
            "actions": packet.actions,
            "change": packet.change,
            "wire": packet.wire(card),
        }

    def _commit(
        self,
        session: store.SessionRow,
        card: Character,
        new: list[store.NewTurn],
        packet: ParsedPacket,
        parts: P.PromptParts,
        model: ServingModel,
        usage: TurnUsage,
        inp: TurnInput,
    ) -> TurnOut:
        relationship = store.get_relationship(self.db, card.id, session.player_id)
        applied = relationship.apply(dict(packet.change))
        reply = store.NewTurn(
            "character",
            packet.text,
            speaker=card.id,
            packet=self._stored(packet, card),
            memory=f"{card.name}: {packet.text}" if packet.text else None,
        )
        seqs = store.add_turns(
            self.db,
            session,
            [*new, reply],
            relationship=(card.id, relationship),
            request_id=inp.request_id,
        )
        return TurnOut(
            session_id=session.id,
            seq=seqs[-1],
            character=card.id,
            name=card.name,
            text=packet.text,
            narration=packet.narration,
            emotion=EmotionOut(label=packet.emotion, strength=packet.strength),
            actions=[ActionOut(**a) for a in packet.actions],
            relationship=RelationshipOut.of(relationship, applied),
            memories=list(parts.memories),
            lore=[e.name for e in parts.lore],
            model=model.model_id,
            usage=usage,
            transcript=inp.text if inp.spoken else None,
        )

    @staticmethod
    def _estimate(model: ServingModel, messages: list[Any]) -> int:
        """Prompt tokens, counted per message plus the template's few tokens per message."""
        return sum(model.count_tokens(m.content) + 8 for m in messages) + 16


async def _aclose(events: AsyncIterator[Any]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()
