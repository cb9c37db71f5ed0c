"""Anthropic Messages API answers built from a chat answer: the Message object, its event stream
(message_start, content_block_start/delta/stop per block, message_delta, message_stop), and the
Anthropic error shape.

The gateway's decision travels in a top-level `recserve` field of the Message and of the stream's
`message_delta` event (the event that closes the answer), besides the x-recserve-* headers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from gateway.apis.answer import Answer, AnswerStream, ToolCall
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


def _stop_reason(answer: Answer) -> str:
    if answer.tool_calls:
        return "tool_use"
    return _STOP_REASONS.get(answer.finish_reason or "stop", "end_turn")


def message(answer: Answer, model: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.text or not answer.tool_calls:
        content.append({"type": "text", "text": answer.text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c)} for c in answer.tool_calls]
    return {"id": message_id(), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": _stop_reason(answer), "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
            "recserve": dict(summary)}


async def message_events(stream: AnswerStream, model: str) -> AsyncGenerator[bytes, None]:
    """The Anthropic event stream of a streamed chat answer. Blocks open as their first delta
    arrives; a block is stopped when the next one opens (Anthropic streams blocks one at a time)."""
    # Input tokens are known only at the end (the tier's usage): message_delta carries the count.
    start: dict[str, Any] = {"id": message_id(), "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
    yield named_event("message_start", {"type": "message_start", "message": start})
    index = -1
    open_block: tuple[str, int] | None = None  # ("text", -1) or ("tool", the chat tool-call index)
    try:
        async for delta in stream.deltas():
            if delta.text:
                if open_block != ("text", -1):
                    if open_block is not None:
                        yield _stop(index)
                    index, open_block = index + 1, ("text", -1)
                    yield named_event("content_block_start", {"type": "content_block_start", "index": index,
                                                              "content_block": {"type": "text", "text": ""}})
                yield named_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                          "delta": {"type": "text_delta", "text": delta.text}})
            for call in delta.tool_calls:
                if open_block != ("tool", call.index):
                    if open_block is not None:
                        yield _stop(index)
                    index, open_block = index + 1, ("tool", call.index)
                    block = {"type": "tool_use", "id": call.id or "", "name": call.name or "", "input": {}}
                    yield named_event("content_block_start", {"type": "content_block_start", "index": index,
                                                              "content_block": block})
                if call.arguments:
                    yield named_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                              "delta": {"type": "input_json_delta",
                                                                        "partial_json": call.arguments}})
    except TierFault as fault:
        error = {"type": "error", "error": {"type": "api_error",
                                            "message": f"the serving tier failed mid-stream: {fault}"}}
        yield named_event("error", error)
        return
    finally:
        await stream.close()
    if open_block is None:  # an empty answer is still one (empty) text block
        index = 0
        yield named_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                  "content_block": {"type": "text", "text": ""}})
    yield _stop(index)
    answer = stream.answer()
    stream.completed()
    yield named_event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None},
        "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
        "recserve": stream.summary()})
    yield named_event("message_stop", {"type": "message_stop"})


def _stop(index: int) -> bytes:
    return named_event("content_block_stop", {"type": "content_block_stop", "index": index})
