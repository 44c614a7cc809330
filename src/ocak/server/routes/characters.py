"""Characters API: cards (``/v1/characters``), sessions and turns (``/v1/sessions``).

The character service (its own SQLite file in the data folder) is opened on
first use and kept in ``app.state``. A turn is the service's event stream,
sent as SSE (``stream: true``) or collected into the JSON packet. Each turn
fills the request record like a chat completion does, so usage records,
limits and metrics cover character turns.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from ocak.characters import store
from ocak.characters.api import (
    CharacterList,
    CreateSession,
    Deleted,
    DeletedSession,
    JoinRequest,
    MessageIn,
    Recorded,
    SessionOut,
    TurnOut,
)
from ocak.characters.cards import Character, card_from_data, parse_card_bytes
from ocak.characters.events import (
    AudioReset,
    Generated,
    Reset,
    Speaking,
    Spoken,
    TextPiece,
    TurnDone,
    TurnEvent,
    TurnInput,
)
from ocak.characters.recordings import Recordings
from ocak.characters.service import CharacterService
from ocak.characters.tavern import TavernCardV2
from ocak.characters.voice import hear, speakers, voiced
from ocak.errors import InvalidRequest, NotFound, OcakError
from ocak.protocol.openai import ErrorResponse
from ocak.protocol.record import RequestRecord
from ocak.server.proxy import http_context
from ocak.server.services import get_state
from ocak.server.streaming import SSE_HEADERS, unless_disconnected
from ocak.server.tracking import get_record

router = APIRouter(tags=["characters"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 429, 500, 502, 503)
}


def get_service(request: Request) -> CharacterService:
    return get_state(request).characters


# -- cards -------------------------------------------------------------------------


@router.post("/v1/characters", response_model=Character, responses=ERRORS, status_code=201)
async def add_character(body: Character | TavernCardV2, request: Request) -> Character:
    """Add or replace a character: ocak's card, or a SillyTavern ``chara_card_v2``."""
    card = body if isinstance(body, Character) else card_from_data(body.model_dump())
    store.put_character(get_service(request).db, card)
    return card


