"""OpenTelemetry traces, imported only when tracing is on (gateway.telemetry.tracing decides).

Spans: one SERVER span per `/v1` request (GatewayMiddleware), child of the client's `traceparent`;
one CLIENT span per tier attempt (the cascade's `AttemptWatch` seam: from the wait for the tier's
gate to the decision on its answer; an answer served as a live stream, to the stream's end) and per
quality probe, each child of the server span. Each tier request carries its own span's `traceparent`
(and the client's `tracestate`), so a chained gateway or an instrumented tier continues the trace.

The provider is this process's own (no global tracer provider is set); the SDK reads the standard
OTEL_* variables for everything the plan leaves to it (exporter endpoint, headers, timeout,
compression, sampler, batch sizes, resource attributes).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Final

from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from starlette.types import Scope as ASGIScope

from gateway.cascade.climb import CascadeRequest, Hop, Tier
from gateway.protocol import Route
from gateway.telemetry import genai
from gateway.telemetry.observer import CascadeSummary
from gateway.telemetry.tracing import TracingPlan
from gateway.upstream.backends import TierReply

log = logging.getLogger("recserve.tracing")

SCOPE_NAME: Final = "recserve"
_ROUTES: Final = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages",
                            "/v1/embeddings", "/v1/models"})
_LIVE: Final = frozenset({"accepted", "served"})  # outcomes whose answer may still be streaming


def _version() -> str:
    try:
        return metadata.version("recserve")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _otlp_exporter(plan: TracingPlan) -> SpanExporter | None:
    if plan.protocol == "grpc":  # not a dependency (grpcio is large): used when installed
        try:
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ModuleNotFoundError:
            log.warning("tracing: OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                        "(pip install opentelemetry-exporter-otlp-proto-grpc); no OTLP export")
            return None
        exporter: SpanExporter = grpc.OTLPSpanExporter(endpoint=plan.endpoint) if plan.endpoint \
            else grpc.OTLPSpanExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=plan.endpoint) if plan.endpoint else OTLPSpanExporter()


def build_tracing(plan: TracingPlan) -> OtelTracing | None:
    """A provider with a batching exporter per planned exporter; None when none could be built."""
    resource = Resource.create({SERVICE_VERSION: _version()})
    if plan.service_name is not None:
        resource = resource.merge(Resource({SERVICE_NAME: plan.service_name}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER, else parent-based, always on
    built = 0
    for name in plan.exporters:
        exporter = _otlp_exporter(plan) if name == "otlp" else ConsoleSpanExporter()
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* sizes and delays
            built += 1
    if not built:
        provider.shutdown()
        return None
    log.info("tracing on: %s (%s), service %s", ", ".join(plan.exporters), plan.protocol,
             resource.attributes.get(SERVICE_NAME))
    return OtelTracing(provider)


def _http_route(path: str) -> str | None:
    if path in _ROUTES:
        return path
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{response_id}"
    return None


class OtelTracing:
    """The process's tracer (gateway.telemetry.tracing.Tracing)."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE_NAME, _version())
        self._propagator = get_global_textmap()  # OTEL_PROPAGATORS; by default W3C trace context and baggage
        self._fields = frozenset(field.encode("latin-1") for field in self._propagator.fields)

    def start(self, scope: ASGIScope) -> ServerTrace:
        carrier = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope.get("headers", ()) if name in self._fields}
        method = str(scope.get("method", "GET"))
        route = _http_route(scope["path"])
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope["path"],
                                      "url.scheme": scope.get("scheme", "http")}
        if route is not None:
            attributes["http.route"] = route
        span = self._tracer.start_span(f"{method} {route}" if route else method, kind=SpanKind.SERVER,
                                       context=self._propagator.extract(carrier), attributes=attributes)
        return ServerTrace(self, span)

    def client_span(self, name: str, parent: Span, attributes: Mapping[str, Any]) -> Span:
        return self._tracer.start_span(name, kind=SpanKind.CLIENT, context=set_span_in_context(parent),
                                       attributes=attributes)

    def inject(self, span: Span, headers: Mapping[str, str]) -> dict[str, str]:
        """`headers` plus the trace context naming `span` as the parent of what the tier does."""
        carrier = dict(headers)
        self._propagator.inject(carrier, context=set_span_in_context(span))
        return carrier

    def shutdown(self) -> None:
        self._provider.shutdown()  # flushes every batch processor (bounded by its exporter's timeout)


