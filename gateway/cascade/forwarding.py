"""What tiers receive: the task a request is judged as, and the body forwarded with logprobs on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.protocol import CascadeAsk, Route
from policies.base import Task

CLASSIFICATION_MAX_TOKENS = 4


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
