"""Where the values are in a JSON answer: the character spans of its scalar values (strings, numbers,
booleans, null), without object keys, punctuation or whitespace. The structured confidence
estimators read the logprobs of the tokens over these spans only, because under a JSON-schema
constraint everything else (braces, quotes, keys, the wrapper) is forced and carries no decision.

Pure; never raises on any text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# A JSON number or literal, anchored where a value starts (the text is already known to be JSON).
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")
_WHITESPACE = " \t\n\r"


@dataclass(frozen=True, slots=True)
class Span:
    """Characters [start, end) of the text."""

    start: int
    end: int


class _NotJson(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise _NotJson(name)  # NaN and Infinity: accepted by json.loads, not JSON


# A Markdown code fence around the JSON, as llama.cpp's constrained tool calls are written (and as
# small models write JSON anyway): ```json\n ... \n```.
_FENCED = re.compile(r"\s*```[A-Za-z]*\s*\n(.*?)\s*```\s*", re.DOTALL)


def value_spans(text: str) -> list[Span] | None:
    """The spans of the scalar values in `text`, in order; None when `text` is not one JSON value, bare
    or in one Markdown code fence.

    A string's span is its content between the quotes: the opening quote is forced once a string is
    due, and the closing one is mostly written with the punctuation after it (`",`, `"}`). An empty
    string's span is its closing quote, the one character that says "nothing here".
    """
    fenced = _FENCED.fullmatch(text)
    start, body = (fenced.start(1), fenced[1]) if fenced else (0, text)
    try:
        json.loads(body, parse_constant=_reject_constant)
    except (_NotJson, ValueError, TypeError, RecursionError):
        return None
    return [Span(span.start + start, span.end + start) for span in _scan(body)]


def _scan(text: str) -> list[Span]:
    """One pass over text known to be JSON: a string followed by `:` is a key, any other string,
    number or literal is a value. Flat, so nesting depth costs nothing."""
    spans: list[Span] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = _string_end(text, i)
            if not _followed_by_colon(text, end + 1):
                spans.append(Span(i + 1, end) if end > i + 1 else Span(end, end + 1))
            i = end + 1
            continue
        match = _SCALAR.match(text, i) if char not in _WHITESPACE and char not in "{}[],:" else None
        if match is not None:
            spans.append(Span(match.start(), match.end()))
            i = match.end()
        else:
            i += 1
    return spans


def _string_end(text: str, opening: int) -> int:
    """Index of the quote closing the string opened at `opening` (or the text's end, defensively)."""
    i = opening + 1
    while i < len(text) and text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return min(i, len(text))


def _followed_by_colon(text: str, i: int) -> bool:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i < len(text) and text[i] == ":"
