"""Examples become token ids through the model's chat template, and only the assistant turns
that are learnt carry labels: the prompt, the other roles and weight-0 answers do not."""

from __future__ import annotations

import pytest

from ocak.engines.chat_template import CHATML, ChatTemplate
from ocak.errors import InvalidRequest
from ocak.protocol.generation import Message
from ocak.tuning.data import Example
from ocak.tuning.encode import IGNORE, encode

TEMPLATE = ChatTemplate(CHATML)


def chars(text: str, first: bool) -> list[int]:
    """A tokenizer of one token per character (BOS=1 first when asked)."""
    return ([1] if first else []) + [ord(c) for c in text]


def learnt_runs(labels: list[int]) -> list[str]:
    """The runs of labelled tokens, as text."""
    text = "".join(chr(t) if t != IGNORE else "\0" for t in labels)
    return [run for run in text.split("\0") if run]


def example(*turns: tuple[str, str, bool]) -> Example:
    return Example(
        line=1,
        messages=tuple(Message(role, text) for role, text, _ in turns),
        learn=tuple(learn for _, _, learn in turns),
    )


def test_only_the_learnt_assistant_turns_have_labels() -> None:
    ex = example(
        ("system", "Be brief.", False),
        ("user", "Hi", False),
        ("assistant", "Skip me", False),  # weight 0
        ("user", "Again", False),
        ("assistant", "Hello!", True),
    )
    out = encode(TEMPLATE, chars, ex, max_len=1000, bos=1)
    assert out.input_ids[0] == 1  # the first piece is tokenized with the special tokens
    text = "".join(chr(t) for t in out.input_ids[1:])
    assert text == TEMPLATE.render(list(ex.messages), add_generation_prompt=False)
    # the answer and its end-of-turn marker are learnt: the model learns to stop
    assert learnt_runs(out.labels) == ["Hello!<|im_end|>\n"]
    assert out.learnt == len("Hello!<|im_end|>\n")
    assert not out.truncated


def test_the_prompt_is_cut_where_a_served_request_ends() -> None:
    ex = example(("user", "Hi", False), ("assistant", "Yo", True))
    out = encode(TEMPLATE, chars, ex, max_len=1000)
    prompt = TEMPLATE.render([Message("user", "Hi")], add_generation_prompt=True)
    first_label = next(i for i, t in enumerate(out.labels) if t != IGNORE)
    assert "".join(chr(t) for t in out.input_ids[1:first_label]) == prompt


def test_two_learnt_turns_and_truncation() -> None:
    ex = example(
        ("user", "a", False), ("assistant", "one", True),
        ("user", "b", False), ("assistant", "two", True),
    )  # fmt: skip
    out = encode(TEMPLATE, chars, ex, max_len=1000)
    assert learnt_runs(out.labels) == ["one<|im_end|>\n", "two<|im_end|>\n"]
    short = encode(TEMPLATE, chars, ex, max_len=20)
    assert len(short.input_ids) == len(short.labels) == 20 and short.truncated


def test_a_doubled_bos_is_dropped() -> None:
    template = ChatTemplate("{{ bos_token }}" + CHATML, bos_token="\x01")
    out = encode(template, chars, example(("user", "Hi", False), ("assistant", "Yo", True)),
                 max_len=100, bos=1)  # fmt: skip
    assert out.input_ids[:2] != [1, 1] and out.input_ids[0] == 1


def test_a_template_that_rewrites_history_trains_the_last_turn_only() -> None:
    # Renders earlier assistant turns differently once a later one exists.
    source = (
        "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[old]"
        "{% else %}<{{ m.role }}>{{ m.content }}</>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    ex = example(
        ("user", "a", False), ("assistant", "one", True),
        ("user", "b", False), ("assistant", "two", True),
    )  # fmt: skip
    out = encode(ChatTemplate(source), chars, ex, max_len=1000)
    assert learnt_runs(out.labels) == ["two</>"]
    # The generation prompt is not how the answer is rendered: no prompt/answer cut exists.
    broken = ChatTemplate(
        "{% for m in messages %}<{{ 'bot' if m.role == 'assistant' else m.role }}>"
        "{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    with pytest.raises(InvalidRequest, match="cannot be trained on"):
        encode(broken, chars, example(("user", "a", False), ("assistant", "b", True)), max_len=9)
