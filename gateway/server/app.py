"""The app factory. Everything stateful is built in the lifespan and hangs off `app.state`."""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from gateway import __version__
from gateway.apis.responses.routes import CONVERSATIONS_STATE
from gateway.apis.responses.store import build_conversations
from gateway.cascade.runtime import model_ids
from gateway.config.loading import load_config
from gateway.config.schema import GatewayConfig
from gateway.errors import install_error_handlers
from gateway.ops.reload import Reloader
from gateway.server import openapi
from gateway.server.middleware import TRACING_STATE, GatewayMiddleware
from gateway.server.ratelimit import close_limiter, limiter_faults
from gateway.server.routes import ERROR_SHAPES, mount
from gateway.telemetry.loop_watch import watch_event_loop
from gateway.telemetry.metrics import Metrics, StoreHealth
from gateway.telemetry.tracing import start_tracing
from policies.base import WindowStore
from policies.stores.adaptive import AdaptiveWindowStore
from policies.stores.batched import BatchedWindowStore
from policies.stores.failover import FailoverWindowStore, OutageHealth

CONFIG_ENV = "RECSERVE_CONFIG"


class GatewayApp(FastAPI):
    """FastAPI with GatewayMiddleware outermost instead of inside Starlette's middleware stack.

    Every HTTP request still passes GatewayMiddleware (lease, metrics, access log); the hot
    completion routes it serves itself then skip Starlette's error, telemetry and body-limit layers
    and their per-message send wrappers, a measurable share of the per-request cost
    (bench/NOTES.md). Other routes continue into the full stack, whose error middleware answers
    their unexpected errors with 500 as before.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._gateway = GatewayMiddleware(super().__call__)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Starlette would set; the middleware and routes read app.state
        await self._gateway(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """The published document (gateway/server/openapi.py), naming the models the config running now has."""
        if self.openapi_schema is None:
            openapi.complete(super().openapi())
        assert self.openapi_schema is not None
        reloader: Reloader | None = getattr(self.state, "reloader", None)
        config: GatewayConfig = reloader.holder.current.config if reloader else self.state.started_config
        return openapi.with_models(self.openapi_schema, model_ids(config))


@contextmanager
def _startup_heap_frozen() -> Iterator[None]:
    """Keep what exists once started (modules, app, runtime: ~100,000 objects) out of garbage collection.

    Every full collection walks each tracked object, and holds the event loop while it does: over the
    startup heap that took 50-130 ms each time, and an answer made of many small JSON objects (a tier
    streaming big logprobs) set one off every few hundred milliseconds, stalling every request. Frozen,
    a collection walks only what was allocated since. Reference counting still frees frozen objects
    (a frozen reference cycle waits for shutdown); at shutdown they are unfrozen, so an app built in a
    longer-lived process (tests) leaves nothing behind.
    Freezing and unfreezing cost nothing; only the young generations are collected first (a full
    collection here would cost a test process that starts many apps as much as the stall it avoids).
    """
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(config: GatewayConfig | None = None, *,
               store: WindowStore | None = None, config_path: str | None = None) -> GatewayApp:
    """Build the gateway. With no config, read the file named by $RECSERVE_CONFIG (uvicorn --factory).

    `config_path` is the file `POST /admin/reload` re-reads; without one (a config built in code)
    reload answers 409.
    """
    if config is None:
        config_path = config_path or os.environ.get(CONFIG_ENV, "config.yaml")
        config = load_config(config_path)
    resolved = config
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Read once, from the starting config and the environment: a reload does not change it.
        tracing = start_tracing(resolved.tracing, os.environ)
        setattr(app.state, TRACING_STATE, tracing)
        reloader = await Reloader.start(resolved, config_path=config_path, metrics=metrics,
                                        store=store)
        app.state.reloader = reloader
        # Built once from the starting config: a reload that moves the windows does not move
        # stored conversations (they would be lost mid-conversation).
        conversations = build_conversations(resolved.windows, resolved.conversations)
        setattr(app.state, CONVERSATIONS_STATE, conversations)
        watch = asyncio.create_task(watch_event_loop(metrics.loop_lag, metrics.loop_stall_cpu))
        try:
            with _startup_heap_frozen():
                yield
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await conversations.close()
            await reloader.aclose()
            await close_limiter(app.state)
            if tracing is not None:  # after the requests in flight have ended their spans
                setattr(app.state, TRACING_STATE, None)
                await asyncio.to_thread(tracing.shutdown)

    app = GatewayApp(title="RecServe gateway", version=__version__, lifespan=lifespan)
    app.state.metrics = metrics
    app.state.started_config = resolved
    setattr(app.state, TRACING_STATE, None)  # until the lifespan has read the tracing settings
    app.state.instance_id = resolved.server.instance_id or f"gw-{uuid.uuid4().hex[:12]}"

    def store_health() -> StoreHealth | None:
        reloader: Reloader | None = getattr(app.state, "reloader", None)
        if reloader is None:
            return None
        current = reloader.holder.current.store
        batched: BatchedWindowStore | None = None
        if isinstance(current, AdaptiveWindowStore):
            batched = current.batched
        elif isinstance(current, BatchedWindowStore):
            batched = current
        elif not isinstance(current, FailoverWindowStore):
            return None  # windows.store: memory
        faults = {"windows": current.fault_counts}
        probes = reloader.holder.current.probes
        if isinstance(probes, OutageHealth):
            faults["probes"] = probes.fault_counts
        limiter = limiter_faults(app.state)
        if limiter is not None:
            faults["ratelimit"] = limiter
        return StoreHealth(faults, current.degraded, batched=batched)

    def version() -> int:
        reloader: Reloader | None = getattr(app.state, "reloader", None)
        return reloader.version if reloader else 0

    metrics.watch(store_health, version)
    install_error_handlers(app, ERROR_SHAPES)
    mount(app)
    return app
