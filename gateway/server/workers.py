"""`recserve serve --workers N`: N gateway processes on one port.

uvicorn's own supervisor runs them: the parent binds the port once and every worker accepts on that
one socket (no SO_REUSEPORT needed, so no port stolen by a stray process, and nothing to configure
behind a load balancer). The supervisor replaces a worker that dies, stops all of them gracefully
on SIGTERM/SIGINT (each drains its requests like a single gateway does), and on SIGHUP replaces
them one at a time — each new worker is serving before its predecessor is stopped — so a SIGHUP
re-reads the config file in every worker without dropping a request. All workers write their
access lines to the one inherited stderr (one JSON line per write, so lines do not interleave).

Each worker is a replica of its own: with `windows.store: redis` they share windows and follow each
other's admin changes through Redis like separate machines do. With `windows.store: memory` each
would decide on its own window, so N > 1 is refused unless `windows.per_worker: true` says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final

from gateway.config.loading import load_config
from gateway.config.schema import GatewayConfig
from gateway.server.app import CONFIG_ENV, GatewayApp, create_app
from gateway.telemetry.access_log import configure_access_log

LOG_LEVEL_ENV: Final = "RECSERVE_LOG_LEVEL"
# How long uvicorn's supervisor waits for a new worker to serve (on SIGHUP it keeps the old worker and
# abandons the restart past it) and for a worker to answer its liveness ping. Its default, 5 s, is about
# what one worker needs to import the gateway on a 2-core machine with both cores busy: every SIGHUP
# there was abandoned.
WORKER_READY_TIMEOUT_S: Final = 30
WORKER_FACTORY: Final = "gateway.server.workers:worker_app"


def workers_problem(config: GatewayConfig, workers: int) -> str | None:
    """Why `config` cannot run with `workers` processes, as a config-error line; None when it can."""
    if workers > 1 and config.windows.store == "memory" and not config.windows.per_worker:
        return (f"windows.store: memory with {workers} workers would give each worker its own windows, "
                "so the same traffic would be decided differently depending on which worker took it; "
                "use windows.store: redis (shared windows), or set windows.per_worker: true to accept "
                "per-worker windows, or run one worker")
    return None


def configure_logging(level: str, access_log: bool) -> None:
    """The process's log format (every worker calls it: spawned workers start with fresh logging)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every upstream call at INFO; the access log already says which tiers a request took.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if access_log:
        configure_access_log()  # bare JSON lines, one per request, on stderr


def uvicorn_options(config: GatewayConfig, log_level: str) -> dict[str, Any]:
    """What `recserve serve` passes to uvicorn, one worker or many. No `server` header: uvicorn's
    (`uvicorn`) says nothing a client needs, and a release number on every answer only tells a scanner
    which one to try; /healthz and `recserve --version` say which release runs."""
    return {"log_level": log_level, "access_log": False, "timeout_graceful_shutdown": 10, "server_header": False,
            "timeout_keep_alive": config.server.timeout_keep_alive_s,
            "timeout_worker_healthcheck": WORKER_READY_TIMEOUT_S,
            "limit_concurrency": config.server.limit_concurrency,
            "h11_max_incomplete_event_size": config.server.max_header_bytes}


def worker_environment(config_path: str, log_level: str) -> dict[str, str]:
    """What a spawned worker needs to build its app (`worker_app` reads it)."""
    return {CONFIG_ENV: str(Path(config_path).resolve()), LOG_LEVEL_ENV: log_level}


def worker_app() -> GatewayApp:
    """uvicorn's app factory in each worker process: read the config, set up logging, build the app."""
    config_path = os.environ[CONFIG_ENV]
    config = load_config(config_path)
    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"), config.logging.access_log)
    return create_app(config, config_path=config_path)
