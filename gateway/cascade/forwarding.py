"""What tiers receive: the task a request is judged as, the body forwarded with logprobs on, and the
client's W3C trace context."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from gateway.protocol import CascadeAsk, Route
from policies.base import Task

CLASSIFICATION_MAX_TOKENS = 4
# W3C Trace Context, version 00 (later versions may append fields; their first four are these).
_TRACEPARENT: Final = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-.*)?")
MAX_TRACESTATE_CHARS: Final = 512  # what the spec asks every hop to pass on at least; longer is dropped


def resolve_task(request: CascadeAsk, header: str | None, uses_tools: bool = False) -> Task:
    """Extension first, then the header, then inference from labels or a short answer budget.

    A request offering tools is always generation: its answer may be a call, whose first token says
    nothing about a label, and its probes compare calls, not labels.
    """
    if uses_tools:
        return "generation"
    extension = request.recserve
    if extension is not None and extension.task is not None:
        return extension.task
    if header in ("classification", "generation"):
        return header  # type: ignore[return-value]  # narrowed by the membership test
    if extension is not None and extension.labels:
        return "classification"
    budget = request.answer_budget
    if budget is not None and budget <= CLASSIFICATION_MAX_TOKENS:
        return "classification"
    return "generation"


def forward_body(raw: Mapping[str, Any], route: Route, top_logprobs: int) -> dict[str, Any]:
    """The body tiers receive: our extension stripped, logprobs always on, the client's fields kept."""
    body = {k: v for k, v in raw.items() if k != "recserve"}
    if route == "chat/completions":
        body["logprobs"] = True
        body["top_logprobs"] = max(_int(raw.get("top_logprobs")), top_logprobs)
    elif route == "completions":
        body["logprobs"] = max(_int(raw.get("logprobs")), top_logprobs)
    return body


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def trace_context(traceparent: str | None, tracestate: str | None) -> dict[str, str]:
    """The client's `traceparent` (and `tracestate`) when well formed, passed to every tier as they came,
    so that instrumented tiers join the client's trace; with tracing on, each tier attempt's own span
    replaces `traceparent` (gateway.telemetry.otel)."""
    if traceparent is None or len(traceparent) > 512 or not _TRACEPARENT.fullmatch(traceparent):
        return {}
    if tracestate is None or len(tracestate) > MAX_TRACESTATE_CHARS or not tracestate.isprintable():
        return {"traceparent": traceparent}
    return {"traceparent": traceparent, "tracestate": tracestate}
