"""Logprob parsing (every layout real servers return) and the task-specific confidence estimators.

Parsers never raise on odd payloads: anything unusable becomes None ("no confidence"), which the
cascade treats as a reason to escalate.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from policies.base import Task, TokenLogprob
from policies.json_spans import value_spans

# A logprob a hair above zero is float noise from the server; anything clearly positive is nonsense.
_POSITIVE_NOISE = 1e-6


def parse_logprobs(logprobs: Any) -> list[TokenLogprob] | None:
    """Tokens of one choice from chat layout (`content[*]`), llama.cpp's completions (same layout)
    or legacy completions (`tokens`/`token_logprobs`/`top_logprobs`). None when absent or malformed."""
    if not isinstance(logprobs, Mapping):
        return None
    content = logprobs.get("content")
    if isinstance(content, list):
        return _parse_chat_layout(content)
    tokens = logprobs.get("tokens")
    values = logprobs.get("token_logprobs")
    if isinstance(tokens, list) and isinstance(values, list):
        return _parse_legacy_layout(tokens, values, logprobs.get("top_logprobs"))
    return None


def _parse_chat_layout(content: list[Any]) -> list[TokenLogprob] | None:
    parsed: list[TokenLogprob] = []
    for entry in content:
        if not isinstance(entry, Mapping):
            return None
        token, logprob = entry.get("token"), _number(entry.get("logprob"))
        if not isinstance(token, str) or logprob is None:
            return None
        top: list[tuple[str, float]] = []
        raw_top = entry.get("top_logprobs")
        if isinstance(raw_top, list):
            for alt in raw_top:
                if isinstance(alt, Mapping):
                    alt_token, alt_logprob = alt.get("token"), _number(alt.get("logprob"))
                    if isinstance(alt_token, str) and alt_logprob is not None:
                        top.append((alt_token, alt_logprob))
        parsed.append(TokenLogprob(token, logprob, tuple(top)))
    return parsed


def _parse_legacy_layout(tokens: list[Any], values: list[Any], tops: Any) -> list[TokenLogprob] | None:
    if len(tokens) != len(values):
        return None
    tops_list = tops if isinstance(tops, list) else []
    parsed: list[TokenLogprob] = []
    for i, (token, raw) in enumerate(zip(tokens, values, strict=True)):
        logprob = _number(raw)
        if not isinstance(token, str) or logprob is None:
            return None
        alts = tops_list[i] if i < len(tops_list) else None
        top: tuple[tuple[str, float], ...] = ()
        if isinstance(alts, Mapping):
            top = tuple(
                (t, v) for t, v in ((t, _number(v)) for t, v in alts.items()) if isinstance(t, str) and v is not None
            )
        parsed.append(TokenLogprob(token, logprob, top))
    return parsed


def _number(value: Any) -> float | None:
    # bool is an int subclass; a logprob of `true` is malformed, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: no logprob
        return None


def usable_logprob(logprob: float) -> float | None:
    """A logprob as a probability's log in [-inf, 0], or None when it is NaN or clearly positive."""
    if math.isnan(logprob) or logprob > _POSITIVE_NOISE:
        return None
    return min(logprob, 0.0)


def mean_probability(logprob_sum: float, count: int) -> float | None:
    """exp(mean logprob) from the sum and count of usable logprobs (None for no tokens)."""
    return math.exp(logprob_sum / count) if count else None


def joint_probability(logprob_sum: float, count: int) -> float | None:
    """exp(sum of logprobs) from the sum and count of usable logprobs (None for no tokens)."""
    return math.exp(logprob_sum) if count else None


def generation_confidence(tokens: Sequence[TokenLogprob], labels: Sequence[str] | None = None) -> float | None:
    """exp(mean token logprob): the inverse of the answer's normalised perplexity."""
    total = 0.0
    for token in tokens:
        logprob = usable_logprob(token.logprob)
        if logprob is None:
            return None
        total += logprob
    return mean_probability(total, len(tokens))


def classification_confidence(
    tokens: Sequence[TokenLogprob], labels: Sequence[str] | None = None
) -> float | None:
    """Max-softmax over candidate labels, renormalised from the first answer token's alternatives.

    The first token with visible text is the answer's first token (leading spaces or newlines are
    formatting). Without labels, the top-1 probability of that token.
    """
    first = next((t for t in tokens if t.token.strip()), None)
    if first is None:
        return None
    alternatives = first.top or ((first.token, first.logprob),)
    if not labels:
        best = max((lp for lp in (usable_logprob(v) for _, v in alternatives) if lp is not None), default=None)
        return math.exp(best) if best is not None else None
    mass = _label_mass(alternatives, labels)
    total = sum(mass.values())
    if total <= 0.0:
        return None  # the tier answered none of the labels
    return max(mass.values()) / total


def _label_mass(alternatives: Sequence[tuple[str, float]], labels: Sequence[str]) -> dict[str, float]:
    """Probability mass per label from the alternatives whose text starts that label.

    We do not have the tier's tokenizer, so a label's "first token" is matched as a prefix: an
    alternative matches a label it equals, or else the single label it is a prefix of (a prefix of
    several labels is ambiguous and ignored). Variants of one label (" Yes", "yes") add up.
    """
    folded = [label.strip().casefold() for label in labels]
    mass = dict.fromkeys(folded, 0.0)
    for text, raw in alternatives:
        logprob = usable_logprob(raw)
        key = text.strip().casefold()
        if logprob is None or not key:
            continue
        if key in mass:
            mass[key] += math.exp(logprob)
            continue
        candidates = [label for label in folded if label.startswith(key)]
        if len(candidates) == 1:
            mass[candidates[0]] += math.exp(logprob)
    return mass


