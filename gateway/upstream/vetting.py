"""What a tier says, checked before a client sees it: its error text (credentials redacted, cut
short) and the `x-recserve-*` headers of chained gateways (only from tiers marked as gateways,
validated against the path grammar, capped)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MAX_MESSAGE_CHARS = 300
MAX_UPSTREAM_PATH_CHARS = 1024
MAX_PATH_DEPTH = 32
MAX_UPLINK_TOKENS = 10**12  # a chain cannot have shipped more; a bigger number is a lie

REDACTED = "[redacted]"
# Credentials as servers echo them: request heads, query strings, JSON or config dumps.
_CREDENTIAL_PATTERNS = (
    re.compile(r"(?i)\b((?:proxy-)?authorization)(\s*[:=]\s*|\"\s*:\s*\")(?:(?:bearer|basic|token)\s+)?[^\s\"',;]+"),
    re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"(?i)\b(x-api-key|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|secret|password|passwd)"
               r"(\"?\s*[:=]\s*\"?)[^\s\"',;&}]+"),
)
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# hop := name ("[" path "]")? ("(" reason ")" | marker)? ; path := hop (">" hop)*   (see cascade.render_path)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_REASON = re.compile(r"\([a-z_]{1,32}\)")  # an invalid answer's reason: `device(invalid_json)`
_MARKERS = "!~?"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials replaced, control characters removed, cut to MAX_MESSAGE_CHARS."""
    # Cut first, generously: the patterns run on a bounded text, and a secret cut in half here lies
    # past the final cut anyway.
    text = text[: 4 * MAX_MESSAGE_CHARS]
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _KEY_LIKE.sub(REDACTED, text)
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


def upstream_path(headers: Mapping[str, str], trusted: bool) -> str | None:
    """A chained gateway's `x-recserve-path`, when the tier is a gateway and the path is well formed."""
    if not trusted:
        return None
    raw = headers.get("x-recserve-path")
    if raw is None or len(raw) > MAX_UPSTREAM_PATH_CHARS or not valid_path(raw):
        return None
    return raw


def upstream_uplink_tokens(headers: Mapping[str, str], trusted: bool) -> int:
    """What a chained gateway reports it shipped further up; 0 unless trusted and a sane integer."""
    if not trusted:
        return 0
    raw = headers.get("x-recserve-uplink-tokens")
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 13:
        return 0
    return min(int(raw), MAX_UPLINK_TOKENS)


def valid_path(text: str) -> bool:
    """True when `text` is a path as gateways render it: `device>edge!>cloud[edge>cloud]`."""
    end = _parse_path(text, 0, 0)
    return end == len(text)


def _parse_path(text: str, at: int, depth: int) -> int:
    """Index after the path starting at `at`, or -1 when it is malformed."""
    if depth > MAX_PATH_DEPTH:
        return -1
    while True:
        name = _NAME.match(text, at)
        if name is None:
            return -1
        at = name.end()
        if at < len(text) and text[at] == "[":
            at = _parse_path(text, at + 1, depth + 1)
            if at < 0 or at >= len(text) or text[at] != "]":
                return -1
            at += 1
        reason = _REASON.match(text, at)
        if reason is not None:
            at = reason.end()
        elif at < len(text) and text[at] in _MARKERS:
            at += 1
        if at < len(text) and text[at] == ">":
            at += 1
            continue
        return at
