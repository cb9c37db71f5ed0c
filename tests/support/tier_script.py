"""What a scripted tier answers: directives read from the request text, and OpenAI-shaped bodies.

A directive is `[<tier>:<directive>]` anywhere in the request text; a tier obeys those naming it
or `*`. Because the gateway forwards the same messages to every tier, one prompt scripts the whole
cascade, e.g. `[device:0.2][edge:0.95]`. Pure functions, no I/O.

Without directives the answer is `"<tier> answer"`: tokens "<tier>", " answer", each at p 0.9.
    0.42                  one token "<tier> says" at p 0.42 (p 0 → logprob -9999.0)
    tokens=0.5,0.8        tokens "<tier>", " t1", ... at those probabilities
    label=A:0.6,b:0.4     one token, the first label verbatim; top_logprobs are the entries in order
    answer=TEXT           TEXT as one token (p 0.9, or the `0.42` probability if also given)
    choices=0.9,0.2       one choice per probability, each a single token "<tier> says"
    call=NAME:ARGS        a tool call of NAME with the arguments text ARGS (percent-decoded), verbatim;
                          repeat for parallel calls. Tokens: NAME, then ARGS in pieces of 4 characters
                          (streamed as one `delta.tool_calls` fragment each), each at p 0.9 (or `0.42`)
    status=N | sleep=S | stall=S | header=NAME:VALUE (VALUE percent-decoded)
    reset garbage nologprobs nan empty tool llamacpp cut
    length                finish_reason "length": the answer ends at the token limit
Bodies cannot contain brackets; an unknown directive is a 400 so a typo cannot pass silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

DIRECTIVE = re.compile(r"\[([A-Za-z0-9_.\-]+|\*):([^\[\]]*)\]")
DEFAULT_P = 0.9
ZERO_LOGPROB = -9999.0  # ln(0) is -inf, which JSON cannot carry
FLAGS = frozenset({"reset", "garbage", "nologprobs", "nan", "empty", "tool", "llamacpp", "cut", "length"})


class ScriptError(ValueError):
    """A directive this tier does not understand: a typo in a test should fail loudly."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    logprob: float
    top: tuple[tuple[str, float], ...]  # (text, logprob), most likely first


@dataclass(slots=True)
class Script:
    probs: list[float] | None = None  # `0.42` (one token) or `tokens=...`
    answer: str | None = None
    labels: list[tuple[str, float]] | None = None
    choices: list[float] | None = None
    status: int | None = None
    sleep_s: float = 0.0
    stall_s: float = 0.0
    headers: list[tuple[str, str]] = field(default_factory=list)
    reset: bool = False
    garbage: bool = False
    nologprobs: bool = False
    nan: bool = False
    empty: bool = False
    tool: bool = False
    llamacpp: bool = False
    cut: bool = False
    length: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments text)


def parse_script(tier: str, text: str) -> Script:
    script = Script()
    for match in DIRECTIVE.finditer(text):
        if match[1] in (tier, "*"):
            _apply(script, match[2])
    return script


def _apply(script: Script, directive: str) -> None:
    key, has_value, value = directive.partition("=")
    key = key.strip()
    if not has_value:
        if key in FLAGS:
            setattr(script, key, True)
        else:
            script.probs = [_prob(key, directive)]
        return
    match key:
        case "tokens":
            script.probs = [_prob(item, directive) for item in value.split(",")]
        case "choices":
            script.choices = [_prob(item, directive) for item in value.split(",")]
        case "label":
            script.labels = [_label(item, directive) for item in value.split(",")]
        case "answer":
            script.answer = value
        case "status" if value.strip().isdigit():
            script.status = int(value)
        case "sleep":
            script.sleep_s = _seconds(value, directive)
        case "stall":
            script.stall_s = _seconds(value, directive)
        case "call" if ":" in value:
            name, _, arguments = value.partition(":")
            script.calls.append((name.strip(), unquote(arguments)))
        case "header" if ":" in value:
            name, _, header_value = value.partition(":")
            # Percent-decoding lets a test script values with brackets, e.g. `edge%5Ba>b%5D`.
            script.headers.append((name.strip(), unquote(header_value.strip())))
        case _:
            raise ScriptError(f"unknown scripted directive {directive!r}")


