"""A llama-server tier asked which stop sequence ended its answer.

An OpenAI-compatible answer that stopped on one of the request's `stop` entries says only
`finish_reason: "stop"`, as at the end of a turn. llama-server names the entry in its `__verbose`
debug field (`stop_type: "word"`, `stopping_word`), which a request's `"verbose": true` turns on
(non-streamed: in the answer; streamed: in the chunk that finishes it). A request with stop
sequences asks for it; the entry moves into the finished choice as `stop_reason`, vLLM's name for the
same fact, which the Messages API reads (gateway/apis/answer.py), and `__verbose` is dropped at once:
it repeats the prompt and the answer's logprobs, and no client asked for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.protocol import Route
from gateway.upstream.backends import Backend, TierReply, TierStream

VERBOSE = "__verbose"


def _asks_stop(body: Mapping[str, Any]) -> bool:
    stop = body.get("stop")
    return bool(stop) and isinstance(stop, str | list)


def _stopping_word(verbose: Any) -> str | None:
    if isinstance(verbose, Mapping) and verbose.get("stop_type") == "word":
        word = verbose.get("stopping_word")
        if isinstance(word, str) and word:
            return word
    return None


def _mark(choices: Any, word: str | None) -> None:
    """Put `word` on each choice that finished on a stop (in place)."""
    if word is None or not isinstance(choices, list):
        return
    for choice in choices:
        if isinstance(choice, dict) and choice.get("finish_reason") == "stop":
            choice["stop_reason"] = word


def with_stop_reason(body: dict[str, Any]) -> dict[str, Any]:
    """A whole answer with its stopping word on its choices and without `__verbose` (in place)."""
    _mark(body.get("choices"), _stopping_word(body.pop(VERBOSE, None)))
    return body


async def _streamed(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    word: str | None = None
    async for chunk in events:
        if VERBOSE in chunk:
            word = _stopping_word(chunk.pop(VERBOSE)) or word
        _mark(chunk.get("choices"), word)
        yield chunk


class LlamaServerStops:
    """A llama-server tier's Backend that reports the stop sequence an answer ended on."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def send(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                   headers: Mapping[str, str]) -> TierReply:
        if not _asks_stop(body):
            return await self._backend.send(route, body, timeout_s=timeout_s, headers=headers)
        reply = await self._backend.send(route, {**body, "verbose": True}, timeout_s=timeout_s, headers=headers)
        return dataclasses.replace(reply, body=with_stop_reason(reply.body))

    async def open_stream(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                          headers: Mapping[str, str]) -> TierStream:
        if not _asks_stop(body):
            return await self._backend.open_stream(route, body, timeout_s=timeout_s, headers=headers)
        stream = await self._backend.open_stream(route, {**body, "verbose": True}, timeout_s=timeout_s,
                                                 headers=headers)
        return TierStream(_streamed(stream.events), stream.close, stream.headers, stream.serve_live)

    async def aclose(self) -> None:
        await self._backend.aclose()
