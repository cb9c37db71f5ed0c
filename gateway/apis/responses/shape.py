"""Response objects of the OpenAI Responses API, built from a chat answer.

The gateway's decision travels in a top-level `recserve` field of the Response (as in the last
chunk of a chat stream), not in `metadata`: `metadata` is the client's own (16 string values,
echoed back unchanged) and mixing ours into it would break clients that compare it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.apis.answer import Answer, ToolCall
from gateway.apis.responses.request import ResponsesRequest, echo_text, echo_tool_choice, echo_tools

# chat finish_reason → the Response's incomplete_details.reason
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def skeleton(request: ResponsesRequest, response_id: str, model: str) -> dict[str, Any]:
    """An in-progress Response: what `response.created` carries, and the base of the final object."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls if request.parallel_tool_calls is not None else True,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": request.store is not False,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": echo_text(request.text),
        "tool_choice": echo_tool_choice(request),
        "tools": echo_tools(request),
        "top_logprobs": request.top_logprobs if request.top_logprobs is not None else 0,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": request.truncation or "disabled",
        "usage": None,
        "user": request.user,
        "metadata": request.metadata or {},
    }


def output_logprobs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat logprob entries in the Responses layout (which requires `bytes` everywhere)."""
    return [_logprob(entry, with_top=True) for entry in entries]


def _logprob(entry: Mapping[str, Any], *, with_top: bool) -> dict[str, Any]:
    token = entry.get("token")
    token = token if isinstance(token, str) else ""
    given = entry.get("bytes")
    out: dict[str, Any] = {"token": token, "logprob": entry.get("logprob", 0.0),
                           "bytes": given if isinstance(given, list) else list(token.encode())}
    if with_top:
        top = entry.get("top_logprobs")
        out["top_logprobs"] = [_logprob(t, with_top=False) for t in top if isinstance(t, Mapping)] \
            if isinstance(top, list) else []
    return out


def message_item(item_id: str, text: str, logprobs: list[dict[str, Any]] | None, status: str) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}


def function_call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name,
            "arguments": call.arguments}


def status_of(answer: Answer) -> tuple[str, dict[str, str] | None]:
    reason = _INCOMPLETE.get(answer.finish_reason or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def usage(answer: Answer) -> dict[str, Any]:
    return {"input_tokens": answer.input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": answer.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": answer.input_tokens + answer.output_tokens}


def finish(base: Mapping[str, Any], answer: Answer, output: list[dict[str, Any]],
           summary: Mapping[str, Any]) -> dict[str, Any]:
    status, incomplete = status_of(answer)
    return {**base, "status": status, "incomplete_details": incomplete, "output": output,
            "usage": usage(answer), "recserve": dict(summary)}


def output_items(answer: Answer, wants_logprobs: bool) -> list[dict[str, Any]]:
    """A whole answer's output: its text as one message (when it has text or nothing else), then
    one function_call item per tool call."""
    status = "incomplete" if status_of(answer)[0] == "incomplete" else "completed"
    items: list[dict[str, Any]] = []
    if answer.text or not answer.tool_calls:
        items.append(message_item(new_id("msg"), answer.text,
                                  output_logprobs(answer.logprobs) if wants_logprobs else None, status))
    items += [function_call_item(new_id("fc"), call, "completed") for call in answer.tool_calls]
    return items


def transcript_turn(answer: Answer) -> dict[str, Any]:
    """The answer as the chat message a continued conversation sends tiers."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name,
                                                                              "arguments": c.arguments}}
                                 for c in answer.tool_calls]
    elif message["content"] is None:
        message["content"] = ""
    return message
