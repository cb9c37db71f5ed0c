"""Span attributes of a tier attempt, as data: the OpenTelemetry GenAI semantic conventions for the call
(`gen_ai.*`, inference spans, `gen_ai.provider.name` rather than the deprecated `gen_ai.system`) and the
gateway's own decision (`recserve.*`). Pure functions of what the cascade already holds; imports no
OpenTelemetry, so it costs nothing while tracing is off.

Prompts and answers (`gen_ai.input.messages`, `gen_ai.output.messages`) are built only when asked for
(`logging.include_prompts`), in the conventions' JSON shape: `[{"role", "parts": [...]}]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from gateway import jsonio
from gateway.cascade.climb import Hop, reported_tokens
from gateway.config.schema import TierConfig
from gateway.protocol import Route
from gateway.upstream.backends import TierReply

Attributes = dict[str, Any]  # values: str, bool, int, float or a sequence of one of them

OPERATIONS: Final[Mapping[str, str]] = {"chat/completions": "chat", "completions": "text_completion",
                                         "embeddings": "embeddings"}
# litellm's provider prefixes whose GenAI name differs; others are passed on as litellm writes them.
_LITELLM_PROVIDERS: Final = {"bedrock": "aws.bedrock", "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai",
                             "azure": "azure.ai.openai", "mistral": "mistral_ai", "watsonx": "ibm.watsonx.ai"}
# Hop outcomes as the verdict a span reports.
_VERDICTS: Final = {"accepted": "kept", "served": "served", "escalated": "escalated", "invalid": "invalid",
                    "verify": "verify", "busy": "busy"}
# Request fields with a GenAI attribute of their own.
_REQUEST_FIELDS: Final = (("max_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"),
                          ("top_p", "gen_ai.request.top_p"), ("seed", "gen_ai.request.seed"))


def operation_name(route: Route) -> str:
    return OPERATIONS.get(route, route)


def provider_name(tier: TierConfig) -> str:
    """`openai` for every OpenAI-compatible endpoint (the conventions name the API a client speaks when
    it cannot know the system behind it); a litellm tier: its model string's provider prefix."""
    if tier.provider != "litellm":
        return "openai"
    prefix = tier.model.partition("/")[0] if "/" in tier.model else "litellm"
    return _LITELLM_PROVIDERS.get(prefix, prefix)


def tier_attributes(tier: TierConfig, level: int) -> Attributes:
    """What is fixed per tier: its model, provider and address, and its place in the cascade."""
    url = urlsplit(tier.base_url)
    attributes: Attributes = {"gen_ai.provider.name": provider_name(tier), "gen_ai.request.model": tier.model,
                              "recserve.tier": tier.name, "recserve.tier.level": level}
    if url.hostname:
        attributes["server.address"] = url.hostname
        attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    return attributes


def request_attributes(body: Mapping[str, Any]) -> Attributes:
    """The client's sampling settings, as forwarded."""
    attributes: Attributes = {}
    for key, name in _REQUEST_FIELDS:
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attributes["gen_ai.request.choice.count"] = n
    return attributes


def response_attributes(reply: TierReply) -> Attributes:
    """The answer's id, model, finish reasons and token usage, where the tier reported them (a stream: in
    the chunks read so far)."""
    attributes: Attributes = {}
    heads = reply.chunks[:1] if reply.chunks else [reply.body]
    for key, name in (("id", "gen_ai.response.id"), ("model", "gen_ai.response.model")):
        value = heads[0].get(key)
        if isinstance(value, str) and value:
            attributes[name] = value[:256]
    reasons = finish_reasons(reply.chunks or [reply.body])
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    attributes.update(usage_attributes(reply.body))
    return attributes


def usage_attributes(body: Mapping[str, Any] | None) -> Attributes:
    """`usage.prompt_tokens` / `completion_tokens` as the conventions' input and output tokens."""
    attributes: Attributes = {}
    for key, name in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                      ("completion_tokens", "gen_ai.usage.output_tokens")):
        tokens = reported_tokens(body, key)
        if tokens is not None:
            attributes[name] = tokens
    return attributes


