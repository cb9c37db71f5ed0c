"""OpenAI's chat/completions, completions, models and embeddings: each takes a request that passed the
door (gateway/server/intake.py), validates its body once, and renders what the cascade served."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gateway.apis.openai.stream import StreamPlan, client_events
from gateway.apis.replies import AnswerResponse, EventStreamResponse
from gateway.apis.shaping import client_body
from gateway.apis.validation import validate
from gateway.cascade.pipeline import Served, serve
from gateway.cascade.runtime import Runtime
from gateway.errors import InvalidRequest, NotFound, UpstreamFailed
from gateway.protocol import Admission, CascadeAsk, ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Route
from gateway.upstream.backends import TierFault, TierRejected


async def chat_completions(request: Request, runtime: Runtime, admission: Admission) -> Response:
    return await _complete(request, runtime, admission, "chat/completions", ChatCompletionRequest)


async def completions(request: Request, runtime: Runtime, admission: Admission) -> Response:
    return await _complete(request, runtime, admission, "completions", CompletionRequest)


async def list_models(request: Request, runtime: Runtime, admission: Admission) -> Response:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "recserve"} for m in runtime.model_ids()]
    return JSONResponse({"object": "list", "data": data})


async def embeddings(request: Request, runtime: Runtime, admission: Admission) -> Response:
    """Forwarded to `embeddings_tier`, no cascade."""
    name = runtime.config.embeddings_tier
    if name is None:
        raise NotFound("No embeddings tier is configured (set `embeddings_tier`).", code="model_not_found")
    validate(EmbeddingRequest, admission.body)
    tier = next(t for t in runtime.tiers if t.config.name == name)
    try:
        reply = await tier.backend.send("embeddings", admission.body, timeout_s=tier.config.timeout_s, headers={})
    except TierFault as fault:
        raise UpstreamFailed(f"tier '{name}' failed: {fault.message}") from None
    except TierRejected as rejected:
        raise InvalidRequest(rejected.message, param=rejected.param, code=rejected.code) from None
    body = {**reply.body, "model": tier.config.served_model}
    return JSONResponse(body, headers={"x-recserve-tier": name, "x-request-id": admission.request_id})


async def _complete(request: Request, runtime: Runtime, admission: Admission, route: Route,
                    schema: type[ChatCompletionRequest] | type[CompletionRequest]) -> Response:
    raw = admission.body
    parsed = validate(schema, raw)
    served = await serve(request, runtime, admission, route, raw, CascadeAsk.of(parsed))
    if parsed.stream:
        return EventStreamResponse(client_events(_stream_plan(served, route, raw)),
                                   headers={**served.headers, "cache-control": "no-cache"})
    return AnswerResponse(client_body(served.result, route, raw), headers=served.headers)


def _stream_plan(served: Served, route: Route, raw: dict[str, object]) -> StreamPlan:
    return StreamPlan(served.result, route, raw, served.task, served.labels, served.summary(),
                      served.cascade_request.prompt_tokens, served.observe, served.probes,
                      expectation=served.cascade_request.expectation)