@router.post(
    "/v1/characters/import",
    response_model=Character,
    responses=ERRORS,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_character(
    request: Request,
    id: str | None = Query(None, description="Id for the character (default: from its name)."),
) -> Character:
    """Add a character from a file's bytes: a SillyTavern PNG or JSON card, or ocak YAML/JSON."""
    # The format is sniffed from the bytes (PNG signature, a JSON object, else YAML):
    # ocak reads every POST body as JSON whatever its Content-Type says.
    card = parse_card_bytes(await request.body(), card_id=id)
    store.put_character(get_service(request).db, card)
    return card


class CardProblem(BaseModel):
    loc: str
    msg: str


class CardCheck(BaseModel):
    valid: bool
    errors: list[CardProblem]


@router.post("/v1/characters/validate", response_model=CardCheck, responses=ERRORS)
async def validate_character(request: Request) -> CardCheck:
    """Check a card (ocak's JSON form) against the schema ``POST /v1/characters`` uses,
    storing nothing: the console's card editor checks as the author types."""
    try:
        data = json.loads(await request.body())
    except ValueError as exc:
        return CardCheck(valid=False, errors=[CardProblem(loc="(card)", msg=f"not JSON: {exc}")])
    try:
        Character.model_validate(data)
    except ValidationError as exc:
        problems = [
            CardProblem(loc=".".join(str(part) for part in e["loc"]) or "(card)", msg=e["msg"])
            for e in exc.errors()[:20]
        ]
        return CardCheck(valid=False, errors=problems)
    return CardCheck(valid=True, errors=[])


@router.get("/v1/characters", response_model=CharacterList, responses=ERRORS)
async def list_characters(request: Request) -> CharacterList:
    return CharacterList(data=store.list_characters(get_service(request).db))


@router.get("/v1/characters/{character_id}", response_model=Character, responses=ERRORS)
async def get_character(character_id: str, request: Request) -> Character:
    return get_service(request).card(character_id)


@router.delete("/v1/characters/{character_id}", response_model=Deleted, responses=ERRORS)
async def delete_character(character_id: str, request: Request) -> Deleted:
    """Delete a character with its memories and relationships (session transcripts stay)."""
    if not store.delete_character(get_service(request).db, character_id):
        raise NotFound(f"No character '{character_id}'.", param="character_id")
    return Deleted(id=character_id)


# -- sessions ----------------------------------------------------------------------


@router.post("/v1/sessions", response_model=SessionOut, responses=ERRORS, status_code=201)
async def create_session(body: CreateSession, request: Request) -> SessionOut:
    """Start a session of one player with one or more characters."""
    return get_service(request).create_session(
        body.player_id,
        body.characters,
        player_name=body.player_name,
        scene=body.scene,
        greet=body.greet,
    )


@router.get("/v1/sessions/{session_id}", response_model=SessionOut, responses=ERRORS)
async def get_session(session_id: str, request: Request) -> SessionOut:
    return get_service(request).session(session_id)


@router.delete("/v1/sessions/{session_id}", response_model=DeletedSession, responses=ERRORS)
async def delete_session(session_id: str, request: Request) -> DeletedSession:
    """Forget a session: its lines (transcripts of recordings too), its characters'
    memories of it and any kept recordings. Relationships, built over sessions, stay."""
    get_service(request).delete_session(session_id)
    return DeletedSession(id=session_id)


def recordings(request: Request) -> Recordings:
    settings = get_state(request).settings
    return Recordings.in_data_dir(settings.data_dir, keep=settings.keep_recordings)


@router.post("/v1/sessions/{session_id}/members", response_model=SessionOut, responses=ERRORS)
async def join_session(session_id: str, body: JoinRequest, request: Request) -> SessionOut:
    """A character joins; it witnesses (and remembers) only what is said from now on."""
    return await get_service(request).membership(session_id, body.character, join=True)


@router.delete(
    "/v1/sessions/{session_id}/members/{character_id}", response_model=SessionOut, responses=ERRORS
)
async def leave_session(session_id: str, character_id: str, request: Request) -> SessionOut:
    return await get_service(request).membership(session_id, character_id, join=False)


@router.post(
    "/v1/sessions/{session_id}/messages",
    response_model=TurnOut | Recorded,
    responses={
        **ERRORS,
        200: {
            "description": "The character's packet; with `stream: true`, server-sent events: "
            "`speaker`, `text` deltas (a `reset` discards the text so far), then `narration`, "
            "`emotion`, `actions`, `relationship`, and `done` with the whole turn.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
async def post_message(session_id: str, body: MessageIn, request: Request) -> Any:
    """Say something (or post a game event) in a session; a character answers with a packet."""
    record = get_record(request)
    record.stream = body.stream
    state = get_state(request)
    serving, ctx = state.serving, http_context(request)
    service = get_service(request)
    service.require_session(session_id)  # before a recording is transcribed for nothing
    text, spoken = body.text, False
    if body.audio is not None:
        data = _base64(body.audio.data, "audio.data")
        recordings(request).keep(session_id, data, suffix=".audio")
        text = await hear(state.audio, ctx, data, language=body.audio.language)
        spoken = True

    def authorize(model: str) -> None:
        serving.authorize(ctx, model)

    inp = TurnInput(
        text=text,
        spoken=spoken,
        event=body.event,
        character=body.character,
        respond=body.respond,
        temperature=body.temperature,
        seed=body.seed,
        request_id=record.request_id,
    )
    turn = service.turn(session_id, inp, authorize=authorize, local_only=ctx.local_only)
    if body.voice:
        turn = voiced(turn, speakers(service, state.audio, ctx, session_id, body.voice_format))
    events = tracked(turn, record)
    try:
        first = await anext(events)  # 4xx/5xx before any byte: unknown session, queue full...
    except StopAsyncIteration as exc:  # pragma: no cover - the service always ends with done
        raise OcakError("the turn ended without a result") from exc
    if body.stream:
        return StreamingResponse(
            _frames(first, events), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return await unless_disconnected(request, _collect(first, events))


async def tracked(
    events: AsyncGenerator[TurnEvent, None], record: RequestRecord
) -> AsyncGenerator[TurnEvent, None]:
    """Fill the request record from a turn's events (backend, first text, tokens)."""
    try:
        async for event in events:
            if isinstance(event, Speaking):
                record.backend = event.model.backend
                record.locality = event.model.locality
            elif isinstance(event, TextPiece):
                record.first_token()
            elif isinstance(event, Generated):
                record.prompt_tokens += event.usage.prompt_tokens
                record.completion_tokens += event.usage.completion_tokens
                record.finish_reason = event.reason
            elif isinstance(event, TurnDone):
                record.first_token()
            yield event
    except OcakError as exc:
        record.fail(exc.status, exc.code)
        raise
    finally:
        await events.aclose()


def _base64(data: str, param: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("This is not base64.", param=param) from None


async def _collect(first: TurnEvent, events: AsyncGenerator[TurnEvent, None]) -> TurnOut | Recorded:
    try:
        event: TurnEvent = first
        speech = []
        while not isinstance(event, TurnDone):
            if isinstance(event, Spoken):
                speech.append(event.segment)
            elif isinstance(event, AudioReset):
                speech.clear()
            event = await anext(events)
        if isinstance(event.turn, TurnOut) and speech:
            event.turn.speech = speech
        return event.turn
    finally:
        await events.aclose()


def _frame(kind: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps({"type": kind, **payload}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _turn_frames(event: TurnEvent) -> list[bytes]:
    if isinstance(event, Speaking):
        return [_frame("speaker", {"character": event.character, "name": event.name})]
    if isinstance(event, TextPiece):
        return [_frame("text", {"delta": event.text})]
    if isinstance(event, Reset):
        return [_frame("reset", {"reason": event.reason})]
    if isinstance(event, Spoken):
        return [_frame("audio", event.segment.model_dump())]
    if isinstance(event, AudioReset):
        return [_frame("audio_reset", {"reason": event.reason})]
    if isinstance(event, TurnDone):
        turn = event.turn
        if isinstance(turn, Recorded):
            return [_frame("done", {"turn": turn.model_dump()})]
        return [
            _frame("narration", {"narration": turn.narration}),
            _frame("emotion", {"emotion": turn.emotion.model_dump()}),
            _frame("actions", {"actions": [a.model_dump() for a in turn.actions]}),
            _frame("relationship", {"relationship": turn.relationship.model_dump()}),
            _frame("done", {"turn": turn.model_dump()}),
        ]
    return []


async def _frames(
    first: TurnEvent, events: AsyncGenerator[TurnEvent, None]
) -> AsyncIterator[bytes]:
    try:
        for frame in _turn_frames(first):
            yield frame
        async for event in events:
            for frame in _turn_frames(event):
                yield frame
    except OcakError as exc:
        yield _frame("error", exc.to_dict())
    finally:
        await events.aclose()
