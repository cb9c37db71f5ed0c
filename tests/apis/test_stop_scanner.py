"""A streamed answer's stop sequences give the same answer as the whole text's, however the text is
cut into pieces: the same text passed on, the same sequence ending it, and nothing of a sequence
passed on before it is known not to be one."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.apis.messages.stops import StopScanner, stop_of

ALPHABET = "ab \n<>/"  # few characters, so sequences and their prefixes occur often
sequences = st.lists(st.text(ALPHABET, min_size=1, max_size=5), min_size=0, max_size=6)


@st.composite
def pieces(draw: st.DrawFn) -> list[str]:
    text = draw(st.text(ALPHABET, max_size=40))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=10)))
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


@settings(max_examples=2000, deadline=None)
@given(pieces(), sequences)
def test_a_stream_ends_where_the_whole_text_ends(parts: list[str], stops: list[str]) -> None:
    scanner = StopScanner(stops)
    passed = ""
    for part in parts:
        passed += scanner.feed(part)
        whole_so_far = stop_of(passed, stops, None)
        assert whole_so_far.stop_sequence is None or scanner.matched is not None  # never a sequence let through
        if scanner.matched is not None:
            break
    passed += scanner.flush()
    expected = stop_of("".join(parts), stops, None)
    assert (passed, scanner.matched) == (expected.text, expected.stop_sequence)


def test_text_that_cannot_begin_a_sequence_is_not_held() -> None:
    scanner = StopScanner(["\n\nHuman:"])
    assert scanner.feed("Hello there") == "Hello there"
    assert scanner.feed(" friend.\n") == " friend."  # the newline may begin the sequence: held
    assert scanner.feed("\nHuman: hi") == ""
    assert scanner.matched == "\n\nHuman:" and scanner.flush() == ""


def test_the_tiers_report_counts_only_for_the_clients_sequences() -> None:
    assert stop_of("done", ["###"], "###").stop_sequence == "###"
    assert stop_of("done", ["###"], "</s>").stop_sequence is None
    assert stop_of("a###b", ["###"], None) == stop_of("a###b", ["###"], "other")  # the text decides first
