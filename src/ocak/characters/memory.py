"""A character's memory in a prompt: summaries of older turns, recall, lore.

``fold`` summarizes the oldest verbatim turns a character witnessed once they
pass a token budget (the model writes the summary; it becomes the start of the
history). ``prompt_parts`` gathers what one turn's prompt needs: the summary,
the witnessed history after it, the relationship, the lorebook entries the
recent messages activate, and the memories recalled by full-text search fused with a
search by meaning (when the service has an embedder).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ocak import telemetry
from ocak.characters import prompt as P
from ocak.characters import store
from ocak.characters.cards import Character
from ocak.characters.events import Generated
from ocak.characters.lorebook import activate
from ocak.characters.serving import ServingModel
from ocak.config import CharacterSettings
from ocak.protocol.generation import Finished, GenerationRequest, TextDelta
from ocak.store.db import Store


def as_line(turn: store.TurnRow | store.NewTurn) -> P.Line:
    return P.Line(turn.kind, turn.text, turn.speaker, turn.addressed, turn.packet)


def prompt_parts(
    db: Store,
    settings: CharacterSettings,
    session: store.SessionRow,
    card: Character,
    members: list[Character],
    new: list[store.NewTurn],
    model: ServingModel,
    by_meaning: list[store.Memory] | None = None,
) -> P.PromptParts:
    summary = store.latest_summary(db, session.id, card.id)
    upto = summary[0] if summary else 0
    history = [as_line(t) for t in store.witnessed(db, session.id, card.id, after=upto)]
    new_lines = [as_line(t) for t in new]
    names = {c.id: c.name for c in members}
    names[card.id] = card.name
    parts = P.PromptParts(
        card=card,
        player=session.player_name,
        scene=session.scene,
        summary=summary[1] if summary else None,
        history=history,
        new=new_lines,
        present=[c.name for c in members if c.id != card.id],
        relationship=store.get_relationship(db, card.id, session.player_id),
        names=names,
    )
    recent = [P.render_line(line, parts)[1] for line in [*history, *new_lines]]
    parts.lore = activate(card.lorebook, recent, model.count_tokens, budget=settings.lore_budget)
    query = " ".join(line.text for line in new_lines)
    if settings.recall_limit and query.strip():
        found = store.recall(
            db,
            card.id,
            session.player_id,
            query,
            exclude_session=session.id,
            exclude_after=upto,
            limit=settings.recall_limit + 1,
            by_meaning=by_meaning or (),
        )
        parts.memories = [m for m in found if m != parts.summary][: settings.recall_limit]
    return parts


async def fold(
    db: Store,
    session: store.SessionRow,
    card: Character,
    members: list[Character],
    model: ServingModel,
    budget: int,
    summary_tokens: int,
) -> AsyncIterator[Generated]:
    """Summarize the oldest verbatim turns when they pass ``budget`` tokens."""
    summary = store.latest_summary(db, session.id, card.id)
    upto = summary[0] if summary else 0
    turns = store.witnessed(db, session.id, card.id, after=upto)
    if not turns:
        return
    parts = P.PromptParts(
        card=card,
        player=session.player_name,
        names={c.id: c.name for c in [*members, card]},
    )
    lines = [as_line(t) for t in turns]
    sizes = [model.count_tokens(P.render_line(line, parts)[1]) + 4 for line in lines]
    if sum(sizes) <= budget:
        return
    keep, cut = 0, len(lines)
    for i in range(len(lines) - 1, -1, -1):
        if keep + sizes[i] > budget // 2:
            break
        keep += sizes[i]
        cut = i
    if cut == 0:
        return
    folded = lines[:cut]
    messages = P.summary_messages(
        card, session.player_name, summary[1] if summary else None, folded, parts
    )
    request = GenerationRequest(
        model=model.model_id,
        messages=messages,
        max_tokens=summary_tokens,
        temperature=0.2,
    )
    pieces: list[str] = []
    finished: Finished | None = None
    with telemetry.span("summary", {"ocak.turns": cut}):  # the model call is its child
        async for event in model.generate(request):
            if isinstance(event, TextDelta):
                pieces.append(event.text)
            elif isinstance(event, Finished):
                finished = event
    if finished is not None:
        yield Generated(finished.usage, finished.reason)
    text = " ".join("".join(pieces).split())
    if not text:  # keep the facts even when the model gives no summary
        text = " ".join(P.render_line(line, parts)[1] for line in folded)[-600:]
    store.add_summary(db, session, card.id, turns[cut - 1].seq, text)
