"""The answer translations on their own (pure functions): cut-off answers, tool calls, usage."""

from __future__ import annotations

from typing import Any

from anthropic.types import Message
from openai.types.responses import Response

from gateway.apis.answer import whole_answer
from gateway.apis.messages.shape import message
from gateway.apis.responses.request import ResponsesRequest
from gateway.apis.responses.shape import finish, output_items, skeleton
from gateway.apis.validation import validate


def chat(finish_reason: str, content: str | None = "partial", tool_calls: Any = None,
         usage: Any = None) -> dict[str, Any]:
    msg = {"role": "assistant", "content": content, **({"tool_calls": tool_calls} if tool_calls else {})}
    return {"choices": [{"index": 0, "message": msg, "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage}


def as_response(body: dict[str, Any]) -> Response:
    request = validate(ResponsesRequest, {"model": "recserve", "input": "x", "max_output_tokens": 2})
    answer = whole_answer(body, None, lambda: 7)
    final = finish(skeleton(request, "resp_1", "m"), answer, output_items(answer, False), {"tier": "device"})
    return Response.model_validate(final)


def test_length_cut_is_incomplete_with_its_reason() -> None:
    response = as_response(chat("length", usage={"prompt_tokens": 3, "completion_tokens": 2}))
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (3, 2)
    assert message(whole_answer(chat("length"), None, lambda: 7), "m", {}).get("stop_reason") == "max_tokens"


def test_missing_usage_is_counted() -> None:
    response = as_response(chat("stop", usage=None))
    assert response.usage is not None and response.usage.input_tokens == 7 and response.status == "completed"


def test_tool_calls_without_text() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
             {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]
    response = as_response(chat("tool_calls", content=None, tool_calls=calls))
    assert [item.type for item in response.output] == ["function_call", "function_call"]
    anthropic_message = Message.model_validate(message(whole_answer(chat("tool_calls", None, calls), None,
                                                                     lambda: 1), "m", {}))
    assert anthropic_message.stop_reason == "tool_use"
    inputs = [block.input for block in anthropic_message.content if block.type == "tool_use"]
    assert inputs == [{"a": 1}, {"arguments": "not json"}]
