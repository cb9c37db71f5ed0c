"""The /v1 routes: thin adapters from HTTP to the cascade and back."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from gateway import jsonio
from gateway.backends import LOOP_STATUS, TierFault, TierRejected
from gateway.cascade import CascadeFailed, CascadeRequest, TierCall, render_path, run_cascade, send_call
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    LoopDetected,
    NotFound,
    UpstreamFailed,
    UpstreamTimeout,
    error_response,
    from_validation_error,
    unexpected_error_response,
)
from gateway.intake import check_api_key, read_json_body, request_id_for
from gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Route
from gateway.ratelimit import admit_client
from gateway.runtime import Runtime
from gateway.shaping import (
    HOPS_HEADER,
    TASK_HEADER,
    VIA_HEADER,
    client_body,
    forward_body,
    resolve_task,
    result_headers,
    result_summary,
)
from gateway.streaming import EventStreamResponse, StreamPlan, buffered_call, client_events, early_call, stream_body
from policies.quality import QualityPolicy

log = logging.getLogger("recserve.access")
Model = TypeVar("Model", bound=BaseModel)


class AnswerResponse(JSONResponse):
    """A completion answer, serialised with orjson (Starlette's JSONResponse uses the stdlib)."""

    def render(self, content: Any) -> bytes:
        return jsonio.dumps(content)


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain-def dependency in a worker thread, a costly hop per request.
    # Leased by GatewayMiddleware when the request started: a reload mid-request does not change it.
    runtime: Runtime = request.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
router = APIRouter(prefix="/v1")


# The completion routes read the leased runtime directly instead of through Depends: FastAPI's
# dependency solving is a measurable share of the gateway's per-request cost (bench/NOTES.md).
@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _complete(request, request.state.runtime, "chat/completions", ChatCompletionRequest)


@router.post("/completions")
async def completions(request: Request) -> Response:
    return await _complete(request, request.state.runtime, "completions", CompletionRequest)


@router.get("/models")
async def list_models(request: Request, runtime: RuntimeDep) -> JSONResponse:
    check_api_key(request, runtime.client_keys)
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "recserve"} for m in runtime.model_ids()]
    return JSONResponse({"object": "list", "data": data})


@router.post("/embeddings")
async def embeddings(request: Request, runtime: RuntimeDep) -> JSONResponse:
    request_id = _begin(request, runtime)
    await admit_client(request, runtime.config)
    name = runtime.config.embeddings_tier
    if name is None:
        raise NotFound("No embeddings tier is configured (set `embeddings_tier`).", code="model_not_found")
    raw, _ = await _read(request, runtime, EmbeddingRequest)
    tier = next(t for t in runtime.tiers if t.config.name == name)
    try:
        reply = await tier.backend.send("embeddings", raw, timeout_s=tier.config.timeout_s, headers={})
    except TierFault as fault:
        raise UpstreamFailed(f"tier '{name}' failed: {fault.message}") from None
    except TierRejected as rejected:
        raise InvalidRequest(rejected.message, param=rejected.param, code=rejected.code) from None
    body = {**reply.body, "model": tier.config.served_model}
    return JSONResponse(body, headers={"x-recserve-tier": name, "x-request-id": request_id})


# The completion routes, served straight from GatewayMiddleware: they skip FastAPI's routing,
# dependency and exception layers, about a fifth of the gateway's own per-request cost
# (bench/NOTES.md). They stay registered above, so the OpenAPI schema still describes them.
FAST_ROUTES: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "/v1/chat/completions": chat_completions,
    "/v1/completions": completions,
}


async def serve_fast(route: Callable[[Request], Awaitable[Response]], scope: Scope, receive: Receive,
                     send: Send) -> None:
    """Run a hot route as plain ASGI, rendering errors exactly as the installed handlers do."""
    request = Request(scope, receive)
    try:
        response = await route(request)
    except GatewayError as exc:
        response = error_response(exc, getattr(request.state, "request_id", None))
    except Exception as exc:
        response = unexpected_error_response(request, exc)
    await response(scope, receive, send)


def _begin(request: Request, runtime: Runtime) -> str:
    request_id = request_id_for(request)
    request.state.request_id = request_id
    check_api_key(request, runtime.client_keys)
    return request_id


async def _read(request: Request, runtime: Runtime, schema: type[Model]) -> tuple[dict[str, Any], Model]:
    """The body as the raw dict we forward, and as the validated model we reason about."""
    server = runtime.config.server
    raw = await read_json_body(request, server.max_body_bytes, server.max_json_depth)
    try:
        return raw, schema.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


