"""Where prompt chunks end, how much of a cached prompt another may reuse, and
which free slot a new prompt goes to.

Pure logic of the llama.cpp scheduler (no model): chunk ends are a function of
the prompt's own tokens, so a prompt is computed the same way cached or not.
"""

from __future__ import annotations

from ocak.engines.llamacpp.adapters import LoraKey
from ocak.engines.llamacpp.scheduler import (
    Slot,
    choose_slot,
    chunk_ends,
    placement,
    reusable_prefix,
    runs,
)

END = 2  # the end-of-turn token in these examples


def is_end(token: int) -> bool:
    return token == END


def test_chunks_end_after_each_turn_at_each_multiple_and_at_the_end() -> None:
    #            0  1  2   3  4  5  6  7  8  9 10
    tokens = [5, 6, END, 7, 8, 9, 9, 9, 9, END, 4]
    assert chunk_ends(tokens, 4, is_end) == [3, 4, 8, 10, 11]


def test_a_prompt_without_turn_ends_is_cut_at_multiples_only() -> None:
    assert chunk_ends(list(range(10, 20)), 4, is_end) == [4, 8, 10]


def test_a_shared_system_message_is_reused_up_to_its_end() -> None:
    system = [5, 6, 7, END]
    a = [*system, 10, 11, 12, END, 1]
    b = [*system, 20, 21, END, 1]
    ends_a, ends_b = chunk_ends(a, 128, is_end), chunk_ends(b, 128, is_end)
    assert reusable_prefix(ends_a, ends_b, shared=4, limit=len(b) - 1) == 4


def test_reuse_stops_where_the_chunking_differs() -> None:
    # Same first six tokens, but only one prompt ends a turn at 3: its cells from 3 on
    # were computed in a different chunk, so nothing past the common end is reused.
    a = [5, 6, END, 7, 8, 9, 1]
    b = [5, 6, 3, 7, 8, 9, 1]
    assert reusable_prefix(chunk_ends(a, 4, is_end), chunk_ends(b, 4, is_end), 2, 6) == 0
    assert reusable_prefix(chunk_ends(a, 4, is_end), chunk_ends(a, 4, is_end), 7, 6) == 4


def test_reuse_leaves_a_token_to_decode_and_stays_within_the_equal_tokens() -> None:
    tokens = [5, 6, END, 7, END]
    ends = chunk_ends(tokens, 128, is_end)  # [3, 5]
    assert reusable_prefix(ends, ends, shared=5, limit=4) == 3  # the same prompt again
    assert reusable_prefix(ends, ends, shared=2, limit=4) == 0  # differs before the end


def pick(slots: dict[int, tuple[int, int]], chunk: int = 128) -> int:
    """``slots``: seq -> (cells cached, cells the new prompt could reuse)."""
    free = [Slot(seq, last_used=float(seq)) for seq in slots]
    return choose_slot(free, lambda s: slots[s.seq][1], lambda s: slots[s.seq][0], chunk).seq


def test_a_prompt_goes_back_to_the_slot_it_continues() -> None:
    # An earlier turn of the same chat sits in slot 5: 300 of its 340 cells are reused.
    assert pick({1: (180, 20), 3: (0, 0), 5: (340, 300)}) == 5


def test_otherwise_the_lowest_free_slot_keeps_running_sequences_together() -> None:
    # Slot 1 shares a few more tokens than slot 0, not enough to split the batch.
    assert pick({4: (0, 0), 0: (180, 20), 1: (180, 31)}) == 0


def test_a_long_cache_is_kept_when_a_cheap_slot_is_free() -> None:
    # Slot 0 holds a 420-token persona this prompt barely shares; slot 2 is cheap.
    assert pick({0: (420, 3), 2: (150, 3)}) == 2


def test_when_every_free_cache_is_worth_keeping_the_least_recently_used_goes() -> None:
    assert pick({3: (900, 0), 1: (700, 10), 2: (800, 0)}) == 1


def place(running: dict[int, str], key: str, parallel: int = 8) -> int:
    """The slot a new ``key`` sequence gets beside ``running`` (seq -> adapter set), every
    free slot's cache empty."""
    free = [Slot(seq) for seq in range(parallel) if seq not in running]
    keys: dict[int, LoraKey] = {s: ((k, 1.0),) for s, k in running.items()}

    def fit(slot: Slot) -> tuple[int, int]:
        return placement(slot.seq, ((key, 1.0),), keys)

    return choose_slot(free, lambda s: 0, lambda s: 0, 128, fit).seq


def test_a_sequence_joins_the_run_of_its_adapter_set() -> None:
    assert place({2: "a", 3: "a"}, "a") == 1  # next to its set, not the lowest free id
    assert place({}, "a") == 0


def test_each_adapter_set_arriving_in_turns_gets_a_run_of_its_own() -> None:
    running: dict[int, str] = {}
    for i in range(8):  # a, b, c, d, a, b, c, d: one decode call per set, each unsplit
        key = "abcd"[i % 4]
        running[place(running, key)] = key
    for key in "abcd":
        assert runs({s for s, k in running.items() if k == key}) == 1, running


def test_short_chunks_after_one_share_its_call_while_it_stays_under_64_rows() -> None:
    from ocak.engines.llamacpp.scheduler import call_ends

    # a chat's last message (58 tokens) and the assistant header (5): one call
    assert call_ends(20, [20, 78, 83]) == [78, 83]
    # the system message (20) and the user's (58) would make 78 rows: apart
    assert call_ends(0, [20, 78, 83]) == [20]
    # a chunk of 64 or more is alone, and nothing joins it
    assert call_ends(0, [128, 130]) == [128]
    assert call_ends(0, [10, 20, 30, 63, 64]) == [10, 20, 30, 63]
