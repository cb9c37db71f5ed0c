"""Request and response shaping around the cascade: what tiers receive, what clients get back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.cascade.climb import CascadeResult
from gateway.protocol import ChatCompletionRequest, CompletionRequest, Route
from policies.base import Task

HOPS_HEADER = "x-recserve-hops"
VIA_HEADER = "x-recserve-via"  # comma-separated instance ids of the gateways a request passed
TASK_HEADER = "x-recserve-task"
CLASSIFICATION_MAX_TOKENS = 4


def resolve_task(request: ChatCompletionRequest | CompletionRequest, header: str | None) -> Task:
    """Extension first, then the header, then inference from labels or a short answer budget."""
    extension = request.recserve
    if extension is not None and extension.task is not None:
        return extension.task
    if header in ("classification", "generation"):
        return header  # type: ignore[return-value]  # narrowed by the membership test
    if extension is not None and extension.labels:
        return "classification"
    budget = request.answer_budget()
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


def client_body(result: CascadeResult, route: Route, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The serving tier's answer as the client asked for it: its logprobs only if requested and
    trimmed to the requested count; `model` names the serving tier's model."""
    body = dict(result.reply.body)
    body["model"] = result.tier.served_model
    wanted = wanted_top_logprobs(route, raw)
    choices = body.get("choices")
    if isinstance(choices, list):
        body["choices"] = [shape_choice(c, wanted) for c in choices]
    return body


def wanted_top_logprobs(route: Route, raw: Mapping[str, Any]) -> int | None:
    """How many alternatives per token the client asked for; None when it asked for no logprobs."""
    if route == "chat/completions":
        return _int(raw.get("top_logprobs")) if raw.get("logprobs") is True else None
    logprobs = raw.get("logprobs")
    return _int(logprobs) if logprobs is not None else None


def shape_choice(choice: Any, wanted: int | None) -> Any:
    if not isinstance(choice, dict) or choice.get("logprobs") is None:
        return choice
    choice = dict(choice)
    if wanted is None:
        choice["logprobs"] = None
        return choice
    logprobs = choice["logprobs"]
    if isinstance(logprobs, dict):
        logprobs = dict(logprobs)
        if isinstance(logprobs.get("content"), list):
            logprobs["content"] = [_trim_chat_token(t, wanted) for t in logprobs["content"]]
        if isinstance(logprobs.get("top_logprobs"), list):
            logprobs["top_logprobs"] = [_trim_legacy_top(t, wanted) for t in logprobs["top_logprobs"]]
        choice["logprobs"] = logprobs
    return choice


def _trim_chat_token(token: Any, wanted: int) -> Any:
    if isinstance(token, dict) and isinstance(token.get("top_logprobs"), list):
        return {**token, "top_logprobs": token["top_logprobs"][:wanted]}
    return token


def _trim_legacy_top(top: Any, wanted: int) -> Any:
    if not isinstance(top, dict):
        return top
    best = sorted(top.items(), key=lambda kv: kv[1] if isinstance(kv[1], int | float) else float("-inf"),
                  reverse=True)
    return dict(best[:wanted])


def _number(value: float | None) -> str:
    return "none" if value is None else repr(value)


def result_headers(result: CascadeResult, task: Task, request_id: str) -> dict[str, str]:
    headers = {
        "x-recserve-tier": result.tier.name,
        "x-recserve-path": result.path,
        "x-recserve-confidence": _number(result.confidence),
        "x-recserve-threshold": _number(result.threshold),
        "x-recserve-task": task,
        "x-recserve-uplink-tokens": str(result.uplink_tokens),
        "x-request-id": request_id,
    }
    if result.degraded:
        headers["x-recserve-degraded"] = "true"
    if result.window_fallback:
        headers["x-recserve-window"] = "local"
    return headers


def result_summary(result: CascadeResult, task: Task) -> dict[str, Any]:
    """The decision as data: what a stream's final chunk carries in its `recserve` field."""
    return {"tier": result.tier.name, "path": result.path, "confidence": result.confidence,
            "threshold": result.threshold, "task": task, "uplink_tokens": result.uplink_tokens,
            "degraded": result.degraded, "window": "local" if result.window_fallback else "shared"}