def finish_reasons(bodies: Sequence[Mapping[str, Any]]) -> list[str]:
    reasons: list[str] = []
    for body in bodies:
        choices = body.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            reason = choice.get("finish_reason") if isinstance(choice, Mapping) else None
            if isinstance(reason, str) and reason:
                reasons.append(reason[:64])
    return reasons


def hop_attributes(hop: Hop | None, reply: TierReply | None, probe: bool) -> Attributes:
    """The gateway's decision at this tier: verdict and reason, confidence and threshold, whether it was
    judged on a stream's first tokens (early commit), and a chained gateway's own path."""
    attributes: Attributes = {"recserve.probe": probe}
    verdict, reason = verdict_of(hop, reply, probe)
    attributes["recserve.verdict"] = verdict
    if reason is not None:
        attributes["recserve.reason"] = reason
    if hop is None:
        return attributes
    if hop.confidence is not None:
        attributes["recserve.confidence"] = hop.confidence
    if hop.threshold is not None:
        attributes["recserve.threshold"] = hop.threshold
    if hop.upstream_path:
        attributes["recserve.upstream_path"] = hop.upstream_path
    early = reply is not None and not reply.complete and hop.outcome in ("accepted", "escalated", "verify")
    attributes["recserve.early_commit"] = early
    return attributes


def verdict_of(hop: Hop | None, reply: TierReply | None, probe: bool) -> tuple[str, str | None]:
    """(verdict, reason): kept, served (the last tier), escalated, invalid, verify, busy, error; a probe's
    answer is `probed`; an attempt cut short (the client left, the gateway stopped) `cancelled`."""
    if hop is None:
        return ("probed", None) if reply is not None else ("cancelled", None)
    if hop.reason == "busy":
        return "busy", "busy"
    verdict = _VERDICTS.get(hop.outcome)
    if verdict is None:  # fault, failed: the tier gave no answer
        return "error", hop.reason
    if hop.outcome == "escalated":
        return verdict, hop.reason or "low_confidence"
    return verdict, hop.reason


def error_type(hop: Hop | None, reply: TierReply | None) -> str | None:
    """The `error.type` of an attempt that failed: the fault's kind; None when it answered (an answer
    escalated is not an error) or when a lower tier was only too busy to be asked."""
    if hop is None:
        return None if reply is not None else "cancelled"
    if hop.outcome == "failed" or (hop.outcome == "fault" and hop.reason != "busy"):
        return hop.reason or "_OTHER"
    return None


def input_messages(route: Route, body: Mapping[str, Any]) -> str:
    """The prompt as `gen_ai.input.messages` JSON (only with `logging.include_prompts`)."""
    if route != "chat/completions":
        prompt = body.get("prompt")
        return _json([{"role": "user", "parts": [_text(prompt if isinstance(prompt, str) else jsonio.dumps(prompt)
                                                       .decode())]}])
    messages = body.get("messages")
    return _json([_message(m) for m in messages if isinstance(m, Mapping)] if isinstance(messages, list) else [])


def output_messages(body: Mapping[str, Any]) -> str:
    """A whole answer as `gen_ai.output.messages` JSON (only with `logging.include_prompts`)."""
    out: list[dict[str, Any]] = []
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        entry = _message(message) if isinstance(message, Mapping) else {
            "role": "assistant", "parts": [_text(choice.get("text"))]}
        entry["role"] = "assistant"
        if isinstance(choice.get("finish_reason"), str):
            entry["finish_reason"] = choice["finish_reason"]
        out.append(entry)
    return _json(out)


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(_text(content))
    elif isinstance(content, list):
        parts += [_text(part.get("text")) if isinstance(part, Mapping) and part.get("type") == "text"
                  else {"type": "blob", "content": part} for part in content]
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                          "arguments": function.get("arguments")})
    if message.get("role") == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                                           "response": content}]}
    return {"role": message.get("role", "user"), "parts": parts}


def _text(content: Any) -> dict[str, Any]:
    return {"type": "text", "content": content if isinstance(content, str) else ""}


def _json(value: Any) -> str:
    return jsonio.dumps(value).decode()