async def _complete(request: Request, runtime: Runtime, route: Route,
                    schema: type[ChatCompletionRequest] | type[CompletionRequest]) -> Response:
    started = time.monotonic()
    request_id = _begin(request, runtime)
    await admit_client(request, runtime.config)
    hops = _incoming_hops(request, runtime.config.server.max_hops)
    via = _incoming_via(request)
    raw, parsed = await _read(request, runtime, schema)
    selected = runtime.route(parsed.model, uses_tools=bool(raw.get("tools")))
    task = resolve_task(parsed, request.headers.get(TASK_HEADER))
    labels = parsed.recserve.labels if parsed.recserve else None
    body = forward_body(raw, route, runtime.config.confidence.top_logprobs)
    call: TierCall = send_call
    window_suffix = ""
    if parsed.stream:
        body = stream_body(body)
        streaming = runtime.config.streaming
        if streaming.mode == "early":
            call, window_suffix = early_call(streaming.decide_after_tokens), f"@prefix{streaming.decide_after_tokens}"
        else:
            call = buffered_call
    cascade_request = CascadeRequest(
        route=route, body=body, task=task, labels=labels,
        deadline=started + runtime.config.server.request_timeout_s,
        forward_headers={HOPS_HEADER: str(hops + 1), VIA_HEADER: ",".join(via), "x-request-id": request_id},
        count_prompt_tokens=lambda: runtime.tokens.count(body),
        window_suffix=window_suffix,
    )
    try:
        result = await run_cascade(cascade_request, selected.tiers, selected.policy, call)
    except CascadeFailed as failed:
        runtime.observer.request_done(request, selected.policy.name, task, body, hops=failed.hops)
        error_type = UpstreamTimeout if failed.timed_out else UpstreamFailed
        raise error_type(str(failed), headers={"x-recserve-path": render_path(failed.hops),
                                                "x-recserve-task": task}) from None
    except TierRejected as rejected:
        where = {"x-recserve-path": rejected.path, "x-recserve-task": task}
        if rejected.status == LOOP_STATUS:
            raise LoopDetected(rejected.message, code=rejected.code or "loop_detected", headers=where) from None
        raise InvalidRequest(rejected.message, param=rejected.param, code=rejected.code, headers=where) from None
    headers = result_headers(result, task, request_id)

    def observe(usage: Mapping[str, Any] | None = None) -> None:
        runtime.observer.request_done(request, selected.policy.name, task, body, result, usage=usage)

    if not parsed.stream:
        observe()  # a stream is observed at its end, when its usage is known: no tokenizing before the first byte
    probes = None  # a streamed answer is probed once the client has all of it
    if isinstance(selected.policy, QualityPolicy):
        probes = runtime.prober.after(cascade_request, result)
        estimate = selected.policy.estimate(result.tier.name, task + window_suffix, result.confidence or 0.0)
        headers["x-recserve-quality-estimate"] = "none" if estimate is None else repr(estimate)
    if parsed.stream:
        plan = StreamPlan(result, route, raw, task, labels, result_summary(result, task),
                          cascade_request.count_prompt_tokens, observe, probes)
        return EventStreamResponse(client_events(plan), headers={**headers, "cache-control": "no-cache"})
    return AnswerResponse(client_body(result, route, raw), headers=headers)


def _incoming_via(request: Request) -> list[str]:
    """The chain so far plus us; a request that already passed this gateway is a loop."""
    instance_id: str = request.app.state.instance_id
    via = [part.strip() for part in request.headers.get(VIA_HEADER, "").split(",") if part.strip()]
    if instance_id in via:
        raise LoopDetected(f"Loop detected: this request already passed gateway '{instance_id}' "
                           f"(via {', '.join(via)}); check the tiers' base_url chain.")
    return [*via, instance_id]


def _incoming_hops(request: Request, max_hops: int) -> int:
    """Hops this request already made through chained gateways; refuse once the limit is reached."""
    raw = request.headers.get(HOPS_HEADER, "0")
    try:
        hops = int(raw)
    except ValueError:
        raise InvalidRequest(f"Header {HOPS_HEADER} must be an integer.") from None
    if hops >= max_hops:
        raise LoopDetected(f"Hop limit reached: this request already passed {hops} gateways "
                           f"(server.max_hops = {max_hops}); is there a loop in the tier chain?")
    return hops