def _prob(text: str, directive: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise ScriptError(f"unknown scripted directive {directive!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ScriptError(f"probability out of [0, 1] in {directive!r}")
    return p


def _label(item: str, directive: str) -> tuple[str, float]:
    text, colon, p = item.rpartition(":")
    if not colon or not text:
        raise ScriptError(f"label entries are text:probability in {directive!r}")
    return text, _prob(p, directive)  # text kept verbatim: leading spaces and case are the point


def _seconds(text: str, directive: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ScriptError(f"bad duration in {directive!r}") from None
    if not 0.0 <= seconds < math.inf:
        raise ScriptError(f"bad duration in {directive!r}")
    return seconds


def logprob(p: float) -> float:
    return math.log(p) if p > 0 else ZERO_LOGPROB


def _token(text: str, p: float) -> Token:
    # Alternatives are less likely than the token and leave the total at most 1.
    alt1 = min(p, 1.0 - p) * 0.5
    alts = [(f" alt{k}", q) for k, q in ((1, alt1), (2, alt1 * 0.5)) if q > 0]
    return Token(text, logprob(p), ((text, logprob(p)), *((t, logprob(q)) for t, q in alts)))


ARGUMENT_PIECE = 4  # characters of a scripted call's arguments per token (and per streamed fragment)


def argument_pieces(arguments: str) -> list[str]:
    return [arguments[i:i + ARGUMENT_PIECE] for i in range(0, len(arguments), ARGUMENT_PIECE)]


def call_tokens(script: Script) -> list[tuple[Token, list[Token]]]:
    """Each scripted call's name token and its arguments' tokens (the piece is the token's text)."""
    p = script.probs[0] if script.probs is not None and len(script.probs) == 1 else DEFAULT_P
    return [(_token(name, p), [_token(piece, p) for piece in argument_pieces(arguments)])
            for name, arguments in script.calls]


def _tokens(tier: str, script: Script) -> list[Token]:
    if script.empty:
        return []
    if script.calls:
        return [token for name, pieces in call_tokens(script) for token in (name, *pieces)]
    if script.labels:
        first, p = script.labels[0]
        return [Token(first, logprob(p), tuple((text, logprob(q)) for text, q in script.labels))]
    if script.tool:
        return [_token("get_weather", DEFAULT_P)]
    if script.probs is not None and len(script.probs) == 1:
        return [_token(script.answer or f"{tier} says", script.probs[0])]
    if script.probs is not None:
        return [_token(tier if i == 0 else f" t{i}", p) for i, p in enumerate(script.probs)]
    if script.answer is not None:
        return [_token(script.answer, DEFAULT_P)]
    return [_token(tier, DEFAULT_P), _token(" answer", DEFAULT_P)]


def choice_tokens(tier: str, script: Script, n: int) -> list[list[Token]]:
    """The tokens of each choice."""
    if script.choices is not None:
        return [[_token(f"{tier} says", p)] for p in script.choices]
    tokens = _tokens(tier, script)
    if script.nan:
        tokens = [Token(t.text, math.nan, ((t.text, math.nan),)) for t in tokens]
    return [tokens for _ in range(n)]


def request_text(path: str, body: dict[str, Any]) -> str:
    """All the text a request carries: message contents, the prompt or the embedding input."""
    if path.endswith("/chat/completions"):
        parts: list[str] = []
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [
                    p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                ]
        return "\n".join(parts)
    value = body.get("prompt" if path.endswith("/completions") else "input")
    if isinstance(value, list):
        return "\n".join(item for item in value if isinstance(item, str))
    return value if isinstance(value, str) else ""
