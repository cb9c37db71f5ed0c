"""Hypothesis on everything that reads what a tier sent: logprob parsers and confidence estimators,
the stream accumulator and the SSE event parser. Arbitrary payloads never raise; a confidence is
always in [0, 1] or None ("no confidence", which escalates)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cascade.stream_tally import ChunkAccumulator
from gateway.sse import StreamBroken, parse_events
from policies.confidence import choice_confidence, parse_logprobs, response_confidence

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
ANY_FLOAT = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**6, 10**6) | st.text(max_size=3)
             | st.none())
TOKEN = st.text(max_size=6) | st.integers() | st.none()
TOP = st.lists(st.fixed_dictionaries({"token": TOKEN, "logprob": ANY_FLOAT}), max_size=5) | JSON
CHAT_LAYOUT = st.fixed_dictionaries({"content": st.lists(
    st.fixed_dictionaries({"token": TOKEN, "logprob": ANY_FLOAT, "top_logprobs": TOP}), max_size=6)})
LEGACY_LAYOUT = st.fixed_dictionaries({
    "tokens": st.lists(TOKEN, max_size=6), "token_logprobs": st.lists(ANY_FLOAT, max_size=6),
    "top_logprobs": st.lists(st.dictionaries(st.text(max_size=4), ANY_FLOAT, max_size=4) | st.none(), max_size=6)
    | JSON,
})
LOGPROBS = CHAT_LAYOUT | LEGACY_LAYOUT | JSON
LABELS = st.none() | st.lists(st.text(max_size=6), max_size=4)
TASKS = st.sampled_from(["classification", "generation"])


def _in_range(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and not math.isnan(value) and 0.0 <= value <= 1.0)


@settings(max_examples=400, deadline=None)
@given(LOGPROBS)
def test_parser_never_raises(payload: Any) -> None:
    tokens = parse_logprobs(payload)
    assert tokens is None or isinstance(tokens, list)


@settings(max_examples=400, deadline=None)
@given(TASKS, LOGPROBS, LABELS)
def test_choice_confidence_in_unit_interval_or_none(task: Any, payload: Any, labels: list[str] | None) -> None:
    assert _in_range(choice_confidence(task, payload, labels))


@settings(max_examples=300, deadline=None)
@given(TASKS, st.lists(st.fixed_dictionaries({"logprobs": LOGPROBS}) | JSON, max_size=3) | JSON, LABELS)
def test_response_confidence_in_unit_interval_or_none(task: Any, choices: Any, labels: list[str] | None) -> None:
    assert _in_range(response_confidence(task, choices, labels))


CHUNK = st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries(
    {"index": st.integers(-2, 3) | JSON, "delta": JSON, "logprobs": LOGPROBS | st.none()}), max_size=3) | JSON,
    "usage": JSON})


@settings(max_examples=300, deadline=None)
@given(st.lists(CHUNK | JSON.filter(lambda v: isinstance(v, dict)), max_size=6), TASKS, LABELS)
def test_stream_accumulator_never_raises(chunks: list[Any], task: Any, labels: list[str] | None) -> None:
    accumulator = ChunkAccumulator()
    for chunk in chunks:
        accumulator.add(chunk)
    assert accumulator.tokens >= 0
    assert _in_range(accumulator.confidence(task, labels))


async def _lines(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _parse(lines: list[str]) -> list[dict[str, Any]]:
    return [event async for event in parse_events(_lines(lines))]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30) | st.sampled_from(["data: [DONE]", "", "data: {}", 'data: {"error": 1}',
                                                         ": comment", "data: {\"a\": [1, 2]}"]), max_size=10))
def test_sse_parser_yields_objects_or_says_broken(lines: list[str]) -> None:
    try:
        events = asyncio.run(_parse(lines))
    except StreamBroken:
        return
    assert all(isinstance(event, dict) and "error" not in event for event in events)
