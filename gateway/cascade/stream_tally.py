"""What the gateway keeps of a streamed answer.

`ChunkAccumulator` rebuilds a judged prefix's logprobs and each choice's message (content and tool
calls, for the validity check; bounded by the tier's body limit while it is buffered). `StreamTally`
follows a stream served live to the client in constant memory: the running confidence, the token
count, the last usage, and choice 0's message (text and tool calls) up to a cap. A tier that
streams forever costs time, never memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.cascade.stream_message import MessageBuilder
from policies.base import Task, TokenLogprob
from policies.confidence import (
    STRUCTURED_ESTIMATOR,
    SUM_FOLDS,
    classification_confidence,
    parse_logprobs,
    response_confidence,
    usable_logprob,
)
from policies.structure import Expectation, InvalidReason, problem

# A live stream keeps a sum of logprobs, not its tokens: the structured estimator must be one of the
# folds (changing STRUCTURED_ESTIMATOR to one that reads JSON spans needs the tokens kept here too).
if STRUCTURED_ESTIMATOR not in SUM_FOLDS:
    raise ImportError(f"the structured estimator {STRUCTURED_ESTIMATOR!r} cannot be folded over a live stream")
_GENERATION_FOLD, _STRUCTURED_FOLD = SUM_FOLDS["generation"], SUM_FOLDS[STRUCTURED_ESTIMATOR]

# More distinct choice indices than any client may ask for (OpenAI's n is at most 128).
MAX_CHOICES = 128
# A buffered choice's rebuilt message: the tier's body limit bounds it first; this bounds it anyway.
MAX_BUFFERED_MESSAGE_CHARS = 1 << 23


@dataclass
class ChunkAccumulator:
    """Rebuilds a streamed answer's per-choice logprobs (either layout) and usage from its chunks."""

    logprobs: dict[int, dict[str, list[Any]]] = field(default_factory=dict)
    tokens: int = 0  # tokens of choice 0 seen so far
    usage: dict[str, Any] | None = None
    messages: dict[int, MessageBuilder] = field(default_factory=dict)
    finish_reasons: dict[int, Any] = field(default_factory=dict)
    too_many_choices: bool = False

    @property
    def has_tool_call(self) -> bool:
        """Some choice has begun a tool call (or was cut at its bound): its whole answer must be read."""
        return any(message.has_tool_call or message.cut for message in self.messages.values())

    def add(self, chunk: Mapping[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        for index, choice in _choices(chunk):
            merged = self.logprobs.get(index)
            if merged is None:
                if len(self.logprobs) >= MAX_CHOICES:
                    self.too_many_choices = True
                    continue
                merged = self.logprobs[index] = {}
                self.messages[index] = MessageBuilder(MAX_BUFFERED_MESSAGE_CHARS)
            counted = self._merge(merged, choice.get("logprobs"))
            _fold_message(self.messages[index], choice)
            if choice.get("finish_reason") is not None:
                self.finish_reasons[index] = choice["finish_reason"]
            if index == 0:
                self.tokens += counted if counted else int(bool(choice_text(choice)))

    @staticmethod
    def _merge(merged: dict[str, list[Any]], logprobs: Any) -> int:
        if not isinstance(logprobs, dict):
            return 0
        added = 0
        for key in ("content", "tokens", "token_logprobs", "top_logprobs"):
            values = logprobs.get(key)
            if isinstance(values, list):
                merged.setdefault(key, []).extend(values)
                if key in ("content", "tokens"):
                    added += len(values)
        return added

    def body(self) -> dict[str, Any]:
        """A response-shaped body for the confidence estimators and the validity check (a message
        cut at its bound is None: no answer to judge valid)."""
        choices = [{"index": i, "logprobs": self.logprobs[i] or None, "message": self.messages[i].message(),
                    "finish_reason": self.finish_reasons.get(i)} for i in sorted(self.logprobs)]
        if self.too_many_choices:
            choices.append({"index": MAX_CHOICES, "logprobs": None, "message": None})
        return {"choices": choices, "usage": self.usage}

    def confidence(self, task: Task, labels: Any, structured: bool = False) -> float | None:
        return response_confidence(task, self.body()["choices"], labels, structured)


@dataclass(slots=True)
class _ChoiceTally:
    """One choice's confidence inputs, folded token by token."""

    logprob_sum: float = 0.0
    tokens: int = 0
    first_visible: TokenLogprob | None = None  # the classification estimator reads only this token
    seen_logprobs: bool = False
    malformed: bool = False  # a layout the parser refuses: no confidence for any task
    unusable_logprob: bool = False  # NaN or positive: no generation confidence

    def fold(self, tokens: Sequence[TokenLogprob] | None) -> None:
        if tokens is None:
            self.malformed = True
            return
        for token in tokens:
            if self.first_visible is None and token.token.strip():
                self.first_visible = token
            logprob = usable_logprob(token.logprob)
            if logprob is None:
                self.unusable_logprob = True
            else:
                self.logprob_sum += logprob  # in the order of generation_confidence: the same float sum
            self.tokens += 1

    def confidence(self, task: Task, labels: Sequence[str] | None, structured: bool = False) -> float | None:
        if self.malformed or not self.seen_logprobs:
            return None
        if task == "classification" and not structured:
            value = classification_confidence([self.first_visible], labels) if self.first_visible else None
        elif self.unusable_logprob:
            return None
        else:
            fold = _STRUCTURED_FOLD if structured else _GENERATION_FOLD
            value = fold(self.logprob_sum, self.tokens)
        if value is None or math.isnan(value):
            return None
        return min(max(value, 0.0), 1.0)


@dataclass
class StreamTally:
    """A live stream followed in O(1) memory; its confidence equals ChunkAccumulator's on the same chunks."""

    max_text_chars: int
    tokens: int = 0  # tokens of choice 0
    usage: dict[str, Any] | None = None
    _choices: dict[int, _ChoiceTally] = field(default_factory=dict)
    _too_many_choices: bool = False
    _message: MessageBuilder | None = None  # choice 0's; only kept when max_text_chars > 0

    def __post_init__(self) -> None:
        if self.max_text_chars > 0:
            self._message = MessageBuilder(self.max_text_chars)

    def add(self, chunk: Mapping[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        for index, choice in _choices(chunk):
            tally = self._choices.get(index)
            if tally is None:
                if len(self._choices) >= MAX_CHOICES:
                    self._too_many_choices = True
                    continue
                tally = self._choices[index] = _ChoiceTally()
            counted = self._fold(tally, choice.get("logprobs"))
            if index == 0:
                self.tokens += counted if counted else int(bool(choice_text(choice)))
                if self._message is not None:
                    _fold_message(self._message, choice)

    @staticmethod
    def _fold(tally: _ChoiceTally, logprobs: Any) -> int:
        if not isinstance(logprobs, dict):
            return 0
        content = logprobs.get("content")
        if isinstance(content, list):
            if content:
                tally.seen_logprobs = True
                tally.fold(parse_logprobs({"content": content}))
            return len(content)
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        if isinstance(tokens, list) and isinstance(values, list):
            if tokens or values:
                tally.seen_logprobs = True
                tally.fold(parse_logprobs(logprobs))
            return len(tokens)
        return 0

    def message(self) -> dict[str, Any] | None:
        """Choice 0's whole message (content and tool calls) as a non-streamed answer carries it; None
        when it grew past `max_text_chars` (too long to compare or judge: no answer kept at all)."""
        return self._message.message() if self._message is not None else None

    @property
    def text(self) -> str | None:
        """Choice 0's whole text, or None when it grew past `max_text_chars`."""
        message = self.message()
        if message is None:
            return None
        content = message.get("content")
        return content if isinstance(content, str) else ""

    def confidence(self, task: Task, labels: Any, structured: bool = False) -> float | None:
        if not self._choices or self._too_many_choices:
            return None
        lowest: float | None = None
        for index in sorted(self._choices):
            value = self._choices[index].confidence(task, labels, structured)
            if value is None:
                return None
            lowest = value if lowest is None else min(lowest, value)
        return lowest


def _choices(chunk: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return []
    found: list[tuple[int, Mapping[str, Any]]] = []
    for choice in choices:
        if isinstance(choice, dict):
            index = choice.get("index", 0)
            found.append((index if isinstance(index, int) and not isinstance(index, bool) else 0, choice))
    return found


def _fold_message(message: MessageBuilder, choice: Mapping[str, Any]) -> None:
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        message.add(delta)
    else:
        text = choice.get("text")  # legacy completions
        if isinstance(text, str):
            message.add_text(text)


def choice_text(choice: Mapping[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
        return str(delta["content"])
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def answer_body(message: Mapping[str, Any]) -> dict[str, Any]:
    """The streamed answer as a non-streamed body (content and tool calls), for whoever compares whole answers."""
    return {"choices": [{"index": 0, "message": dict(message)}]}


def served_problem(expectation: Expectation | None, message: Mapping[str, Any] | None) -> InvalidReason | None:
    """A whole served stream's structure problem (choice 0); None when none was asked, or when the
    answer outgrew what is kept of it (not known, so not counted)."""
    if expectation is None or message is None:
        return None
    return problem(expectation, [{"message": message}])
