"""When tracing is on and how it is set up: the standard OTEL_* variables over the config's `tracing:`
section; the client trace context passed to tiers; the tenant as spans name it. Pure functions."""

from __future__ import annotations

import pytest

from gateway.cascade.forwarding import trace_context
from gateway.config.schema import TracingConfig
from gateway.telemetry.tracing import TracingPlan, tracing_plan

OFF = TracingConfig()
ON = TracingConfig(exporter="otlp", endpoint="http://collector:4318/", service_name="edge-gateway")
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("env", [
    {},  # the default
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},  # an endpoint alone
    {"OTEL_TRACES_EXPORTER": "none"},
    {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
    {"OTEL_TRACES_EXPORTER": "zipkin"},  # not supported: warned about, ignored
    {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},  # not supported
])
def test_tracing_is_off_unless_an_exporter_is_named(env: dict[str, str]) -> None:
    plan, _ = tracing_plan(OFF, env)
    assert plan is None


def test_the_standard_variables_turn_it_on_and_leave_the_rest_to_the_sdk() -> None:
    plan, warnings = tracing_plan(OFF, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                        "OTEL_SERVICE_NAME": "gw"})
    assert plan == TracingPlan(("otlp",), "http/protobuf", endpoint=None, service_name=None) and warnings == []
    plan, warnings = tracing_plan(OFF, {"OTEL_TRACES_EXPORTER": "otlp,console,jaeger"})
    assert plan is not None and plan.exporters == ("otlp", "console") and plan.service_name == "recserve"
    assert warnings == ["trace exporter(s) jaeger not supported (otlp, console): ignored"]


def test_the_config_section_applies_where_the_environment_is_silent() -> None:
    plan, _ = tracing_plan(ON, {})
    assert plan == TracingPlan(("otlp",), "http/protobuf", "http://collector:4318/v1/traces", "edge-gateway")
    # Each variable wins over its key.
    plan, _ = tracing_plan(ON, {"OTEL_TRACES_EXPORTER": "none"})
    assert plan is None
    plan, _ = tracing_plan(ON, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other:4318/v1/traces",
                                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, service.name=from-env"})
    assert plan is not None and plan.endpoint is None and plan.service_name is None
    plan, _ = tracing_plan(ON, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert plan is not None and plan.protocol == "grpc" and plan.endpoint == "http://collector:4318"


def test_only_a_well_formed_client_trace_context_is_passed_on() -> None:
    assert trace_context(PARENT, "vendor=opaque") == {"traceparent": PARENT, "tracestate": "vendor=opaque"}
    assert trace_context(PARENT, None) == {"traceparent": PARENT}
    assert trace_context(PARENT, "x" * 513) == {"traceparent": PARENT}  # over the length every hop must pass
    assert trace_context(PARENT, "a=b\x00") == {"traceparent": PARENT}
    for bad in ("00-xyz-abc-01", PARENT.upper(), "ff" + PARENT[2:], "00-" + "0" * 32 + PARENT[35:],
                PARENT[:36] + "0" * 16 + "-01", PARENT + "\r\nx-injected: 1", PARENT + "\n"):
        assert trace_context(bad, "vendor=opaque") == {}, bad
