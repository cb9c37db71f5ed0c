"""The routes GatewayMiddleware serves itself, skipping FastAPI's routing and dependency layers
(bench/NOTES.md): the completion routes and the APIs translated onto them. Each stays registered
on its router too, so the OpenAPI document still describes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import Request
from fastapi.responses import Response

from gateway.apis.messages import routes as messages_api
from gateway.apis.openai import routes as api
from gateway.apis.responses import routes as responses_api

FAST_ROUTES: Final[dict[str, Callable[[Request], Awaitable[Response]]]] = {
    **api.FAST_ROUTES,
    "/v1/responses": responses_api.create_response,
    "/v1/messages": messages_api.create_message,
}
