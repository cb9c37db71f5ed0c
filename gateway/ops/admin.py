"""Operational routes: liveness, readiness, Prometheus metrics, and the admin API under /admin
(mounted, with their OpenAPI descriptions, by gateway/server/routes.py).

The admin API answers only to the admin key (`auth.admin_key_env` names the variable holding it):
no variable or an empty one → every /admin route is a 404 saying how to enable it; no key → 401;
a wrong key → 403. Client keys never open /admin, and the admin key opens nothing under /v1
unless it is also a client key. Errors are in OpenAI's shape like everywhere else.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import replace
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from gateway import __version__
from gateway.cascade.overrides import PatchError
from gateway.cascade.runtime import Runtime
from gateway.cascade.workloads import Workload, valid_name
from gateway.config.loading import ConfigError
from gateway.config.schema import GatewayConfig
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, NotFound
from gateway.ops.policy_view import policy_view
from gateway.ops.reload import Reloader, ReloadUnavailable
from policies.stores.faults import fault_kind
from policies.stores.urls import redact_url


def _reloader(request: Request) -> Reloader:
    reloader: Reloader = request.app.state.reloader
    return reloader


def require_admin(request: Request) -> Reloader:
    """The admin-key check, against the config of the runtime this request leased."""
    runtime: Runtime = request.state.runtime
    env = runtime.config.auth.admin_key_env
    key = os.environ.get(env, "") if env else ""
    if not key:
        where = f"the environment variable {env}" if env else "a variable named by auth.admin_key_env"
        raise NotFound(f"The admin API is disabled: set {where} to an admin key to enable it.",
                       code="admin_disabled")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthenticationFailed("Missing admin key: send 'Authorization: Bearer <admin key>'.",
                                   code="missing_admin_key")
    if not hmac.compare_digest(presented.strip().encode(), key.encode()):
        raise AuthenticationFailed("Incorrect admin key.", status=403, code="invalid_admin_key")
    return _reloader(request)


AdminDep = Annotated[Reloader, Depends(require_admin)]


async def healthz() -> JSONResponse:
    """The process is alive and serving HTTP; which release of the gateway it runs (`recserve --version`)."""
    return JSONResponse({"status": "ok", "recserve_version": __version__})


async def readyz(request: Request) -> JSONResponse:
    """Ready once the lifespan has built the runtime (clients, policies, window store)."""
    reloader: Reloader | None = getattr(request.app.state, "reloader", None)
    if reloader is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    runtime = reloader.holder.current
    return JSONResponse({"status": "ready", "tiers": [t.config.name for t in runtime.tiers],
                         "window_store": runtime.config.windows.store, "version": reloader.version,
                         "recserve_version": __version__})


async def metrics(request: Request) -> Response:
    """Prometheus exposition format; unauthenticated like most scrape targets (no secrets, no prompts)."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


async def reload(reloader: AdminDep) -> JSONResponse:
    """Re-read the config file; 400 with every error by key path, the old config still serving."""
    try:
        outcome = await reloader.reload()
    except ConfigError as exc:
        return _config_errors(exc)
    except ReloadUnavailable as exc:
        raise GatewayError(str(exc), status=409, code="reload_unavailable") from None
    return JSONResponse({"status": "reloaded", "version": outcome.version, "announced": outcome.announced,
                         "changed": outcome.changed, "replica": reloader.replica_id})


def _config_errors(exc: ConfigError) -> JSONResponse:
    error = InvalidRequest(f"Invalid config in {exc.source}; the previous config keeps serving. "
                           + "; ".join(exc.errors), code="invalid_config")
    body = error.body()
    body["error"]["errors"] = exc.errors  # one 'key.path: message' per problem, for tools
    return JSONResponse(body, status_code=400)


async def show_config(reloader: AdminDep) -> JSONResponse:
    """The running config with secrets redacted, and the version every replica runs."""
    runtime = reloader.holder.current
    return JSONResponse({
        "replica": reloader.replica_id,
        "version": reloader.version,
        "config_version": reloader.config_version,
        "config_path": reloader.config_path,
        "clustered": reloader.clustered,
        "error": reloader.last_error,
        "config": redacted(runtime.config),
        "overrides": runtime.overrides.current.to_json(),
        "replicas": await reloader.replicas(),
    })


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """The config as JSON with credentials in URLs masked. Keys live in environment variables,
    whose names (not values) the config holds."""
    data = config.model_dump(mode="json")
    data["windows"]["redis_url"] = redact_url(data["windows"]["redis_url"])
    for tier in data["tiers"]:
        tier["base_url"] = redact_url(tier["base_url"])
    return data


