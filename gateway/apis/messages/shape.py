"""Anthropic Messages API answers built from a chat answer: the Message object, its event stream
(message_start, content_block_start/delta/stop per block, message_delta, message_stop), and the
Anthropic error shape.

The gateway's decision travels in a top-level `recserve` field of the Message and of the stream's
`message_delta` event (the event that closes the answer), besides the x-recserve-* headers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from gateway.apis.answer import Answer, AnswerStream, ToolCall, ToolCallDelta
from gateway.apis.messages.stops import Stop, StopScanner, stop_of
from gateway.errors import GatewayError
from gateway.sse import named_event
from gateway.upstream.backends import TierFault

# chat finish_reason → Anthropic stop_reason
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}
# HTTP status → Anthropic error type (https://docs.anthropic.com/en/api/errors)
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
                504: "timeout_error"}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def error_body(error: GatewayError, request_id: str | None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(error.status, "invalid_request_error" if error.status < 500 else "api_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    if request_id:
        body["request_id"] = request_id
    return body


def _tool_input(call: ToolCall) -> dict[str, Any]:
    # Anthropic carries tool input as an object; a tier's unparseable arguments are kept as text.
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return {"arguments": call.arguments}
    return value if isinstance(value, dict) else {"value": value}


def _stop_reason(answer: Answer, stop: Stop) -> str:
    if answer.tool_calls:
        return "tool_use"
    if stop.stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS.get(answer.finish_reason or "stop", "end_turn")


def _reported(answer: Answer) -> str | None:
    """The stop sequence the tier named, when it stopped on one (not when it ran out of tokens)."""
    return answer.stopped_on if answer.finish_reason in ("stop", None) else None


def message(answer: Answer, model: str, summary: Mapping[str, Any], stop_sequences: Sequence[str] = ()) -> dict[
        str, Any]:
    stop = stop_of(answer.text, stop_sequences, _reported(answer))
    content: list[dict[str, Any]] = []
    if stop.text or not answer.tool_calls:
        content.append({"type": "text", "text": stop.text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c)} for c in answer.tool_calls]
    return {"id": message_id(), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": _stop_reason(answer, stop), "stop_sequence": stop.stop_sequence,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
            "recserve": dict(summary)}


class _Blocks:
    """The content blocks of a streamed answer. A block opens as its first delta arrives and is stopped
    when the next one opens: Anthropic streams blocks one at a time."""

    def __init__(self) -> None:
        self.index = -1
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", the chat tool-call index)

    def text(self, text: str) -> list[bytes]:
        events = self._switch(("text", -1), {"type": "text", "text": ""})
        events.append(named_event("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                          "delta": {"type": "text_delta", "text": text}}))
        return events

    def tool(self, call: ToolCallDelta) -> list[bytes]:
        block = {"type": "tool_use", "id": call.id or "", "name": call.name or "", "input": {}}
        events = self._switch(("tool", call.index), block)
        if call.arguments:
            events.append(named_event("content_block_delta", {
                "type": "content_block_delta", "index": self.index,
                "delta": {"type": "input_json_delta", "partial_json": call.arguments}}))
        return events

    def end(self) -> list[bytes]:
        """Stop the last block; an empty answer is still one (empty) text block."""
        events = self._switch(("text", -1), {"type": "text", "text": ""}) if self._open is None else []
        return [*events, _stop(self.index)]

    def _switch(self, block: tuple[str, int], start: dict[str, Any]) -> list[bytes]:
        if self._open == block:
            return []
        events = [_stop(self.index)] if self._open is not None else []
        self.index, self._open = self.index + 1, block
        events.append(named_event("content_block_start", {"type": "content_block_start", "index": self.index,
                                                          "content_block": start}))
        return events


async def message_events(stream: AnswerStream, model: str,
                         stop_sequences: Sequence[str] = ()) -> AsyncGenerator[bytes, None]:
    """The Anthropic event stream of a streamed chat answer. The client's stop sequences are applied
    to the text as it passes (gateway/apis/messages/stops.py): one completed ends the answer there,
    and the tier's stream is closed, so it stops generating."""
    # Input tokens are known only at the end (the tier's usage): message_delta carries the count.
    start: dict[str, Any] = {"id": message_id(), "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
    yield named_event("message_start", {"type": "message_start", "message": start})
    blocks = _Blocks()
    scanner = StopScanner(stop_sequences)
    try:
        async with aclosing(stream.deltas()) as deltas:
            async for delta in deltas:
                text = scanner.feed(delta.text) if delta.text else ""
                for event in blocks.text(text) if text else ():
                    yield event
                if scanner.matched is not None:
                    break
                for call in delta.tool_calls:
                    for event in blocks.tool(call):
                        yield event
    except TierFault as fault:
        error = {"type": "error", "error": {"type": "api_error",
                                            "message": f"the serving tier failed mid-stream: {fault}"}}
        yield named_event("error", error)
        return
    finally:
        await stream.close()
    rest = scanner.flush()
    for event in [*(blocks.text(rest) if rest else ()), *blocks.end()]:
        yield event
    answer = stream.answer()
    reported = _reported(answer)
    stop = Stop("", scanner.matched or (reported if reported in stop_sequences else None))
    stream.completed()
    yield named_event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": _stop_reason(answer, stop),
                                           "stop_sequence": stop.stop_sequence},
        "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
        "recserve": stream.summary()})
    yield named_event("message_stop", {"type": "message_stop"})


def _stop(index: int) -> bytes:
    return named_event("content_block_stop", {"type": "content_block_stop", "index": index})
