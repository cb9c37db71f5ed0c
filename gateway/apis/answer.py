"""A tier's chat completion read the way the Responses and Messages APIs render it: the first
choice's text, tool calls, logprobs and finish reason, and the usage. From a whole body, or from a
stream chunk by chunk (`AnswerStream`), which also does a stream's bookkeeping: observe it once,
release the tier's stream, hand the whole answer to quality probes, finish the decision summary.

Those APIs have no `n`: only choice 0 is read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.apis.shaping import shape_choice
from gateway.cascade.pipeline import Served
from gateway.cascade.stream_tally import answer_body, served_problem
from policies.confidence import response_confidence


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the tier produced it


@dataclass(slots=True)
class Answer:
    text: str
    tool_calls: list[ToolCall]
    logprobs: list[dict[str, Any]]  # chat logprob entries, only those the client asked for
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    stopped_on: str | None = None  # the stop sequence the tier says ended the answer, if it says


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _first_choice(choices: Any) -> Mapping[str, Any] | None:
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                return choice
    return None


def _entries(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    return [entry for entry in content if isinstance(entry, dict)] if isinstance(content, list) else []


def _stopped_on(choice: Mapping[str, Any]) -> str | None:
    """The stop sequence a choice says it ended on: vLLM's `stop_reason` (also what the gateway makes of
    llama-server's report, gateway/upstream/llama_stops.py) or SGLang's `matched_stop`; None if neither."""
    for name in ("stop_reason", "matched_stop"):
        value = choice.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def whole_answer(body: Mapping[str, Any], wanted: int | None, count_prompt_tokens: Callable[[], int]) -> Answer:
    """Choice 0 of a non-streamed chat body; usage counted by us when the tier reported none."""
    choice = _first_choice(body.get("choices")) or {}
    message = choice.get("message")
    message = message if isinstance(message, Mapping) else {}
    content = message.get("content")
    calls: list[ToolCall] = []
    for raw in message.get("tool_calls") or ():
        function = raw.get("function") if isinstance(raw, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            calls.append(ToolCall(raw.get("id") if isinstance(raw.get("id"), str) else call_id(),
                                  function["name"], arguments if isinstance(arguments, str) else "{}"))
    entries = _entries(shape_choice(dict(choice), wanted)) if wanted is not None else []
    usage = body.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    finish = choice.get("finish_reason")
    return Answer(
        text=content if isinstance(content, str) else "",
        tool_calls=calls,
        logprobs=entries,
        finish_reason=finish if isinstance(finish, str) else None,
        input_tokens=prompt if prompt is not None else count_prompt_tokens(),
        output_tokens=completion if completion is not None else len(_entries(choice)),
        stopped_on=_stopped_on(choice),
    )


@dataclass(slots=True)
class ToolCallDelta:
    index: int  # the call's position among the answer's tool calls
    id: str | None  # set on a call's first delta
    name: str | None
    arguments: str


@dataclass(slots=True)
class Delta:
    """What one chunk added to choice 0."""

    text: str = ""
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


class AnswerStream:
    """The serving tier's streamed answer as deltas of choice 0, plus the stream's bookkeeping.

    Iterate `deltas()` (a tier fault mid-stream raises TierFault), then read `answer()` and
    `summary()`; `close()` always, in a finally.
    """

    def __init__(self, served: Served, wanted: int | None) -> None:
        self._served = served
        self._wanted = wanted
        self._texts: list[str] = []
        self._calls: dict[int, ToolCall] = {}
        self._logprobs: list[dict[str, Any]] = []
        # Early commit judged a prefix only: the whole answer's confidence is reported at the end.
        self._judge_all = served.result.confidence is None and served.result.reply.tail is not None
        self._all_logprobs: list[dict[str, Any]] = []
        self._tokens = 0
        self._usage: Mapping[str, Any] | None = None
        self._finish: str | None = None
        self._stopped_on: str | None = None
        self._closed = False
        self._ended = False  # the tier's stream ended normally: the answer is whole, and judged

    async def deltas(self) -> AsyncGenerator[Delta, None]:
        reply = self._served.result.reply
        for chunk in reply.chunks:
            delta = self._read(chunk)
            if delta is not None:
                yield delta
        if reply.tail is not None:
            async for chunk in reply.tail:
                delta = self._read(chunk)
                if delta is not None:
                    yield delta
        if self._usage is None:  # the tier reported none: counted now, off the loop if large, read by answer()
            await self._served.cascade_request.prompt_tokens.count()
        self._ended = True

    def _read(self, chunk: Mapping[str, Any]) -> Delta | None:
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = usage
        choice = _first_choice(chunk.get("choices"))
        if choice is None:
            return None
        if isinstance(choice.get("finish_reason"), str):
            self._finish = choice["finish_reason"]
            self._stopped_on = _stopped_on(choice)
        entries = _entries(choice)
        if self._judge_all:
            self._all_logprobs.extend(entries)
        delta = Delta()
        if self._wanted is not None and entries:
            delta.logprobs = _entries(shape_choice(dict(choice), self._wanted))
            self._logprobs.extend(delta.logprobs)
        raw_delta = choice.get("delta")
        raw_delta = raw_delta if isinstance(raw_delta, Mapping) else {}
        text = raw_delta.get("content")
        if isinstance(text, str) and text:
            delta.text = text
            self._texts.append(text)
        for raw in raw_delta.get("tool_calls") or ():
            if isinstance(raw, Mapping):
                delta.tool_calls.append(self._tool_delta(raw))
        self._tokens += len(entries) if entries else int(bool(delta.text or delta.tool_calls))
        return delta

    def _tool_delta(self, raw: Mapping[str, Any]) -> ToolCallDelta:
        given_index = raw.get("index")
        index = given_index if isinstance(given_index, int) else len(self._calls)
        function = raw.get("function")
        function = function if isinstance(function, Mapping) else {}
        given_name, given_arguments = function.get("name"), function.get("arguments")
        name = given_name if isinstance(given_name, str) else None
        arguments = given_arguments if isinstance(given_arguments, str) else ""
        known = self._calls.get(index)
        if known is None:
            given = raw.get("id")
            known = self._calls[index] = ToolCall(given if isinstance(given, str) and given else call_id(),
                                                  name or "", "")
            delta = ToolCallDelta(index, known.id, known.name, arguments)
        else:
            delta = ToolCallDelta(index, None, None, arguments)
        known.arguments += arguments
        return delta

    def answer(self) -> Answer:
        usage = self._usage or {}
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        return Answer(
            text="".join(self._texts),
            tool_calls=[self._calls[i] for i in sorted(self._calls)],
            logprobs=self._logprobs,
            finish_reason=self._finish,
            input_tokens=prompt if prompt is not None else self._served.cascade_request.prompt_tokens(),
            output_tokens=completion if completion is not None else self._tokens,
            stopped_on=self._stopped_on,
        )

    def summary(self) -> dict[str, Any]:
        summary = self._served.summary()
        if self._judge_all:
            choice = {"index": 0, "logprobs": {"content": self._all_logprobs}}
            summary["confidence"] = response_confidence(self._served.task, [choice], self._served.labels)
        return summary

    def message(self) -> dict[str, Any]:
        """Choice 0 as a non-streamed answer's message: its content and tool calls."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._texts)}
        if self._calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = [{"id": call.id, "type": "function",
                                      "function": {"name": call.name, "arguments": call.arguments}}
                                     for _, call in sorted(self._calls.items())]
        return message

    def completed(self) -> None:
        """The client has the whole answer: start the quality probes that wait for it."""
        if self._served.probes is not None:
            self._served.probes(answer_body(self.message()))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # also when the client left mid-stream; no usage reported: the tokens seen are the answer's
            invalid = served_problem(self._served.cascade_request.expectation, self.message()) if self._ended else None
            self._served.observe(self._usage if self._usage is not None else {"completion_tokens": self._tokens},
                                 invalid)
        finally:
            await self._served.result.reply.release()


class ClosingEvents:
    """A stream's event bytes whose closing also closes the answer stream, even when the client left
    before the first event was asked for (an async generator never started skips its `finally`)."""

    def __init__(self, events: AsyncGenerator[bytes, None], stream: AnswerStream) -> None:
        self._events = events
        self._stream = stream

    def __aiter__(self) -> ClosingEvents:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._events)

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            await self._stream.close()