class ServerTrace:
    """One request's server span (gateway.telemetry.tracing.RequestTrace)."""

    def __init__(self, tracing: OtelTracing, span: Span) -> None:
        self.tracing = tracing
        self.span = span
        self._live: list[TierAttempt] = []  # attempts whose answer is still streaming to the client

    def cascade(self, *, route: Route, model: str, policy: str, task: str, workload: str, tenant: str | None,
                include_prompts: bool) -> CascadeWatch:
        shared: dict[str, Any] = {"recserve.task": task, "recserve.workload": workload}
        if tenant is not None:
            shared["recserve.tenant"] = tenant
        self.span.set_attributes({**shared, "recserve.model": model, "recserve.policy": policy})
        return CascadeWatch(self, route, shared, include_prompts)

    def serving(self, attempt: TierAttempt) -> None:
        self._live.append(attempt)

    def finish(self, status: int, summary: CascadeSummary | None) -> None:
        for attempt in self._live:
            attempt.finish_live(summary.usage if summary is not None else None)
        self._live.clear()
        span = self.span
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            if summary is not None:
                span.set_attributes(_summary_attributes(summary))
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(status))
        span.end()


def _summary_attributes(summary: CascadeSummary) -> dict[str, Any]:
    attributes: dict[str, Any] = {"recserve.path": summary.path, "recserve.degraded": summary.degraded,
                                  "recserve.window": "local" if summary.window_fallback else "shared",
                                  "recserve.uplink_tokens": summary.uplink_tokens}
    for name, value in (("recserve.tier", summary.tier), ("recserve.confidence", summary.confidence),
                        ("recserve.threshold", summary.threshold), ("recserve.invalid", summary.served_invalid)):
        if value is not None:
            attributes[name] = value
    return attributes


class CascadeWatch:
    """The cascade's tier attempts of one request as client spans (gateway.cascade.climb.AttemptWatch)."""

    def __init__(self, trace: ServerTrace, route: Route, shared: dict[str, Any], include_prompts: bool) -> None:
        self.trace = trace
        self.operation = genai.operation_name(route)
        self.shared = shared
        self.include_prompts = include_prompts
        self._prompt: str | None = None

    def attempt(self, tier: Tier, request: CascadeRequest, *, probe: bool = False) -> TierAttempt:
        tracing = self.trace.tracing
        attributes = {"gen_ai.operation.name": self.operation, **genai.tier_attributes(tier.config, tier.level),
                      **self.shared,
                      **genai.request_attributes(request.body)}
        if self.include_prompts:
            if self._prompt is None:
                self._prompt = genai.input_messages(request.route, request.body)
            attributes["gen_ai.input.messages"] = self._prompt
        span = tracing.client_span(f"{self.operation} {tier.config.model}", self.trace.span, attributes)
        return TierAttempt(self, span, tracing.inject(span, request.forward_headers), probe)


class TierAttempt:
    """One tier call's client span (gateway.cascade.climb.Attempt)."""

    __slots__ = ("_probe", "_span", "_watch", "headers")

    def __init__(self, watch: CascadeWatch, span: Span, headers: dict[str, str], probe: bool) -> None:
        self._watch = watch
        self._span = span
        self.headers = headers
        self._probe = probe

    def end(self, hop: Hop | None, reply: TierReply | None) -> None:
        span = self._span
        if span.is_recording():
            if reply is not None:
                span.set_attributes(genai.response_attributes(reply))
                if self._watch.include_prompts and reply.complete:
                    span.set_attribute("gen_ai.output.messages", genai.output_messages(reply.body))
            span.set_attributes(genai.hop_attributes(hop, reply, self._probe))
            error = genai.error_type(hop, reply)
            if error is not None:
                span.set_attribute("error.type", error)
                span.set_status(Status(StatusCode.ERROR, error))
        if reply is not None and not reply.complete and hop is not None and hop.outcome in _LIVE:
            self._watch.trace.serving(self)  # its answer streams on: the span ends with the request
            return
        span.end()

    def finish_live(self, usage: Mapping[str, Any] | None) -> None:
        """The streamed answer has ended: its usage, as the stream reported it."""
        if usage is not None and self._span.is_recording():
            self._span.set_attributes(genai.usage_attributes({"usage": usage}))
        self._span.end()
