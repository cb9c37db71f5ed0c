"""`tiers[].limits.max_json_containers`: the JSON objects and arrays a tier's answer may hold, counted
before parsing (each costs event-loop time, however small). Through the real backend, against a raw
server on loopback that answers fixed bytes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from gateway.config.schema import TierConfig, TierLimits
from gateway.upstream.backends import OpenAICompatibleBackend, TierFault, json_containers
from tests.upstream.test_http1 import Peer, serve

BOUND = 1000
ROUTE = "chat/completions"


def answer(containers: int) -> bytes:
    """A chat.completion holding `containers` JSON objects and arrays in all (logprobs content of `[]`)."""
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "logprobs": {"content": "@"}, "finish_reason": "stop"}]}
    own = json_containers(json.dumps(body).encode())
    return json.dumps(body).encode().replace(b'"@"', b"[" + b"[]," * (containers - own - 2) + b"[]]")


def event(arrays: int) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": "@"}}]}
    return b"data: " + json.dumps(chunk).encode().replace(b'"@"', b"[" + b"[]," * (arrays - 1) + b"[]]") + b"\n\n"


def response(status: int, content_type: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode() + body


@contextlib.asynccontextmanager
async def tier(raw: bytes) -> AsyncIterator[OpenAICompatibleBackend]:
    """A backend for a tier that answers every request with `raw`."""

    async def answer_raw(peer: Peer) -> None:
        while await peer.next_request() is not None:
            await peer.write(raw)

    async with serve(answer_raw) as server:
        backend = OpenAICompatibleBackend(TierConfig(name="t", base_url=server.url(), model="m",
                                                     limits=TierLimits(max_json_containers=BOUND)))
        try:
            yield backend
        finally:
            await backend.aclose()


async def test_a_whole_answer_at_the_bound_is_parsed_and_one_over_it_is_a_limit_fault() -> None:
    async with tier(response(200, "application/json", answer(BOUND))) as backend:
        reply = await backend.send(ROUTE, {"messages": []}, timeout_s=5, headers={})
        assert len(reply.body["choices"][0]["logprobs"]["content"]) > BOUND - 10
    async with tier(response(200, "application/json", answer(BOUND + 1))) as backend:
        with pytest.raises(TierFault) as fault:
            await backend.send(ROUTE, {"messages": []}, timeout_s=5, headers={})
    assert fault.value.kind == "limit" and str(BOUND) in fault.value.message


async def test_the_bound_is_checked_before_parsing() -> None:
    """Not even JSON: over the bound it is a limit fault, not an invalid answer (never parsed)."""
    async with tier(response(200, "application/json", b"[" * (BOUND + 1))) as backend:
        with pytest.raises(TierFault) as fault:
            await backend.send(ROUTE, {"messages": []}, timeout_s=5, headers={})
    assert fault.value.kind == "limit"


async def test_a_buffered_stream_is_bounded_in_total_and_a_live_one_is_not() -> None:
    body = event(400) * 3 + b"data: [DONE]\n\n"  # 1,200 arrays and a few objects: over the bound in total
    raw = response(200, "text/event-stream", body)
    async with tier(raw) as backend:
        stream = await backend.open_stream(ROUTE, {"messages": [], "stream": True}, timeout_s=5, headers={})
        with pytest.raises(TierFault) as fault:
            _ = [chunk async for chunk in stream.events]
        await stream.close()
    assert fault.value.kind == "limit"
    async with tier(raw) as backend:
        stream = await backend.open_stream(ROUTE, {"messages": [], "stream": True}, timeout_s=5, headers={})
        first = await anext(stream.events)
        stream.serve_live()  # the rest goes to the client as it comes: bounded in time, not kept
        rest = [chunk async for chunk in stream.events]
        await stream.close()
    assert len([first, *rest]) == 3


async def test_an_error_body_with_many_containers_is_reported_by_its_status_alone() -> None:
    error = json.dumps({"error": {"message": "tier says no", "code": "nope"}, "x": "@"}).encode()
    crowded = error.replace(b'"@"', b"[" + b"[]," * 20_000 + b"[]]")
    async with tier(response(500, "application/json", crowded)) as backend:
        with pytest.raises(TierFault) as fault:
            await backend.send(ROUTE, {"messages": []}, timeout_s=5, headers={})
    assert fault.value.message == "HTTP 500"
    async with tier(response(500, "application/json", error)) as backend:
        with pytest.raises(TierFault) as fault:
            await backend.send(ROUTE, {"messages": []}, timeout_s=5, headers={})
    assert fault.value.message == "HTTP 500: tier says no"
