"""Which of a client's `stop_sequences` ended an answer (Anthropic's `stop_reason: "stop_sequence"` and
`stop_sequence`), and the sequences a tier was not sent, applied here.

An OpenAI-compatible tier stops on its `stop` entries and drops the matched one from its text, saying
only `finish_reason: "stop"`: the same as for the end of its turn. So the rule, in this order:

1. The answer's text holds one of the sequences: the first one completed as the text is read ends
   the answer (two completed by the same character: the longer; then the one listed first), the text
   is cut before it and it is the `stop_sequence`. That is how the sequences a tier does not take
   (past OpenAI's four) take effect, and how a tier that keeps the matched sequence in its text is
   read. A stream is cut at the same place, however its text comes in pieces.
2. The tier names the sequence it stopped on and it is one of the client's: llama-server when asked
   (gateway/upstream/llama_stops.py), vLLM's `stop_reason`, SGLang's `matched_stop`.
3. Otherwise `finish_reason: "stop"` is `end_turn`.

A stream passes text on only once no sequence can begin in it (`StopScanner`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stop:
    """How an answer ended, as Anthropic says it, and its text up to that point."""

    text: str
    stop_sequence: str | None  # None: the answer did not end on one of the client's sequences


def first_stop(text: str, sequences: Sequence[str]) -> tuple[int, str] | None:
    """The first of `sequences` completed in `text`, by the rule above: (where it starts, which)."""
    found: tuple[int, int, str] | None = None  # (where it ends, where it starts, which)
    for sequence in sequences:
        at = text.find(sequence)
        if at < 0:
            continue
        end = at + len(sequence)
        if found is None or (end, at) < found[:2]:
            found = (end, at, sequence)
    return (found[1], found[2]) if found is not None else None


def stop_of(text: str, sequences: Sequence[str], reported: str | None) -> Stop:
    """A whole answer's text and the stop sequence that ended it, by the rule above."""
    found = first_stop(text, sequences) if sequences else None
    if found is not None:
        return Stop(text[:found[0]], found[1])
    return Stop(text, reported if reported is not None and reported in sequences else None)


class StopScanner:
    """A stream's text with the client's stop sequences applied: text passes on once no sequence can
    begin in it; the first sequence completed ends the answer.

    What is held back is at most the longest sequence less one character, and only from the first
    character that could begin a sequence: a stream whose text never has one is never held up."""

    def __init__(self, sequences: Sequence[str]) -> None:
        self._sequences = list(sequences)
        self._reach = max((len(s) for s in self._sequences), default=1) - 1
        self._starts = re.compile("[" + "".join(re.escape(s[0]) for s in self._sequences if s) + "]") \
            if self._sequences else None
        self._held = ""
        self.matched: str | None = None  # the sequence that ended the answer, once one has

    def feed(self, text: str) -> str:
        """The text that may be passed on now; once a sequence has ended the answer, nothing more."""
        if self.matched is not None:
            return ""
        pending = self._held + text
        found = first_stop(pending, self._sequences)
        if found is not None:
            self.matched, self._held = found[1], ""
            return pending[:found[0]]
        keep_from = len(pending)
        if self._starts is not None and self._reach:
            start = self._starts.search(pending, max(len(pending) - self._reach, 0))
            if start is not None:
                keep_from = start.start()
        self._held = pending[keep_from:]
        return pending[:keep_from]

    def flush(self) -> str:
        """The text still held when the stream ends: no sequence completed in it."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held
