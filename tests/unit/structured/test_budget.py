"""Constrained answers that finish in budget, as pure llguidance logic (no model).

A toy byte-level vocabulary stands in for a model's; a scripted "model" that
never wants to stop (it keeps writing string text, or keeps adding array items)
plays against ``Budget``. Whatever it wants, the answer must end as a complete
document that matches the schema, within max_tokens; and a budget shorter than
any valid answer is refused before the first token.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import llguidance as llg
import pytest

from ocak.structured.budget import Budget, BudgetTooSmall, closing_path, closing_vocab
from ocak.structured.grammar import JSON_OPTIONS, bound_strings

# Single bytes plus a few multi-byte pieces, like a BPE vocabulary's merges.
PIECES = [bytes([b]) for b in range(256)] + [
    b'{"',
    b'": "',
    b'"}',
    b'", "',
    b"answer",
    b"tags",
    b"hello",
    b" world",
    b'"]',
    b'"]}',
    b"null",
]
EOS = len(PIECES)


class _Toy:
    """The shape llguidance's ``TokenizerWrapper`` reads: tokens, ids, a tokenize call."""

    def __init__(self) -> None:
        self.tokens = [*PIECES, b"<eos>"]
        self.eos_token_id = EOS
        self.bos_token_id = None
        self.special_token_ids = [EOS]

    def __call__(self, text: bytes) -> list[int]:
        ids: list[int] = []
        i = 0
        while i < len(text):
            best = max(
                (t for t, p in enumerate(PIECES) if text.startswith(p, i)),
                key=lambda t: len(PIECES[t]),
            )
            ids.append(best)
            i += len(PIECES[best])
        return ids


TOKENIZER = llg.LLTokenizer(llg.TokenizerWrapper(_Toy()))
VOCAB = closing_vocab(TOKENIZER)

ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["answer", "score"],
    "additionalProperties": False,
}
TAGS = {
    "type": "object",
    "properties": {
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "weight": {"type": "number"}},
                "required": ["name", "weight"],
            },
        }
    },
    "required": ["tags"],
}


def matcher(schema: dict[str, Any]) -> llg.LLMatcher:
    grammar = llg.LLMatcher.grammar_from_json_schema(
        json.dumps(bound_strings(schema)),
        defaults=JSON_OPTIONS,  # type: ignore[arg-type]
    )
    m = llg.LLMatcher(TOKENIZER, grammar, log_level=0)
    assert not m.is_error(), m.get_error()
    return m


def allowed(m: llg.LLMatcher, token: int) -> bool:
    bits = m.compute_bitmask()
    return bool(bits[token // 8] >> (token % 8) & 1)


def endless(m: llg.LLMatcher, wants: list[bytes]) -> int:
    """What a model that never wants to finish writes: the first wanted piece allowed."""
    for piece in wants:
        token = PIECES.index(piece)
        if allowed(m, token):
            return token
    return next(t for t in range(EOS) if allowed(m, t))


def decode(schema: dict[str, Any], max_tokens: int, wants: list[bytes]) -> tuple[str, int]:
    """Run the scripted model under ``Budget``: the text and the tokens it took."""
    m = matcher(schema)
    budget = Budget(m, VOCAB, max_tokens)
    out: list[int] = []
    while not (m.is_stopped() or budget.finished()) and len(out) < max_tokens:
        forced = budget.next_forced()
        token = forced if forced is not None else endless(m, wants)
        assert m.consume_token(token), m.get_error()
        budget.accepted(token)
        out.append(token)
    return TOKENIZER.decode_str(out), len(out)


def test_the_closing_path_is_the_shortest_valid_document() -> None:
    path = closing_path(matcher(ANSWER), VOCAB)
    assert path is not None
    assert json.loads(TOKENIZER.decode_str(path)) == {"answer": "", "score": 0}


@pytest.mark.parametrize("max_tokens", [20, 21, 24, 40, 60])
def test_a_string_the_model_never_closes_is_closed_within_the_budget(max_tokens: int) -> None:
    text, used = decode(ANSWER, max_tokens, [b" world", b"hello"])
    assert used <= max_tokens
    doc = json.loads(text)
    jsonschema.validate(doc, ANSWER)
    # The budget is spent on the answer, not left over: the close comes at the end.
    assert used >= max_tokens - 3


def test_the_answer_gets_longer_as_the_budget_grows() -> None:
    lengths = [len(json.loads(decode(ANSWER, n, [b" world"])[0])["answer"]) for n in (24, 40, 60)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


@pytest.mark.parametrize("max_tokens", [40, 60, 100])
def test_an_array_the_model_keeps_growing_is_closed_within_the_budget(max_tokens: int) -> None:
    # Each new item opens an object with two required keys: the closing path grows in
    # one step; the margin learns that rise from the first item (see the module doc).
    wants = [b",", b" ", b"{", b'{"', b"hello", b"1"]
    text, used = decode(TAGS, max_tokens, wants)
    assert used <= max_tokens
    doc = json.loads(text)
    jsonschema.validate(doc, TAGS)


def test_a_budget_no_valid_answer_fits_is_refused_before_decoding() -> None:
    shortest = closing_path(matcher(ANSWER), VOCAB)
    assert shortest is not None
    with pytest.raises(BudgetTooSmall) as err:
        Budget(matcher(ANSWER), VOCAB, len(shortest) - 1)
    assert err.value.param == "max_tokens"
    assert err.value.status == 400
    assert str(len(shortest)) in err.value.message
    # Exactly the shortest answer's length is enough.
    Budget(matcher(ANSWER), VOCAB, len(shortest))


def test_text_that_is_already_complete_is_never_forced() -> None:
    m = llg.LLMatcher(TOKENIZER, llg.LLMatcher.grammar_from_lark("start: /[a-z ]+/"), log_level=0)
    budget = Budget(m, VOCAB, 5)
    assert m.consume_token(PIECES.index(b"hello"))
    budget.accepted(PIECES.index(b"hello"))
    assert budget.next_forced() is None
    assert not budget.closing
