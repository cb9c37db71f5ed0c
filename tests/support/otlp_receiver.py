"""A real OTLP/HTTP trace receiver on loopback: what an OpenTelemetry collector's `otlphttp` receiver
does for traces, minus the pipeline. It accepts `POST /v1/traces` with a protobuf
`ExportTraceServiceRequest` (gzip or deflate if the exporter compresses), decodes it with the
`opentelemetry-proto` package and keeps every span; it answers with an `ExportTraceServiceResponse`.

With `decode=False` it only counts spans, requests and bytes (the benchmark's tracing-on side: the
receiver must not be the thing measured)."""

from __future__ import annotations

import gzip
import os
import secrets
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

_RESPONSE = ExportTraceServiceResponse().SerializeToString()


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    resource: dict[str, Any]

    def strings(self) -> list[str]:
        """Every string an attribute holds (inside arrays too), to look for what must not be there."""
        found: list[str] = []
        for value in [*self.attributes.values(), *self.resource.values(), self.name]:
            found += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
        return found


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _parse(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def count_spans(body: bytes) -> int:
    return sum(len(scope.spans) for resource in _parse(body).resource_spans for scope in resource.scope_spans)


def decode(body: bytes) -> list[ReceivedSpan]:
    request = _parse(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    service=str(resource.get("service.name", "")), trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(), name=span.name,
                    kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    attributes={kv.key: _value(kv.value) for kv in span.attributes},
                    status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    resource=resource))
    return spans


class OtlpReceiver:
    """`start()`, point `OTEL_EXPORTER_OTLP_ENDPOINT` at `url`, read `spans`; `stop()` when done."""

    def __init__(self, *, decode: bool = True) -> None:
        self.decode = decode
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._headers: list[dict[str, str]] = []
        self.body_bytes = 0
        self.span_count = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    @property
    def requests(self) -> list[dict[str, str]]:
        """The headers of each export request received (names lower-cased)."""
        with self._lock:
            return list(self._headers)

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_for(self, ready: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 20.0) -> list[ReceivedSpan]:
        """Poll until `ready(spans)` (the SDK exports in batches, in the background); the spans either way."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans
            if ready(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def _received(self, headers: dict[str, str], body: bytes) -> None:
        spans = decode(body) if self.decode else []
        count = len(spans) if self.decode else count_spans(body)
        with self._lock:
            self._headers.append(headers)
            self._spans += spans
            self.body_bytes += len(body)
            self.span_count += count

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the exporter keeps its connection open

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                encoding = self.headers.get("content-encoding", "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces" or "protobuf" not in self.headers.get("content-type", ""):
                    self._answer(404, b"")
                    return
                receiver._received({k.lower(): v for k, v in self.headers.items()}, body)
                self._answer(200, _RESPONSE)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per export
                return

        return Handler


def otel_env(receiver: OtlpReceiver | None, service: str, **extra: str) -> dict[str, str]:
    """This process's environment without any OTEL_* variable, plus (with a receiver) tracing on the standard
    way, exporting to it every 100 ms; `extra` adds or overrides variables."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    if receiver is not None:
        env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_SERVICE_NAME=service,
                   OTEL_BSP_SCHEDULE_DELAY="100")
    env.update(extra)
    return env


def trace_ids() -> tuple[str, str]:
    """A fresh (trace id, span id) pair, as a client's own span would have."""
    return secrets.token_hex(16), secrets.token_hex(8)
