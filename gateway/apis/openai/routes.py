"""The /v1 routes: thin adapters from HTTP to the cascade and back."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway import jsonio
from gateway.cascade.pipeline import Admission, read_body, serve
from gateway.cascade.runtime import Runtime
from gateway.cascade.shaping import HOPS_HEADER, VIA_HEADER, client_body
from gateway.cascade.streaming import EventStreamResponse, client_events
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    LoopDetected,
    NotFound,
    UpstreamFailed,
    error_response,
    unexpected_error_response,
)
from gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Route
from gateway.server import openapi as openapi_doc
from gateway.server.disconnect import CLIENT_LEFT_STATE, ClientLeft, DisconnectWatch
from gateway.server.intake import check_api_key, request_id_for
from gateway.server.ratelimit import admit_client
from gateway.upstream.backends import TierFault, TierRejected

log = logging.getLogger("recserve.access")


class AnswerResponse(JSONResponse):
    """A completion answer, serialised with orjson (Starlette's JSONResponse uses the stdlib)."""

    def render(self, content: Any) -> bytes:
        try:
            return jsonio.dumps_for_client(content)
        except (TypeError, ValueError, RecursionError):  # a tier's answer nested past what JSON writers take
            raise UpstreamFailed("The tier's answer cannot be passed on: it is nested too deeply.") from None


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain-def dependency in a worker thread, a costly hop per request.
    # Leased by GatewayMiddleware when the request started: a reload mid-request does not change it.
    runtime: Runtime = request.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
router = APIRouter(prefix="/v1")


# The completion routes read the leased runtime directly instead of through Depends: FastAPI's
# dependency solving is a measurable share of the gateway's per-request cost (bench/NOTES.md).
@router.post("/chat/completions", **openapi_doc.CHAT_COMPLETIONS)
async def chat_completions(request: Request) -> Response:
    return await _complete(request, request.state.runtime, "chat/completions", ChatCompletionRequest)


@router.post("/completions", **openapi_doc.COMPLETIONS)
async def completions(request: Request) -> Response:
    return await _complete(request, request.state.runtime, "completions", CompletionRequest)


@router.get("/models", **openapi_doc.MODELS)
async def list_models(request: Request, runtime: RuntimeDep) -> JSONResponse:
    check_api_key(request, runtime.client_keys)
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "recserve"} for m in runtime.model_ids()]
    return JSONResponse({"object": "list", "data": data})


@router.post("/embeddings", **openapi_doc.EMBEDDINGS)
async def embeddings(request: Request, runtime: RuntimeDep) -> JSONResponse:
    request_id = _begin(request, runtime)
    await admit_client(request, runtime.config)
    name = runtime.config.embeddings_tier
    if name is None:
        raise NotFound("No embeddings tier is configured (set `embeddings_tier`).", code="model_not_found")
    raw, _ = await read_body(request, runtime, EmbeddingRequest)
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
    """Run a hot route as plain ASGI, rendering errors exactly as the installed handlers do. A client
    that leaves before the answer starts cancels the route (and so the tier calls) and gets nothing."""
    watch = DisconnectWatch(receive)
    request = Request(scope, watch.receive)
    try:
        response = await watch.run(route(request))
    except ClientLeft:
        scope.setdefault("state", {})[CLIENT_LEFT_STATE] = True
        return
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


async def admit(request: Request, runtime: Runtime,
                check_key: Callable[[Request, Sequence[str]], None] = check_api_key) -> Admission:
    """The door every completion-like route passes: request id, client key, rate limit, gateway chain."""
    started = time.monotonic()
    request_id = request_id_for(request)
    request.state.request_id = request_id
    check_key(request, runtime.client_keys)
    await admit_client(request, runtime.config)
    hops = _incoming_hops(request, runtime.config.server.max_hops)
    return Admission(request_id, started, hops, _incoming_via(request))


async def _complete(request: Request, runtime: Runtime, route: Route,
                    schema: type[ChatCompletionRequest] | type[CompletionRequest]) -> Response:
    admission = await admit(request, runtime)
    raw, parsed = await read_body(request, runtime, schema)
    served = await serve(request, runtime, admission, route, raw, parsed)
    if parsed.stream:
        return EventStreamResponse(client_events(served.stream_plan(route, raw)),
                                   headers={**served.headers, "cache-control": "no-cache"})
    return AnswerResponse(client_body(served.result, route, raw), headers=served.headers)


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
    raw = request.headers.get(HOPS_HEADER, "0").strip()
    # Digits only: int() would also take "-5", "+3", "1_0" or "٣", and a negative count defeats max_hops.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3:
        raise InvalidRequest(f"Header {HOPS_HEADER} must be a non-negative integer below 1000.",
                             param=HOPS_HEADER, code="invalid_header")
    hops = int(raw)
    if hops >= max_hops:
        raise LoopDetected(f"Hop limit reached: this request already passed {hops} gateways "
                           f"(server.max_hops = {max_hops}); is there a loop in the tier chain?")
    return hops
