"""POST /v1/messages: the Anthropic Messages API over the cascade; POST /v1/messages/count_tokens
(gateway/apis/messages/count.py).

The request is validated once as itself, becomes the chat body tiers are asked with
(`request.chat_body`) and goes through the same pipeline as /v1/chat/completions: the same model
names, extension, x-recserve-* headers and decisions. Clients authenticate with `x-api-key`
(Anthropic's header) or a bearer key; `anthropic-version` is accepted and not needed. Every error
under /v1/messages leaves in Anthropic's shape (`error_reply`, which the doors and the app's error
handlers render with), an unknown route or a wrong method included.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gateway.apis.answer import AnswerStream, ClosingEvents, whole_answer
from gateway.apis.messages.count import count_tokens
from gateway.apis.messages.request import MessagesRequest, chat_body
from gateway.apis.messages.shape import error_body, message, message_events
from gateway.apis.replies import AnswerResponse, EventStreamResponse
from gateway.apis.validation import validate
from gateway.cascade.pipeline import serve
from gateway.cascade.runtime import Runtime
from gateway.errors import GatewayError
from gateway.protocol import Admission, CascadeAsk

__all__ = ["count_tokens", "create_message", "error_reply"]


def error_reply(error: GatewayError, request_id: str | None) -> Response:
    """An error as Anthropic's API sends it."""
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return JSONResponse(error_body(error, request_id), status_code=error.status, headers=headers)


async def create_message(request: Request, runtime: Runtime, admission: Admission) -> Response:
    parsed = validate(MessagesRequest, admission.body)
    chat_raw = chat_body(parsed)
    served = await serve(request, runtime, admission, "chat/completions", chat_raw,
                         CascadeAsk(parsed.model, parsed.stream is True, parsed.recserve, parsed.max_tokens))
    model = served.result.tier.served_model
    stops = parsed.stop_sequences or ()
    if parsed.stream:
        stream = AnswerStream(served, None)
        events = ClosingEvents(message_events(stream, model, stops), stream)
        return EventStreamResponse(events, headers={**served.headers, "cache-control": "no-cache"})
    answer = whole_answer(served.result.reply.body, None, served.cascade_request.prompt_tokens)
    return AnswerResponse(message(answer, model, served.summary(), stops), headers=served.headers)
