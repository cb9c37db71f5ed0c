"""The gateway's error hierarchy and the one place that turns errors into OpenAI's error JSON (or,
under an API's own path prefix, into the error shape that API's routes render)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("recserve.errors")


class GatewayError(Exception):
    """An error with an HTTP status, rendered as `{"error": {message, type, param, code}}`."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class UpstreamFailed(GatewayError):
    status = 502
    type = "upstream_error"
    code = "tier_failed"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "timeout"


class LoopDetected(GatewayError):
    status = 508
    type = "invalid_request_error"
    code = "loop_detected"


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    """The first schema violation, named by its field path the way OpenAI names params."""
    return from_error_detail(exc.errors(include_url=False)[0])


def from_error_detail(err: ErrorDetails) -> InvalidRequest:
    """One schema violation (an entry of `ValidationError.errors()`) as OpenAI's 400."""
    param = _param_path(err["loc"])
    kind = err["type"]
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: '{param}'."
    else:
        message = f"Invalid value for '{param}': {err['msg']}."
    return InvalidRequest(message, param=param, code="invalid_value" if kind != "missing" else "missing")


def _param_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for piece in loc:
        if isinstance(piece, int):
            parts.append(f"[{piece}]")
        elif isinstance(piece, str) and not _is_type_branch(piece):
            parts.append(("." if parts else "") + piece)
    return "".join(parts) or "body"


def _is_type_branch(piece: str) -> bool:
    # pydantic names the union member it tried ("str", "list[str]", "constrained-int"): not a field.
    return piece in {"str", "int", "float", "bool"} or "[" in piece or piece.startswith(("constrained", "function-"))


# An error as one API's clients expect it: OpenAI's shape (`error_response`) or another API's.
ErrorReply = Callable[[GatewayError, str | None], Response]


def error_response(error: GatewayError, request_id: str | None = None) -> JSONResponse:
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def unexpected_error_response(request: Request, exc: Exception, reply: ErrorReply = error_response) -> Response:
    """A bug of ours: logged with its traceback, answered as a plain 500 (OpenAI's shape unless `reply` says)."""
    request_id = getattr(request.state, "request_id", None)
    log.error("unexpected error handling %s (request %s)", request.url.path, request_id, exc_info=exc)
    return reply(GatewayError(f"Internal error; request id {request_id}", code="internal_error"), request_id)


def install_error_handlers(app: FastAPI, shapes: Mapping[str, ErrorReply] | None = None) -> None:
    """Every error leaves in OpenAI's shape, except under a path prefix of `shapes` (the prefix itself
    and what is below it), which answers in its API's own shape: an unknown route or a wrong method
    there is that API's 404 or 405. An unexpected error is logged, never shown as a traceback."""
    prefixes = dict(shapes or {})

    def reply_for(request: Request) -> ErrorReply:
        path = request.url.path
        for prefix, reply in prefixes.items():
            if path == prefix or path.startswith(prefix + "/"):
                return reply
        return error_response

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return reply_for(request)(exc, getattr(request.state, "request_id", None))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})  # a 405's `allow`
        if exc.status_code == 404:
            error: GatewayError = NotFound(f"Unknown path: {request.method} {request.url.path}", headers=headers)
        elif exc.status_code == 405:
            error = InvalidRequest(f"Method {request.method} is not allowed on {request.url.path}",
                                   status=405, code="method_not_allowed", headers=headers)
        else:
            error = InvalidRequest(str(exc.detail), status=exc.status_code, headers=headers)
        return reply_for(request)(error, None)

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        return reply_for(request)(InvalidRequest(f"Invalid request: {exc}"), None)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_error_response(request, exc, reply_for(request))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(Exception, on_unexpected)
