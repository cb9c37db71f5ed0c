"""What clients receive of a tier's answer, in every API: logprobs only when asked for, trimmed to
the number asked for; `model` names the serving tier's model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.cascade.climb import CascadeResult
from gateway.protocol import Route


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


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
