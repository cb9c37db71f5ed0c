"""POST /v1/responses, GET and DELETE /v1/responses/{id}: the OpenAI Responses API over the cascade.

A Responses request is validated once as itself, becomes the chat body tiers are asked with
(`request.chat_body`), goes through the same pipeline as /v1/chat/completions (so the same model
names, extension, headers and decisions), and its answer is rendered back as a Response object or
event stream.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gateway.apis.answer import Answer, AnswerStream, ClosingEvents, whole_answer
from gateway.apis.replies import AnswerResponse, EventStreamResponse
from gateway.apis.responses.request import BRANCH_TAGS, ResponsesRequest, chat_body, input_messages
from gateway.apis.responses.shape import finish, new_id, output_items, skeleton, transcript_turn
from gateway.apis.responses.store import ConversationStore, StoredResponse
from gateway.apis.responses.stream import response_events
from gateway.apis.shaping import wanted_top_logprobs
from gateway.apis.validation import validate
from gateway.cascade.pipeline import serve
from gateway.cascade.runtime import Runtime
from gateway.errors import NotFound
from gateway.protocol import Admission, CascadeAsk

CONVERSATIONS_STATE = "conversations"  # app.state attribute holding the gateway.apis.responses.store.Conversations


def conversation_store(request: Request) -> ConversationStore:
    store: ConversationStore = getattr(request.app.state, CONVERSATIONS_STATE).store
    return store


async def create_response(request: Request, runtime: Runtime, admission: Admission) -> Response:
    parsed = validate(ResponsesRequest, admission.body, BRANCH_TAGS)
    store = conversation_store(request)
    owner = runtime.tenants.scope_of(admission.tenant)  # what the tenant stores, only it reads
    history: list[dict[str, Any]] = []
    if parsed.previous_response_id is not None:
        record = await store.get(owner, parsed.previous_response_id)
        if record is None:
            raise NotFound(f"Previous response with id '{parsed.previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        history = record.messages
    new = input_messages(parsed)
    system = [{"role": "system", "content": parsed.instructions}] if parsed.instructions else []
    chat_raw = chat_body(parsed, [*system, *history, *new])
    served = await serve(request, runtime, admission, "chat/completions", chat_raw,
                         CascadeAsk(parsed.model, parsed.stream is True, parsed.recserve, parsed.max_output_tokens))
    response_id = new_id("resp")
    base = skeleton(parsed, response_id, served.result.tier.served_model)
    wanted = wanted_top_logprobs("chat/completions", chat_raw)

    async def remember(final: dict[str, Any], answer: Answer) -> None:
        if parsed.store is not False:
            await store.put(owner, response_id, StoredResponse(final, [*history, *new, transcript_turn(answer)]))

    if parsed.stream:
        stream = AnswerStream(served, wanted)
        events = ClosingEvents(response_events(stream, base, parsed.wants_logprobs, remember), stream)
        return EventStreamResponse(events, headers={**served.headers, "cache-control": "no-cache"})
    answer = whole_answer(served.result.reply.body, wanted, served.cascade_request.prompt_tokens)
    final = finish(base, answer, output_items(answer, parsed.wants_logprobs), served.summary())
    await remember(final, answer)
    return AnswerResponse(final, headers=served.headers)


async def get_response(request: Request, runtime: Runtime, admission: Admission) -> Response:
    response_id: str = request.path_params["response_id"]
    record = await conversation_store(request).get(runtime.tenants.scope_of(admission.tenant), response_id)
    if record is None:
        raise _unknown(response_id)
    return AnswerResponse(record.response)


async def delete_response(request: Request, runtime: Runtime, admission: Admission) -> Response:
    response_id: str = request.path_params["response_id"]
    if not await conversation_store(request).delete(runtime.tenants.scope_of(admission.tenant), response_id):
        raise _unknown(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def _unknown(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id", code="not_found")
