"""The ASGI layer around every request: catch up with cluster changes, lease the current runtime
for the request's whole life (streams included), time it, count it, log it.

Pure ASGI (not BaseHTTPMiddleware) so the route runs in the same task and context: the tier
clock set here is the one the tier calls below add to.
"""

from __future__ import annotations

import time
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from gateway.ops.reload import Reloader
from gateway.server.disconnect import CLIENT_LEFT_STATE
from gateway.server.routes import FAST_ROUTES, serve_fast
from gateway.telemetry.access_log import access_record, emit
from gateway.telemetry.observer import SUMMARY_STATE, CascadeSummary, start_tier_clock, stop_tier_clock
from gateway.telemetry.tracing import TRACE_STATE, RequestTrace, Tracing

CLIENT_CLOSED_STATUS: Final = 499  # nginx's name for a request whose client left before the answer
RUNTIME_STATE: Final = "runtime"  # request.state attribute the routes read (gateway/server/routes.py)
TRACING_STATE: Final = "tracing"  # app.state attribute: the process's tracer, None when tracing is off
# Probes and scrapes: no catch-up round trip, no access-log line.
_QUIET: Final = frozenset({"/healthz", "/readyz", "/metrics"})
_ROUTES: Final = frozenset({"chat/completions", "completions", "embeddings", "models", "responses", "messages",
                           "messages/count_tokens"})


def route_label(path: str) -> str | None:
    """The bounded `route` label of a /v1 path; None for other paths."""
    if not path.startswith("/v1/"):
        return None
    name = path[4:]
    return name if name in _ROUTES else "other"


class GatewayMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        reloader: Reloader | None = getattr(scope["app"].state, "reloader", None) if "app" in scope else None
        if scope["type"] != "http" or reloader is None:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        quiet = path in _QUIET
        if not quiet:
            await reloader.catch_up()
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()
        clock, token = start_tier_clock()
        trace: RequestTrace | None = None
        tracing: Tracing | None = getattr(scope["app"].state, TRACING_STATE, None)
        if tracing is not None and path.startswith("/v1/"):
            trace = state[TRACE_STATE] = tracing.start(scope)

        recorded = quiet

        def record(access_log: bool) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            summary = state.get(SUMMARY_STATE)
            summary = summary if isinstance(summary, CascadeSummary) else None
            self._record(reloader, scope, path, status, time.perf_counter() - started, clock.seconds, summary,
                         access_log)
            if trace is not None:
                trace.finish(status, summary)

        try:
            async with reloader.holder.lease() as runtime:
                state[RUNTIME_STATE] = runtime

                async def send_status(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = int(message["status"])
                    elif message["type"] == "http.response.body" and not message.get("more_body", False):
                        # Count and log before the last byte leaves: whoever reads the answer can
                        # then rely on the metrics and the log line being there.
                        record(runtime.config.logging.access_log)
                    await send(message)

                fast = FAST_ROUTES.get(path) if scope.get("method") == "POST" else None
                try:
                    if fast is not None:
                        await serve_fast(fast, scope, receive, send_status)
                    else:
                        await self.app(scope, receive, send_status)
                finally:
                    if state.get(CLIENT_LEFT_STATE):
                        status = CLIENT_CLOSED_STATUS
                    record(runtime.config.logging.access_log)  # the app raised or never finished the body
        finally:
            stop_tier_clock(token)

    @staticmethod
    def _record(reloader: Reloader, scope: ASGIScope, path: str, status: int, elapsed: float, tier_s: float,
                summary: CascadeSummary | None, access_log: bool) -> None:
        route = route_label(path)
        method = str(scope.get("method", ""))
        if route is not None:
            task = summary.task if summary else "none"
            tier = (summary.tier if summary else None) or "none"
            reloader.metrics.request_finished(route, tier, task, status, elapsed, max(elapsed - tier_s, 0.0))
        # Admin reads are polled (the status page); log only /v1 traffic and admin changes.
        if access_log and (route is not None or (path.startswith("/admin") and method != "GET")):
            request_id = scope.get("state", {}).get("request_id")
            emit(access_record(request_id=request_id, method=method, path=path, status=status,
                               latency_s=elapsed, tier_s=tier_s, summary=summary))
