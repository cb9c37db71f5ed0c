"""A streamed chat answer as the Responses API's event stream, the sequence the OpenAI SDK's
`responses.stream()` consumes:

    response.created, response.in_progress,
    per output item: response.output_item.added,
        a message:       response.content_part.added, response.output_text.delta…,
                         response.output_text.done, response.content_part.done
        a function call: response.function_call_arguments.delta…, response.function_call_arguments.done
    response.output_item.done,
    response.completed (response.incomplete when the answer was cut at max_output_tokens).

Items are opened as their first delta arrives and closed, in output order, when the tier's stream
ends. A tier fault after the first byte ends the stream with `response.failed`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.apis.answer import Answer, AnswerStream, ToolCall
from gateway.apis.responses.shape import finish, function_call_item, message_item, new_id, output_logprobs, status_of
from gateway.sse import named_event
from gateway.upstream.backends import TierFault

Remember = Callable[[dict[str, Any], Answer], Awaitable[None]]


@dataclass(slots=True)
class _Events:
    sequence: int = 0

    def __call__(self, event_type: str, **fields: Any) -> bytes:
        data = {"type": event_type, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return named_event(event_type, data)


@dataclass(slots=True)
class _Item:
    """One output item while it streams."""

    item_id: str
    output_index: int
    call: ToolCall | None = None  # None: the message item
    logprobs: list[dict[str, Any]] = field(default_factory=list)


async def response_events(stream: AnswerStream, base: dict[str, Any], wants_logprobs: bool,
                          remember: Remember) -> AsyncGenerator[bytes, None]:
    events = _Events()
    yield events("response.created", response=base)
    yield events("response.in_progress", response=base)
    items: list[_Item] = []
    message: _Item | None = None
    calls: dict[int, _Item] = {}
    try:
        async for delta in stream.deltas():
            if delta.text:
                if message is None:
                    message = _Item(new_id("msg"), len(items))
                    items.append(message)
                    yield from_open(events, message)
                logprobs = output_logprobs(delta.logprobs) if wants_logprobs else []
                message.logprobs += logprobs
                yield events("response.output_text.delta", item_id=message.item_id,
                             output_index=message.output_index, content_index=0, delta=delta.text,
                             logprobs=logprobs)
            for call_delta in delta.tool_calls:
                item = calls.get(call_delta.index)
                if item is None:
                    call = ToolCall(call_delta.id or "", call_delta.name or "", "")
                    item = calls[call_delta.index] = _Item(new_id("fc"), len(items), call)
                    items.append(item)
                    yield events("response.output_item.added", output_index=item.output_index,
                                 item=function_call_item(item.item_id, call, "in_progress"))
                if call_delta.arguments:
                    yield events("response.function_call_arguments.delta", item_id=item.item_id,
                                 output_index=item.output_index, delta=call_delta.arguments)
    except TierFault as fault:
        failed = {**base, "status": "failed", "recserve": stream.summary(),
                  "error": {"code": "server_error", "message": f"the serving tier failed mid-stream: {fault}"}}
        yield events("response.failed", response=failed)
        return
    finally:
        await stream.close()
    answer = stream.answer()
    if message is None and not calls:
        message = _Item(new_id("msg"), 0)  # an empty answer is still one (empty) message
        items.append(message)
        yield from_open(events, message)
    incomplete = status_of(answer)[0] == "incomplete"
    output: list[dict[str, Any]] = []
    for item in items:
        if item.call is None:
            done = message_item(item.item_id, answer.text, item.logprobs if wants_logprobs else None,
                                "incomplete" if incomplete else "completed")
            part = done["content"][0]
            yield events("response.output_text.done", item_id=item.item_id, output_index=item.output_index,
                         content_index=0, text=answer.text, logprobs=item.logprobs)
            yield events("response.content_part.done", item_id=item.item_id, output_index=item.output_index,
                         content_index=0, part=part)
        else:
            call = next((c for c in answer.tool_calls if c.id == item.call.id), item.call)
            done = function_call_item(item.item_id, call, "completed")
            yield events("response.function_call_arguments.done", item_id=item.item_id,
                         output_index=item.output_index, name=call.name, arguments=call.arguments)
        output.append(done)
        yield events("response.output_item.done", output_index=item.output_index, item=done)
    final = finish(base, answer, output, stream.summary())
    stream.completed()
    await remember(final, answer)  # stored before the client hears it is done: it may continue at once
    yield events("response.incomplete" if incomplete else "response.completed", response=final)


def from_open(events: _Events, message: _Item) -> bytes:
    """The two events that open the message item and its one output_text part."""
    added = events("response.output_item.added", output_index=message.output_index,
                   item={"id": message.item_id, "type": "message", "status": "in_progress", "role": "assistant",
                         "content": []})
    part = events("response.content_part.added", item_id=message.item_id, output_index=message.output_index,
                  content_index=0, part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
    return added + part
