"""Every route and the door it passes. For /v1: one table says which API answers which path, what the
intake checks first, which error shape the API speaks and how the route is described in OpenAPI.

Each route is served the same way: intake (gateway/server/intake.py) → the API's endpoint → its
answer, or its error in the API's own shape. The hot POST routes are served straight from
GatewayMiddleware (`FAST_ROUTES`, skipping FastAPI's routing, dependency and exception layers,
bench/NOTES.md); all stay registered on the router, so the OpenAPI document describes them.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from gateway.apis.messages import routes as messages
from gateway.apis.openai import routes as openai
from gateway.apis.responses import routes as responses
from gateway.cascade.runtime import Runtime
from gateway.errors import ErrorReply, GatewayError, error_response
from gateway.ops import admin
from gateway.protocol import Admission
from gateway.server import openapi
from gateway.server.disconnect import CLIENT_LEFT_STATE, ClientLeft, DisconnectWatch
from gateway.server.intake import CASCADE, LIMITED_BODY, READ, Intake, admit, read_json_body

log = logging.getLogger("recserve.errors")

Endpoint = Callable[[Request, Runtime, Admission], Awaitable[Response]]
Serve = Callable[[Request], Awaitable[Response]]
_PATH_PARAM: Final = re.compile(r"{(\w+)}")


@dataclass(frozen=True, slots=True)
class Door:
    """One route: where it is, what the intake checks, which API answers and in which error shape."""

    method: str
    path: str
    endpoint: Endpoint
    intake: Intake
    doc: openapi.RouteDoc
    error_reply: ErrorReply = error_response
    fast: bool = False  # served straight from GatewayMiddleware

    async def serve(self, request: Request) -> Response:
        """Intake, then the endpoint; every error, expected or not, leaves in the API's shape."""
        runtime: Runtime = request.state.runtime  # leased by GatewayMiddleware for the request's whole life
        try:
            admission = await admit(request, runtime.config, runtime.tenants, self.intake)
            return await self.endpoint(request, runtime, admission)
        except ClientLeft:
            raise
        except GatewayError as error:
            return self.error_reply(error, getattr(request.state, "request_id", None))
        except Exception as exc:  # a bug of ours: logged with its traceback, never shown as one
            request_id = getattr(request.state, "request_id", None)
            log.error("unexpected error handling %s (request %s)", self.path, request_id, exc_info=exc)
            return self.error_reply(GatewayError(f"Internal error; request id {request_id}", code="internal_error"),
                                    request_id)


DOORS: Final = (
    Door("POST", "/v1/chat/completions", openai.chat_completions, CASCADE, openapi.CHAT_COMPLETIONS, fast=True),
    Door("POST", "/v1/completions", openai.completions, CASCADE, openapi.COMPLETIONS, fast=True),
    Door("POST", "/v1/responses", responses.create_response, CASCADE, openapi.RESPONSES, fast=True),
    Door("POST", "/v1/messages", messages.create_message, CASCADE, openapi.MESSAGES, messages.error_reply, fast=True),
    Door("POST", "/v1/messages/count_tokens", messages.count_tokens, LIMITED_BODY, openapi.COUNT_TOKENS,
         messages.error_reply),
    Door("POST", "/v1/embeddings", openai.embeddings, LIMITED_BODY, openapi.EMBEDDINGS),
    Door("GET", "/v1/models", openai.list_models, READ, openapi.MODELS),
    Door("GET", "/v1/responses/{response_id}", responses.get_response, READ, openapi.STORED_RESPONSE),
    Door("DELETE", "/v1/responses/{response_id}", responses.delete_response, READ, openapi.DELETE_RESPONSE),
)

FAST_ROUTES: Final[dict[str, Serve]] = {door.path: door.serve for door in DOORS if door.fast}
# Path prefixes whose every error, an unknown route or a wrong method included, is in their API's shape.
ERROR_SHAPES: Final[dict[str, ErrorReply]] = {"/v1/messages": messages.error_reply}
ADMIN_BODY_BYTES: Final = 64 * 1024


async def patch_policy(request: Request, reloader: admin.AdminDep) -> JSONResponse:
    """PATCH /admin/policy: the body read by the door's bounded reader, the change made by ops."""
    runtime = reloader.holder.current
    patch = await read_json_body(request, ADMIN_BODY_BYTES, runtime.config.server.max_json_depth)
    return await admin.patch_policy(reloader, patch)


# Operational routes: their own checks (the admin key, or none for probes and scrapes) are FastAPI
# dependencies of the endpoints; errors leave through the app's handlers, in OpenAI's shape.
OPERATIONS: Final[tuple[tuple[str, str, Callable[..., Awaitable[Response]], openapi.RouteDoc], ...]] = (
    ("GET", "/healthz", admin.healthz, openapi.HEALTHZ),
    ("GET", "/readyz", admin.readyz, openapi.READYZ),
    ("GET", "/metrics", admin.metrics, openapi.METRICS),
    ("POST", "/admin/reload", admin.reload, openapi.ADMIN_RELOAD),
    ("GET", "/admin/config", admin.show_config, openapi.ADMIN_CONFIG),
    ("GET", "/admin/policy", admin.show_policy, openapi.ADMIN_POLICY),
    ("PATCH", "/admin/policy", patch_policy, openapi.ADMIN_POLICY_PATCH),
    ("POST", "/admin/windows/reset", admin.reset_windows, openapi.ADMIN_WINDOWS_RESET),
    ("GET", "/admin/ui", admin.status_page, openapi.ADMIN_UI),
)


def mount(app: FastAPI) -> None:
    """Register every door and operational route on `app`."""
    router = APIRouter()
    for door in DOORS:
        router.add_api_route(door.path, _described(door), methods=[door.method], **door.doc)
    for method, path, endpoint, doc in OPERATIONS:
        router.add_api_route(path, endpoint, methods=[method], **doc)
    app.include_router(router)


def _described(door: Door) -> Serve:
    """`door.serve` with the path's parameters in its signature, which is what FastAPI documents."""

    async def endpoint(request: Request, **_: str) -> Response:
        return await door.serve(request)

    request_param = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    path_params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
                   for name in _PATH_PARAM.findall(door.path)]
    endpoint.__signature__ = inspect.Signature([request_param, *path_params],  # type: ignore[attr-defined]
                                               return_annotation=Response)
    return endpoint


async def serve_fast(serve: Serve, scope: ASGIScope, receive: Receive, send: Send) -> None:
    """Run a hot route as plain ASGI. A client that leaves before the answer starts cancels the
    route (and so the tier calls) and gets nothing."""
    watch = DisconnectWatch(receive)
    request = Request(scope, watch.receive)
    try:
        response = await watch.run(serve(request))
    except ClientLeft:
        scope.setdefault("state", {})[CLIENT_LEFT_STATE] = True
        return
    await response(scope, receive, send)
