"""Stop sequences and UTF-8 safe streaming, piece by piece."""

from __future__ import annotations

import random

from ocak.engines.text import StopMatcher, Utf8Stream


def feed_all(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = ""
    for p in pieces:
        out += m.feed(p)
        if m.stopped:
            return out, True
    return out + m.flush(), False


def test_stop_split_across_pieces_is_found_and_not_emitted() -> None:
    assert feed_all(["END"], ["Hello E", "N", "D more"]) == ("Hello ", True)


def test_partial_match_that_turns_out_not_to_be_a_stop_is_emitted() -> None:
    assert feed_all(["END"], ["Hello EN", "ough"]) == ("Hello ENough", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(["b", "a"], ["xxab"]) == ("xx", True)


def test_the_matched_stop_is_the_earliest_in_the_text_not_the_first_listed() -> None:
    m = StopMatcher(["later", "b", "a"])
    assert m.matched is None
    assert m.feed("xxab later") == "xx" and m.matched == "a"


def test_text_held_back_is_flushed_at_the_end() -> None:
    assert feed_all(["STOP"], ["abc", "ST"]) == ("abcST", False)


def test_no_stops_passes_everything_through() -> None:
    m = StopMatcher([])
    assert m.feed("abc") == "abc"


def test_random_splits_give_the_same_result() -> None:
    text = "The quick brown fox jumps over the lazy dog. THE END. Not this."
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), 6))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        expected = ("The quick brown fox jumps over the lazy dog.", True)
        assert feed_all([" THE END"], pieces) == expected


def test_utf8_stream_never_splits_characters() -> None:
    data = "Çağrı ığdır şöyle 🙂🎉 ok".encode()
    for step in range(1, 5):
        u = Utf8Stream()
        pieces = [u.feed(data[i : i + step]) for i in range(0, len(data), step)]
        pieces.append(u.flush())
        assert all("\ufffd" not in p for p in pieces)
        assert "".join(pieces) == data.decode()


def test_utf8_stream_replaces_truly_invalid_bytes_at_the_end() -> None:
    u = Utf8Stream()
    assert u.feed(b"ok\xf0\x9f") == "ok"
    assert u.flush() == "\ufffd"