async def show_policy(reloader: AdminDep) -> JSONResponse:
    """Per tier and task: window length, threshold now, β, escalation rate, confidence quantiles."""
    view = await policy_view(reloader.holder.current, reloader.metrics.traffic, reloader.metrics.savings)
    return JSONResponse({"replica": reloader.replica_id, "version": reloader.version,
                         "recserve_version": __version__, **view})


async def patch_policy(reloader: Reloader, patch: dict[str, Any]) -> JSONResponse:
    """Change β or CasServe thresholds at run time; with Redis, every replica follows. The body is
    read by the door (gateway/server/routes.py)."""
    try:
        outcome = await reloader.patch_policy(patch)
    except PatchError as exc:
        error = InvalidRequest("Invalid policy change: " + "; ".join(exc.errors), code="invalid_policy")
        body = error.body()
        body["error"]["errors"] = exc.errors
        return JSONResponse(body, status_code=400)
    current = reloader.holder.current
    return JSONResponse({"status": "updated", "version": outcome.version, "announced": outcome.announced,
                         "overrides": current.overrides.current.to_json()})


async def reset_windows(request: Request, reloader: AdminDep) -> JSONResponse:
    """Empty every window, or those of one tier, task, workload and/or tenant
    (`?tier=device&task=classification&workload=sentiment&tenant=team-a`).

    "Windows" are every policy's: the RecServe rule's, the quality policy's own sliding windows, and
    the quality policy's probe windows (what it learned from probes), in the same scope. A workload
    without a tenant is every tenant's of that name and the shared one. With Redis the shared ones
    go too, so every replica starts over; a 503 when Redis fails meanwhile."""
    try:
        return await _reset_windows(request, reloader.holder.current)
    except Exception as exc:
        kind = fault_kind(exc)
        if kind is None:
            raise
        raise GatewayError(f"The shared window store is failing ({kind}), so the shared windows were not all "
                           "reset; retry once it answers.", status=503, code="window_store_unavailable") from None


async def _reset_windows(request: Request, runtime: Runtime) -> JSONResponse:
    tier = request.query_params.get("tier")
    task = request.query_params.get("task")
    workload = request.query_params.get("workload")
    tenant = request.query_params.get("tenant")
    names = [t.config.name for t in runtime.tiers]
    scopes = runtime.window_scopes()
    if tier is not None and tier not in names:
        raise InvalidRequest(f"Unknown tier '{tier}' (tiers: {', '.join(names)}).", param="tier")
    tasks = sorted({s.task for s in scopes} | {s.name for s in scopes if not s.workload and not s.tenant})
    if task is not None and task not in tasks:
        raise InvalidRequest(f"Unknown task '{task}' (tasks: {', '.join(tasks)}).", param="task")
    if workload is not None and not valid_name(workload):
        raise InvalidRequest("Invalid workload name.", param="workload")
    tenants = runtime.tenants.scopes()
    if tenant is not None and tenant not in tenants[1:]:
        raise InvalidRequest(f"Unknown tenant '{tenant}' (tenants: {', '.join(tenants[1:]) or 'none'}).",
                             param="tenant")
    learners = runtime.learners()
    if tier is None and task is None and workload is None and tenant is None:
        await runtime.store.reset()
        for learning in learners:
            await learning.reset_probes()
        return JSONResponse({"status": "reset", "windows": "all", "probes": "all" if learners else None})
    owners = tenants if tenant is None else [tenant]
    # Also what this replica does not keep apart (another may): the workload's, the tenant's own tasks.
    scopes += runtime.window_scopes([Workload(workload or "", owner) for owner in owners])
    chosen = [s for s in scopes
              if (task is None or task in (s.task, replace(s, tenant="").name))
              and (workload is None or (s.workload or s.task) == workload)
              and (tenant is None or s.tenant == tenant)]
    pairs = [(n, s) for n in ([tier] if tier else names) for s in {s.name: s for s in chosen}.values()]
    for name, pair_scope in pairs:
        for learning in learners:
            await learning.reset_probes(name, pair_scope)
        for namespace in runtime.window_namespaces():
            await runtime.store.reset(pair_scope.key(namespace, name))
    scope = [f"{name}/{pair_scope.name}" for name, pair_scope in pairs]
    return JSONResponse({"status": "reset", "windows": scope, "probes": scope if learners else None})


async def status_page(request: Request) -> HTMLResponse:
    """The live status page. The page itself holds no data (it is the same file for everyone), so it
    loads without a key when the admin API is enabled; it sends the key, taken from the URL fragment
    `#key=...` or typed in, with each poll of /admin/policy."""
    runtime: Runtime = request.state.runtime
    env = runtime.config.auth.admin_key_env
    if not (env and os.environ.get(env)):
        require_admin(request)  # raises the same 404 as every other /admin route
    page = resources.files("gateway.telemetry").joinpath("static/status.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"cache-control": "no-store",
                                       "content-security-policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                                                  "script-src 'unsafe-inline'; img-src data:"})
