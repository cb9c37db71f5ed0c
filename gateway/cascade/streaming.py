"""Streaming through the cascade.

`buffered` mode reads a lower tier's whole stream before the rule judges it; `early` mode judges
the first k tokens (in prefix windows of their own) and, when the tier keeps the request, streams
the rest live from it. The last tier is always piped through live. Either way the client sees the
text of one tier only: nothing is sent before the serving tier has produced its first chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import sse
from gateway.cascade.climb import CascadeRequest, CascadeResult, Tier, TierCall
from gateway.cascade.shaping import shape_choice, wanted_top_logprobs
from gateway.cascade.stream_tally import ChunkAccumulator, StreamTally
from gateway.protocol import Route
from gateway.upstream.backends import TierFault, TierReply, TierStream
from policies.base import Task


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
    chunks, accumulator, _ = await _read_prefix(stream, timeout_s, lambda _: False)
    return _reply(stream, chunks, accumulator, True, request.deadline)


def early_call(decide_after_tokens: int) -> TierCall:
    async def call(tier: Tier, request: CascadeRequest, timeout_s: float, final: bool) -> TierReply:
        if final:
            return await _first_chunk(tier, request, timeout_s)
        stream = await _open(tier, request, timeout_s)
        chunks, accumulator, ended = await _read_prefix(
            stream, timeout_s, lambda acc: acc.tokens >= decide_after_tokens)
        return _reply(stream, chunks, accumulator, ended, request.deadline)

    return call


def stream_body(body: dict[str, Any]) -> dict[str, Any]:
    """Tiers stream too, and always report usage so the gateway can count and pass it on."""
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """How to render one streamed answer for the client."""

    result: CascadeResult
    route: Route
    raw: Mapping[str, Any]
    task: Task
    labels: Any
    summary: dict[str, Any]  # the `recserve` extension of the final chunk, completed at the end
    count_prompt_tokens: Callable[[], int]
    observe: Callable[[Mapping[str, Any] | None], None]  # metrics and access log; gets the tier's usage
    on_complete: Callable[[Mapping[str, Any]], None] | None = None  # gets the whole answer (quality probes)
    # The most answer text kept for on_complete; a longer answer is not compared (and not kept).
    max_answer_chars: int = 1 << 20


async def client_events(plan: StreamPlan) -> AsyncIterator[bytes]:
    """The SSE bytes the client receives. A fault after the first byte ends the stream with an
    OpenAI-style error event; a client disconnect cancels this generator and closes the tier stream."""
    reply = plan.result.reply
    wanted = wanted_top_logprobs(plan.route, plan.raw)
    options = plan.raw.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    tally = StreamTally(plan.max_answer_chars if plan.on_complete is not None else 0)
    model = plan.result.tier.served_model
    last: dict[str, Any] = {}
    observed = False

    def observe() -> None:
        nonlocal observed
        if not observed:
            observed = True
            # A tier that reported no usage: the answer tokens seen count as its completion tokens.
            plan.observe(tally.usage if tally.usage is not None else {"completion_tokens": tally.tokens})

    try:
        async for chunk in _all_chunks(reply):
            tally.add(chunk)
            last = chunk
            shaped = _shape_chunk(chunk, wanted, include_usage, model)
            if shaped is not None:
                yield _encode(shaped)
    except (TierFault, UnencodableChunk) as fault:
        code = "stream_timeout" if isinstance(fault, TierFault) and fault.kind == "timeout" else "stream_interrupted"
        yield sse.encode({"error": {"message": f"tier '{plan.result.tier.name}' failed mid-stream: {fault}",
                                    "type": "upstream_error", "param": None, "code": code}})
        return
    finally:
        observe()  # also when the client left mid-stream
        await reply.release()
    if plan.on_complete is not None and tally.text is not None:
        plan.on_complete(_answer_body(tally.text))  # starts background work only: the client is not held
    if include_usage and tally.usage is None:
        prompt = plan.count_prompt_tokens()
        yield sse.encode({**_envelope(last, model), "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": tally.tokens,
            "total_tokens": prompt + tally.tokens}})
    summary = dict(plan.summary)
    if plan.result.confidence is None and plan.result.reply.tail is not None:
        summary["confidence"] = tally.confidence(plan.task, plan.labels)
    yield sse.encode({**_envelope(last, model), "choices": [], "recserve": summary})
    yield sse.DONE


async def _all_chunks(reply: TierReply) -> AsyncIterator[dict[str, Any]]:
    for chunk in reply.chunks:
        yield chunk
    if reply.tail is not None:
        async for chunk in reply.tail:
            yield chunk


class UnencodableChunk(Exception):
    """A tier's chunk that cannot be written back as JSON (nested past what the encoder allows)."""


def _encode(chunk: dict[str, Any]) -> bytes:
    try:
        return sse.encode(chunk)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnencodableChunk("the tier sent a chunk that cannot be passed on") from exc


def _answer_body(text: str) -> dict[str, Any]:
    """The streamed answer as a non-streamed body, for whoever compares whole answers."""
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def _envelope(last: Mapping[str, Any], model: str) -> dict[str, Any]:
    return {"id": last.get("id", "recserve"), "object": last.get("object", "chat.completion.chunk"),
            "created": last.get("created", 0), "model": model}


def _shape_chunk(chunk: dict[str, Any], wanted: int | None, include_usage: bool,
                 model: str) -> dict[str, Any] | None:
    choices = chunk.get("choices")
    if not choices and chunk.get("usage") is not None and not include_usage:
        return None  # we asked the tier for usage; the client did not
    shaped = {**chunk, "model": model}
    if not include_usage:
        shaped.pop("usage", None)
    if isinstance(choices, list):
        shaped["choices"] = [shape_choice(c, wanted) for c in choices]
    return shaped


class EventStreamResponse(Response):
    """An SSE response that stops, and closes its source, as soon as the client disconnects.

    What Starlette's StreamingResponse does, with one plain task watching for the disconnect
    instead of an anyio task group: that group was a measurable share of a stream's cost before
    its first byte (bench/NOTES.md).
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        # Not Response.__init__: it renders an empty body and would announce content-length 0.
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streamer = asyncio.current_task()
        assert streamer is not None
        state = {"finished": False, "left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["finished"]:
                state["left"] = True
                streamer.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self._events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            state["finished"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["left"]:
                raise
            streamer.uncancel()  # the client left: there is no one to answer
        finally:
            state["finished"] = True
            watcher.cancel()
            await _close(self._events)


async def _close(events: AsyncIterator[bytes]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
