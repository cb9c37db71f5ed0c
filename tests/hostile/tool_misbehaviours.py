"""Hostile tool calls: answers to a request that offers tools, built to break or bloat the gateway's
rebuilding and checking of tool calls (gateway/cascade/stream_message.py, policies/structure.py).

Registered into `misbehaviours.BEHAVIOURS` on import (tests.hostile.hostile_tier imports this module).
"""

from __future__ import annotations

from typing import Any

from tests.hostile import payloads as p
from tests.hostile.misbehaviours import JSON, SSE, behaviour
from tests.hostile.wire import Exchange, chunk

# What the suite offers in the requests of these cases (tests.hostile.cases.Case.tools).
WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}
HUGE_ARGUMENTS = 60 * 1000 * 1000  # bytes of one call's arguments: far past the tier's body limit
FRAGMENT = 1000
MANY_CALLS = 1000  # distinct call indices: far past what an answer may carry (the harness keeps 512 KB)
CONFIDENT = {"content": [p.entry("get_weather", p.ANSWER_LOGPROB)]}


def _call_chunk(fragment: dict[str, Any]) -> bytes:
    return p.event(p.chunk({"tool_calls": [fragment]}, CONFIDENT))


def _message(calls: Any) -> dict[str, Any]:
    body = p.answer()
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


@behaviour
async def huge_tool_call(ex: Exchange, _: p.Payloads) -> bool:
    """One call whose arguments are 60 MB: one JSON string, or 60,000 fragments of 1 KB."""
    opening = {"index": 0, "id": "call_hostile", "type": "function",
               "function": {"name": "get_weather", "arguments": '{"city": "'}}
    if not ex.stream:
        body = p.dumps(_message([opening])).replace(b'{\\"city\\": \\"', b'{\\"city\\": \\"' + b"a" * HUGE_ARGUMENTS)
        await ex.whole(200, JSON, body, close=True)
        return False
    await ex.head(200, [("content-type", SSE), ("transfer-encoding", "chunked")])
    await ex.send(chunk(p.event(p.chunk({"role": "assistant", "content": None})) + _call_chunk(opening)))
    piece = _call_chunk({"index": 0, "function": {"arguments": "a" * FRAGMENT}})
    for _ in range(HUGE_ARGUMENTS // FRAGMENT):
        await ex.send(chunk(piece))
    await ex.send(chunk(_call_chunk({"index": 0, "function": {"arguments": '"}'}}) + p.DONE) + b"0\r\n\r\n")
    return False


@behaviour
async def many_tool_calls(ex: Exchange, _: p.Payloads) -> bool:
    """1,000 distinct calls, each valid on its own (one fragment each when streamed)."""
    calls = [{"index": i, "id": f"call_{i}", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}} for i in range(MANY_CALLS)]
    if not ex.stream:
        await ex.whole(200, JSON, p.dumps(_message(calls)))
    else:
        events = [p.event(p.chunk({"role": "assistant", "content": None})), *map(_call_chunk, calls),
                  p.event(p.chunk({}, None, "tool_calls")), p.event(p.usage_chunk()), p.DONE]
        await ex.whole(200, SSE, b"".join(events))
    return True


MALFORMED: list[Any] = [
    {"index": "0", "function": "get_weather"},
    {"index": -5, "id": 7, "function": {"name": ["get_weather"], "arguments": {"deep": [[[1]]]}}},
    {"index": 2, "function": {"name": "get_weather", "arguments": 12}},
    {"index": 3, "function": {"name": "get_weather", "arguments": '{"city": NaN}'}},
    {"index": 4, "function": None},
    7, None, "call", [],
]


@behaviour
async def malformed_tool_calls(ex: Exchange, _: p.Payloads) -> bool:
    """Tool calls of every wrong shape: indices that are strings or negative, names that are lists,
    arguments that are numbers or NaN, calls that are not objects."""
    if not ex.stream:
        await ex.whole(200, JSON, p.dumps(_message(MALFORMED)))
        return True
    events = [p.event(p.chunk({"role": "assistant", "content": None}))]
    events += [p.event(p.chunk({"tool_calls": [fragment]}, CONFIDENT)) for fragment in MALFORMED]
    events += [p.event(p.chunk({"tool_calls": "not a list"}, CONFIDENT)), p.event(p.chunk({}, None, "tool_calls")),
               p.DONE]
    await ex.whole(200, SSE, b"".join(events))
    return True