ESTIMATORS = {"classification": classification_confidence, "generation": generation_confidence}

Estimator = Callable[[Sequence[TokenLogprob]], float | None]


def structured_confidence(tokens: Sequence[TokenLogprob], labels: Sequence[str] | None = None) -> float | None:
    """exp(mean logprob) over the tokens that write a JSON answer's values, not its form.

    Under a JSON-schema constraint (a tool call written as `{"name": ..., "arguments": {...}}`, an array
    of those, or `{"text": ...}`) braces, quotes, keys and the wrapper are forced: their logprob is about
    0 and, averaged in, they hide how unsure the free tokens were. Only tokens overlapping a scalar
    value (policies.json_spans: the function name's value, every argument value, the text) count, each
    once; a token split across a value's edge counts. Not JSON, or no value tokens: the generation
    estimator's exp(mean logprob) over all tokens.
    """
    logprobs = _token_logprobs(tokens)
    if not logprobs:
        return None
    per_value = _per_value(tokens)
    counted = {index for value in per_value for index in value} or set(range(len(logprobs)))
    return math.exp(sum(logprobs[i] for i in counted) / len(counted))


def weakest_value_confidence(tokens: Sequence[TokenLogprob], labels: Sequence[str] | None = None) -> float | None:
    """exp of the lowest per-value mean logprob: the least sure value decides (one wrong argument makes
    a wrong call, however sure the rest). Same spans and fallback as `structured_confidence`."""
    logprobs = _token_logprobs(tokens)
    if not logprobs:
        return None
    per_value = _per_value(tokens) or [list(range(len(logprobs)))]
    return math.exp(min(sum(logprobs[i] for i in value) / len(value) for value in per_value))


def answer_probability(tokens: Sequence[TokenLogprob], labels: Sequence[str] | None = None) -> float | None:
    """exp(sum of logprobs): the probability the tier gave its whole answer.

    Under a JSON-schema constraint the forced tokens (braces, quotes, keys, the wrapper) come at logprob
    about 0 and add nothing to a sum, where a mean would count them; what is left are the choices the
    tier made: which function, which arguments, their values, one call or several, a call or text.
    """
    logprobs = _token_logprobs(tokens)
    if not logprobs:
        return None
    return joint_probability(sum(logprobs), len(logprobs))


# Estimators for structured (JSON) answers, by name; the cascade judges structured answers with the
# one named by STRUCTURED_ESTIMATOR: on the recorded BFCL traces it ranks the lower tiers' right calls
# above their wrong ones best (eval/results/bfcl/bfcl.md); the others are measured beside it.
STRUCTURED_ESTIMATORS: Mapping[str, Estimator] = MappingProxyType({
    "structured_joint": answer_probability,
    "structured_mean": structured_confidence,
    "structured_min": weakest_value_confidence,
})
STRUCTURED_ESTIMATOR = "structured_joint"

# The estimators a live stream can fold in O(1) memory: they need only the sum and count of the
# logprobs (gateway.cascade.stream_tally). The others read the JSON spans of the whole answer.
SUM_FOLDS: Mapping[str, Callable[[float, int], float | None]] = MappingProxyType({
    "generation": mean_probability,
    "structured_joint": joint_probability,
})


def _token_logprobs(tokens: Sequence[TokenLogprob]) -> list[float] | None:
    """Each token's usable logprob; None when any token is malformed or its logprob unusable (tokens come
    from a tier: an odd one means no estimate, never an exception)."""
    logprobs: list[float] = []
    for token in tokens:
        text, raw = getattr(token, "token", None), _number(getattr(token, "logprob", None))
        logprob = usable_logprob(raw) if isinstance(text, str) and raw is not None else None
        if logprob is None:
            return None
        logprobs.append(logprob)
    return logprobs


def _per_value(tokens: Sequence[TokenLogprob]) -> list[list[int]]:
    """Per scalar value of the JSON the tokens spell, the indexes of the tokens overlapping it (empty
    when that is not JSON)."""
    starts, ends, offset = [], [], 0
    for token in tokens:
        starts.append(offset)
        offset += len(token.token)
        ends.append(offset)
    per_value: list[list[int]] = []
    for span in value_spans("".join(token.token for token in tokens)) or ():
        # Tokens [first, last) end after the span starts and start before it ends.
        first, last = bisect_right(ends, span.start), bisect_left(starts, span.end)
        overlapping = [i for i in range(first, last) if starts[i] < ends[i]]  # an empty token writes nothing
        if overlapping:
            per_value.append(overlapping)
    return per_value


def choice_confidence(task: Task, logprobs: Any, labels: Sequence[str] | None,
                      structured: bool = False) -> float | None:
    """Confidence of one choice's raw `logprobs` object under the task's estimator, or under the
    structured estimator for an answer asked for as structure (tools, a JSON response format)."""
    tokens = parse_logprobs(logprobs)
    if tokens is None:
        return None
    value = STRUCTURED_ESTIMATORS[STRUCTURED_ESTIMATOR](tokens) if structured else ESTIMATORS[task](tokens, labels)
    if value is None or math.isnan(value):
        return None
    return min(max(value, 0.0), 1.0)


def response_confidence(task: Task, choices: Any, labels: Sequence[str] | None,
                        structured: bool = False) -> float | None:
    """A response's confidence: the least confident of its choices (n > 1), None if any is unusable;
    `structured`: judged by the structured estimator (`STRUCTURED_ESTIMATOR`)."""
    if not isinstance(choices, list) or not choices:
        return None
    lowest: float | None = None
    for choice in choices:
        if not isinstance(choice, Mapping):
            return None
        value = choice_confidence(task, choice.get("logprobs"), labels, structured)
        if value is None:
            return None
        lowest = value if lowest is None else min(lowest, value)
    return lowest
