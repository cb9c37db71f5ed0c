"""A streamed answer rebuilt as the message a whole answer carries (content and tool calls from
`delta.tool_calls` fragments), bounded, in the buffered accumulator and the live tally alike."""

from __future__ import annotations

import math
from typing import Any

from gateway.cascade.stream_message import MessageBuilder
from gateway.cascade.stream_tally import ChunkAccumulator, StreamTally, answer_body, served_problem
from policies.structure import MAX_CALLS, expectation_of, problem

TOOLS = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]}


def chunk(delta: dict[str, Any], index: int = 0) -> dict[str, Any]:
    token = {"token": "t", "logprob": -0.1, "top_logprobs": []}
    return {"choices": [{"index": index, "delta": delta, "logprobs": {"content": [token]}}]}


def fragment(index: Any, name: str | None = None, arguments: str | None = None, **extra: Any) -> dict[str, Any]:
    function = {key: value for key, value in (("name", name), ("arguments", arguments)) if value is not None}
    return {"tool_calls": [{"index": index, "function": function, **extra}]}


CALL_STREAM = [
    {"role": "assistant", "content": None},
    fragment(0, "get_weather", "", id="call_a", type="function"),
    fragment(0, arguments='{"ci'), fragment(0, arguments='ty": "Os'), fragment(0, arguments='lo"}'),
    fragment(1, "get_weather", '{"city": "Rome"}', id="call_b"),
]


def test_fragments_are_joined_by_index() -> None:
    accumulator = ChunkAccumulator()
    for delta in CALL_STREAM:
        accumulator.add(chunk(delta))
    message = accumulator.body()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}
    assert accumulator.has_tool_call and accumulator.tokens == len(CALL_STREAM)
    expectation = expectation_of(TOOLS)
    assert expectation is not None and problem(expectation, accumulator.body()["choices"]) is None


def test_text_and_every_choice_are_rebuilt() -> None:
    accumulator = ChunkAccumulator()
    for text in ("Hello", ", world"):
        accumulator.add(chunk({"content": text}))
    accumulator.add(chunk({"content": "other"}, index=1))
    choices = accumulator.body()["choices"]
    assert [c["message"]["content"] for c in choices] == ["Hello, world", "other"]
    assert not accumulator.has_tool_call


def test_fragments_without_a_usable_index_continue_the_last_call() -> None:
    builder = MessageBuilder(1000)
    builder.add({"tool_calls": [{"id": "c", "function": {"name": "get_weather", "arguments": '{"city":'}}]})
    builder.add({"tool_calls": [{"index": "0", "function": {"arguments": ' "Oslo"}'}}]})
    builder.add({"tool_calls": [7, None, {"index": True, "function": []}]})
    message = builder.message()
    assert message is not None and message["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'


def test_a_message_past_its_bound_is_cut_and_never_valid() -> None:
    accumulator = ChunkAccumulator()
    builder = MessageBuilder(64)
    builder.add(fragment(0, "get_weather", "{" + '"city": "' + "a" * 100 + '"}'))
    assert builder.cut and builder.message() is None
    accumulator.messages[0] = builder
    accumulator.logprobs[0] = {}
    expectation = expectation_of(TOOLS)
    assert expectation is not None
    assert problem(expectation, accumulator.body()["choices"]) == "invalid_tool_call"


def test_too_many_calls_are_cut() -> None:
    builder = MessageBuilder(1 << 20)
    for index in range(MAX_CALLS + 5):
        builder.add(fragment(index, "get_weather", '{"city": "x"}'))
    assert builder.cut and builder.message() is None


def test_the_live_tally_keeps_the_calls_for_whoever_compares_whole_answers() -> None:
    tally = StreamTally(max_text_chars=1 << 20)
    for delta in CALL_STREAM:
        tally.add(chunk(delta))
    message = tally.message()
    assert message is not None
    body = answer_body(message)
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    assert tally.text == ""  # a call's message has no content
    assert served_problem(expectation_of(TOOLS), message) is None
    assert served_problem(expectation_of({**TOOLS, "tool_choice": "none"}), message) == "unexpected_tool_call"
    assert served_problem(None, message) is None


def test_a_tally_that_keeps_nothing_costs_nothing() -> None:
    tally = StreamTally(max_text_chars=0)
    tally.add(chunk({"content": "hi"}))
    assert tally.message() is None and tally.text is None


def test_the_live_tally_judges_a_structured_answer_as_the_whole_answer_is_judged() -> None:
    """A pinned tool stream reports the confidence a buffered one would: the answer's probability."""
    accumulator, tally = ChunkAccumulator(), StreamTally(max_text_chars=0)
    for delta in CALL_STREAM:
        accumulator.add(chunk(delta))
        tally.add(chunk(delta))
    structured = tally.confidence("generation", None, structured=True)
    assert structured == accumulator.confidence("generation", None, structured=True)
    assert structured is not None and abs(structured - math.exp(-0.1 * len(CALL_STREAM))) < 1e-12
    # Judged as text, the same tokens score their mean: a different (higher) number.
    assert tally.confidence("generation", None) == accumulator.confidence("generation", None)
    assert abs(tally.confidence("generation", None) - math.exp(-0.1)) < 1e-12  # type: ignore[operator]
