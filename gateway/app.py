"""The app factory. Everything stateful is built in the lifespan and hangs off `app.state`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway import admin, api
from gateway.config import GatewayConfig, load_config
from gateway.errors import install_error_handlers
from gateway.runtime import Runtime
from policies.base import WindowStore

CONFIG_ENV = "RECSERVE_CONFIG"


def create_app(config: GatewayConfig | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
               store: WindowStore | None = None) -> FastAPI:
    """Build the gateway. With no config, read the file named by $RECSERVE_CONFIG (uvicorn --factory)."""
    if config is None:
        config = load_config(os.environ.get(CONFIG_ENV, "config.yaml"))
    resolved = config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(resolved, transport=transport, store=store)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(title="RecServe gateway", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(admin.router)
    return app
