"""POST /v1/messages: the Anthropic Messages API over the cascade.

The request becomes a chat completion (`messages_request`) and goes through the same pipeline as
/v1/chat/completions: the same model names, extension, x-recserve-* headers and decisions. Clients
authenticate with `x-api-key` (Anthropic's header) or a bearer key; `anthropic-version` is accepted
and not needed. Every error this route raises leaves in Anthropic's shape.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.apis.answer import AnswerStream, ClosingEvents, whole_answer
from gateway.apis.messages.request import MessagesRequest, chat_body
from gateway.apis.messages.shape import error_body, message, message_events
from gateway.apis.openai.routes import AnswerResponse, admit
from gateway.cascade.pipeline import read_body, serve, validate
from gateway.cascade.runtime import Runtime
from gateway.cascade.streaming import EventStreamResponse
from gateway.errors import AuthenticationFailed, GatewayError
from gateway.protocol import ChatCompletionRequest
from gateway.server import openapi as openapi_doc
from gateway.server.intake import check_api_key

log = logging.getLogger("recserve.errors")
router = APIRouter(prefix="/v1")


def check_key(request: Request, keys: Sequence[str]) -> None:
    """Anthropic clients send `x-api-key`; a bearer key works too, as on every other route."""
    presented = request.headers.get("x-api-key")
    if presented is None:
        check_api_key(request, keys)
        return
    if not keys:
        return
    candidate = presented.strip().encode()
    matched = False
    for key in keys:  # constant time per key and over all keys, as check_api_key
        matched |= hmac.compare_digest(candidate, key.encode())
    if not matched:
        raise AuthenticationFailed("Incorrect API key provided.")


@router.post("/messages", **openapi_doc.MESSAGES)
async def create_message(request: Request) -> Response:
    try:
        return await _create_message(request)
    except GatewayError as error:
        request_id = getattr(request.state, "request_id", None)
        headers = dict(error.headers)
        if request_id:
            headers["x-request-id"] = request_id
        return JSONResponse(error_body(error, request_id), status_code=error.status, headers=headers)
    except Exception as exc:
        request_id = getattr(request.state, "request_id", None)
        log.error("unexpected error handling /v1/messages (request %s)", request_id, exc_info=exc)
        return JSONResponse(error_body(GatewayError(f"Internal error; request id {request_id}"), request_id),
                            status_code=500)


async def _create_message(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    admission = await admit(request, runtime, check_key)
    _, parsed = await read_body(request, runtime, MessagesRequest)
    chat_raw = chat_body(parsed)
    served = await serve(request, runtime, admission, "chat/completions", chat_raw,
                         validate(ChatCompletionRequest, chat_raw))
    model = served.result.tier.served_model
    if parsed.stream:
        stream = AnswerStream(served, None)
        events = ClosingEvents(message_events(stream, model), stream)
        return EventStreamResponse(events, headers={**served.headers, "cache-control": "no-cache"})
    answer = whole_answer(served.result.reply.body, None, served.cascade_request.count_prompt_tokens)
    return AnswerResponse(message(answer, model, served.summary()), headers=served.headers)
