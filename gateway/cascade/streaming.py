"""Streaming through the cascade.

`buffered` mode reads a lower tier's whole stream before the rule judges it; `early` mode judges
the first k tokens (in prefix windows of their own) and, when the tier keeps the request, streams
the rest live from it. The last tier is always piped through live. Either way the client sees the
text of one tier only: nothing is sent before the serving tier has produced its first chunk.

Structure is judged whole (see policies/structure.py): in `early` mode, a lower tier's stream is
read to its end once a tool-call delta appears, and a request whose answer must be a call or JSON
(`tool_choice` required or named, a `response_format`) is never committed early: its text is
structure, and a prefix of it cannot be valid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.cascade.climb import CascadeRequest, Tier, TierCall
from gateway.cascade.stream_tally import ChunkAccumulator
from gateway.upstream.backends import TierFault, TierReply, TierStream


async def _open(tier: Tier, request: CascadeRequest, timeout_s: float) -> TierStream:
    return await tier.backend.open_stream(request.route, request.body, timeout_s=timeout_s,
                                          headers=request.forward_headers)


async def _read_prefix(stream: TierStream, timeout_s: float, enough: Callable[[ChunkAccumulator], bool],
                       ) -> tuple[list[dict[str, Any]], ChunkAccumulator, bool]:
    """Chunks until `enough` says so or the stream ends; True when it ended."""
    chunks: list[dict[str, Any]] = []
    accumulator = ChunkAccumulator()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in stream.events:
                chunks.append(chunk)
                accumulator.add(chunk)
                if enough(accumulator):
                    return chunks, accumulator, False
    except TimeoutError:
        await stream.close()
        raise TierFault("timeout", f"stream timed out after {timeout_s:.3g}s") from None
    except BaseException:
        await stream.close()
        raise
    return chunks, accumulator, True


def _reply(stream: TierStream, chunks: list[dict[str, Any]], accumulator: ChunkAccumulator | None,
           ended: bool, deadline: float) -> TierReply:
    body = accumulator.body() if accumulator is not None else {}
    tail = None
    if not ended:
        # The rest is served live or closed: it is bounded by the request's deadline and kept in
        # constant memory (StreamTally), so the limit on buffered bytes no longer applies.
        stream.serve_live()
        tail = _until(deadline, stream.events)
    return TierReply(body, stream.headers, chunks=chunks, tail=tail, release=stream.close)


async def _until(deadline: float, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The events that arrive before `deadline` (time.monotonic); then a timeout fault."""
    while True:
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                event = await anext(events)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise TierFault("timeout", "the stream ran past server.request_timeout_s") from None
        yield event


async def _first_chunk(tier: Tier, request: CascadeRequest, timeout_s: float) -> TierReply:
    """The serving tier: wait for its first chunk (a fault before it can still be handled), then
    hand over the live rest."""
    stream = await _open(tier, request, timeout_s)
    chunks, _, ended = await _read_prefix(stream, timeout_s, lambda _: True)
    return _reply(stream, chunks, None, ended, request.deadline)


async def buffered_call(tier: Tier, request: CascadeRequest, timeout_s: float, final: bool) -> TierReply:
    if final:
        return await _first_chunk(tier, request, timeout_s)
    stream = await _open(tier, request, timeout_s)
    chunks, accumulator, _ = await _read_prefix(stream, timeout_s, _never)
    return _reply(stream, chunks, accumulator, True, request.deadline)


def early_call(decide_after_tokens: int) -> TierCall:
    def prefix_is_enough(accumulator: ChunkAccumulator) -> bool:
        # A call begun is read whole: its arguments are checked before anything is committed.
        return accumulator.tokens >= decide_after_tokens and not accumulator.has_tool_call

    async def call(tier: Tier, request: CascadeRequest, timeout_s: float, final: bool) -> TierReply:
        if final:
            return await _first_chunk(tier, request, timeout_s)
        stream = await _open(tier, request, timeout_s)
        expected = request.expectation
        whole = expected is not None and (expected.json_format or expected.wants_call)
        chunks, accumulator, ended = await _read_prefix(stream, timeout_s, _never if whole else prefix_is_enough)
        return _reply(stream, chunks, accumulator, ended, request.deadline)

    return call


def _never(_: ChunkAccumulator) -> bool:
    return False


def stream_body(body: dict[str, Any]) -> dict[str, Any]:
    """Tiers stream too, and always report usage so the gateway can count and pass it on."""
    return {**body, "stream": True, "stream_options": {"include_usage": True}}
