"""A chat or completion answer streamed to an OpenAI client: the serving tier's chunks shaped as the
client asked (logprobs, usage, `model`), a usage chunk when asked for and the tier sent none, and a
last chunk carrying the decision (`recserve`). A fault after the first byte ends the stream with an
OpenAI-style error event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import sse
from gateway.apis.shaping import shape_choice, wanted_top_logprobs
from gateway.cascade.climb import CascadeResult
from gateway.cascade.stream_tally import StreamTally, answer_body, served_problem
from gateway.protocol import Route
from gateway.telemetry.tokens import PromptTokens
from gateway.upstream.backends import TierFault, TierReply
from policies.base import Task
from policies.structure import Expectation, InvalidReason


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """How to render one streamed answer for the client."""

    result: CascadeResult
    route: Route
    raw: Mapping[str, Any]
    task: Task
    labels: Any
    summary: dict[str, Any]  # the `recserve` extension of the final chunk, completed at the end
    prompt_tokens: PromptTokens  # our count, for a tier that reports no usage
    # Metrics and access log; gets the tier's usage and the served answer's structure problem, if any.
    observe: Callable[[Mapping[str, Any] | None, str | None], None]
    on_complete: Callable[[Mapping[str, Any]], None] | None = None  # gets the whole answer (quality probes)
    # The most answer text (and tool-call text) kept for on_complete and the structure check; a longer
    # answer is neither compared nor judged (and not kept).
    max_answer_chars: int = 1 << 20
    expectation: Expectation | None = None  # the structure asked for: the served answer is judged at its end


async def client_events(plan: StreamPlan) -> AsyncIterator[bytes]:
    """The SSE bytes the client receives. A fault after the first byte ends the stream with an
    OpenAI-style error event; a client disconnect cancels this generator and closes the tier stream."""
    reply = plan.result.reply
    wanted = wanted_top_logprobs(plan.route, plan.raw)
    options = plan.raw.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    keep = plan.on_complete is not None or plan.expectation is not None
    tally = StreamTally(plan.max_answer_chars if keep else 0)
    model = plan.result.tier.served_model
    last: dict[str, Any] = {}
    observed = False
    invalid: InvalidReason | None = None

    def observe() -> None:
        nonlocal observed
        if not observed:
            observed = True
            # A tier that reported no usage: the answer tokens seen count as its completion tokens.
            plan.observe(tally.usage if tally.usage is not None else {"completion_tokens": tally.tokens}, invalid)

    try:
        async for chunk in _all_chunks(reply):
            tally.add(chunk)
            last = chunk
            shaped = _shape_chunk(chunk, wanted, include_usage, model)
            if shaped is not None:
                yield _encode(shaped)
        invalid = served_problem(plan.expectation, tally.message())
        if tally.usage is None:  # counted now, off the loop if large: the observer and the usage chunk read it
            await plan.prompt_tokens.count()
    except (TierFault, UnencodableChunk) as fault:
        code = "stream_timeout" if isinstance(fault, TierFault) and fault.kind == "timeout" else "stream_interrupted"
        yield sse.encode({"error": {"message": f"tier '{plan.result.tier.name}' failed mid-stream: {fault}",
                                    "type": "upstream_error", "param": None, "code": code}})
        return
    finally:
        observe()  # also when the client left mid-stream
        await reply.release()
    message = tally.message()
    if plan.on_complete is not None and message is not None:
        plan.on_complete(answer_body(message))  # starts background work only: the client is not held
    if include_usage and tally.usage is None:
        prompt = plan.prompt_tokens()
        yield sse.encode({**_envelope(last, model), "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": tally.tokens,
            "total_tokens": prompt + tally.tokens}})
    summary = dict(plan.summary)
    if plan.result.confidence is None and plan.result.reply.tail is not None:
        summary["confidence"] = tally.confidence(plan.task, plan.labels, structured=plan.expectation is not None)
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
