"""Whether the gateway traces, and the seams the request path sees. Imports no OpenTelemetry: with
tracing off (the default) nothing of the SDK is loaded and the request path only finds no trace.

Tracing is on the standard way, as for any OpenTelemetry-instrumented service: `OTEL_TRACES_EXPORTER`
names `otlp` (or `console`), with the usual `OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` read by the SDK itself; the config's
`tracing:` section offers the same for a gateway run without those variables, and the variables win.
`OTEL_SDK_DISABLED=true` turns it off whatever else says. The SDK is built in gateway.telemetry.otel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway.cascade.climb import AttemptWatch
from gateway.config.schema import TracingConfig
from gateway.protocol import Route

if TYPE_CHECKING:
    from starlette.types import Scope as ASGIScope

    from gateway.telemetry.observer import CascadeSummary

log = logging.getLogger("recserve.tracing")

TRACE_STATE: Final = "recserve_trace"  # the ASGI scope's state key of a request's trace (RequestTrace)
EXPORTERS: Final = ("otlp", "console")
PROTOCOLS: Final = ("http/protobuf", "grpc")


class RequestTrace(Protocol):
    """One request's server span, and what the cascade below it reports into it."""

    def cascade(self, *, route: Route, model: str, policy: str, task: str, workload: str, tenant: str | None,
                include_prompts: bool) -> AttemptWatch:
        """The watch of this request's tier attempts (the cascade's facts also go on the server span)."""
        ...

    def finish(self, status: int, summary: CascadeSummary | None) -> None:
        """End the server span (and an answer still streaming from its tier) with the request's outcome."""
        ...


class Tracing(Protocol):
    """The process's tracer: one per app, built at start, flushed at shutdown."""

    def start(self, scope: ASGIScope) -> RequestTrace:
        """A server span for this request, child of the client's trace context when it sent one."""
        ...

    def shutdown(self) -> None:
        """Export what is still queued (bounded by the exporter's timeout) and stop."""
        ...


@dataclass(frozen=True, slots=True)
class TracingPlan:
    """What to build: exporters and, where the environment leaves them to the config, endpoint and name."""

    exporters: tuple[str, ...]
    protocol: str
    endpoint: str | None  # the traces URL to pass explicitly; None: the SDK reads its variables (or default)
    service_name: str | None  # None: the environment names the service


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def tracing_plan(config: TracingConfig, env: Mapping[str, str]) -> tuple[TracingPlan | None, list[str]]:
    """The plan for `config` under `env` (None: tracing off), and warnings about what is ignored."""
    warnings: list[str] = []
    if _env(env, "OTEL_SDK_DISABLED").lower() == "true":
        return None, warnings
    named = _env(env, "OTEL_TRACES_EXPORTER") or config.exporter
    wanted = [name.strip().lower() for name in named.split(",") if name.strip()]
    exporters = tuple(dict.fromkeys(name for name in wanted if name in EXPORTERS))
    unknown = [name for name in wanted if name not in (*EXPORTERS, "none")]
    if unknown:
        warnings.append(f"trace exporter(s) {', '.join(unknown)} not supported (otlp, console): ignored")
    if not exporters:
        return None, warnings
    protocol = (_env(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf")
    if "otlp" in exporters and protocol not in PROTOCOLS:
        warnings.append(f"OTLP protocol '{protocol}' not supported (http/protobuf, grpc): no OTLP export")
        exporters = tuple(name for name in exporters if name != "otlp")
        if not exporters:
            return None, warnings
    endpoint = None
    endpoint_in_env = _env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if config.endpoint and not endpoint_in_env:
        # A base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is: OTLP/HTTP takes traces at /v1/traces.
        endpoint = config.endpoint.rstrip("/") + ("/v1/traces" if protocol == "http/protobuf" else "")
    resource = (pair.partition("=")[0].strip() for pair in _env(env, "OTEL_RESOURCE_ATTRIBUTES").split(","))
    named_in_env = bool(_env(env, "OTEL_SERVICE_NAME")) or "service.name" in resource
    return TracingPlan(exporters, protocol, endpoint, None if named_in_env else config.service_name), warnings


def start_tracing(config: TracingConfig, env: Mapping[str, str]) -> Tracing | None:
    """The process's tracer, or None when tracing is off (then the SDK is never imported)."""
    plan, warnings = tracing_plan(config, env)
    for warning in warnings:
        log.warning("tracing: %s", warning)
    if plan is None:
        return None
    from gateway.telemetry.otel import build_tracing  # the SDK's import cost, only when tracing is on

    return build_tracing(plan)


def request_trace(scope_state: Mapping[str, Any]) -> RequestTrace | None:
    """The request's trace when tracing is on (GatewayMiddleware put it in the scope's state), else None."""
    trace: RequestTrace | None = scope_state.get(TRACE_STATE)
    return trace
