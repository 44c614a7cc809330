"""Examples to token ids and labels, through the chat template the model is served with.

The template is the one in the GGUF (``tokenizer.chat_template``) rendered by ocak's own
``ChatTemplate``, as the llama.cpp engine renders a request, so training sees the very
prompt a served request produces. The text is cut where each learnt assistant turn
starts (the end of the prompt a request would render, generation prompt included) and
ends (the turn's end-of-message marker); each piece is tokenized on its own, so the
prompt's tokens are those llama.cpp will feed. Labels are the token ids on learnt
assistant pieces (content and end-of-turn marker: the model learns to stop) and -100
elsewhere.

A template whose renders are not prefixes of one another (some strip earlier turns'
reasoning) is trained on its last assistant turn only, which is always well defined.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from ocak.engines.chat_template import ChatTemplate
from ocak.errors import InvalidRequest
from ocak.protocol.generation import Message
from ocak.tuning.data import Example

IGNORE = -100
Tokenize = Callable[[str, bool], list[int]]  # (text, add_special) -> ids


@dataclass(frozen=True, slots=True)
class Encoded:
    """One example as the model trains on it."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def learnt(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def _render(template: ChatTemplate, example: Example, upto: int, prompt: bool) -> str:
    tools = list(example.tools) if example.tools else None
    messages: list[Message] = list(example.messages[:upto])
    return template.render(messages, add_generation_prompt=prompt, tools=tools)


def spans(template: ChatTemplate, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its learnt assistant turns."""
    full = _render(template, example, len(example.messages), False)
    found: list[tuple[int, int]] = []
    for i, learn in enumerate(example.learn):
        if not learn:
            continue
        head = _render(template, example, i, True)
        turn = _render(template, example, i + 1, False)
        if not (full.startswith(turn) and turn.startswith(head)) or len(turn) == len(head):
            break
        found.append((len(head), len(turn)))
    else:
        return full, found
    last = max(i for i, learn in enumerate(example.learn) if learn)
    head = _render(template, example, last, True)
    turn = _render(template, example, last + 1, False)
    if not turn.startswith(head) or len(turn) == len(head):
        raise InvalidRequest(
            f"Line {example.line}: the model's chat template does not render this "
            "conversation as a prompt followed by its answer, so it cannot be trained on.",
            param=f"line {example.line}: messages",
        )
    return turn, [(len(head), len(turn))]


def encode(
    template: ChatTemplate,
    tokenize: Tokenize,
    example: Example,
    *,
    max_len: int,
    bos: int | None = None,
) -> Encoded:
    """Token ids and labels of ``example``, cut to ``max_len`` tokens."""
    text, learnt = spans(template, example)
    ids: list[int] = []
    labels: list[int] = []
    cuts = [0]
    for start, end in learnt:
        cuts += [start, end]
    cuts.append(len(text))
    learnt_starts = {start for start, _ in learnt}
    for n, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        if hi <= lo:
            continue
        piece = tokenize(text[lo:hi], n == 0)
        if n == 0 and bos is not None and len(piece) > 1 and piece[0] == piece[1] == bos:
            piece = piece[1:]  # the template wrote BOS and the tokenizer added it again
        ids += piece
        labels += piece if lo in learnt_starts else [IGNORE] * len(piece)
    truncated = len(ids) > max_len
    return Encoded(ids[:max_len], labels[:max_len], truncated)
