"""How the gateway talks to a tier: one Backend per tier, one pooled HTTP client each.

`provider: openai` covers every OpenAI-compatible endpoint (llama.cpp, vLLM, OpenAI, another
RecServe gateway) over gateway.upstream.http1. `provider: litellm` adapts the other providers; litellm is imported
only when such a tier exists, because its import alone costs seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from gateway import jsonio, sse
from gateway.config.schema import TierConfig
from gateway.protocol import Route
from gateway.upstream import http1
from gateway.upstream.vetting import redact

# Tier statuses that are the request's own fault: the client gets them back as a 400.
_CLIENT_FAULT_STATUSES = frozenset({400, 413, 415, 422})
LOOP_STATUS = 508
# OpenAI's limit on `stop`, which OpenAI-compatible servers mostly share; llama-server takes any number.
OPENAI_MAX_STOP = 4
_Answer = TypeVar("_Answer")  # what a pool call returns: a whole Response, or a Body to read
_ERROR_BODY_CONTAINERS = 10_000  # an error body needs a handful; one with more is reported by its status alone
# OpenAI request fields (chat, legacy completions, embeddings) handed to litellm as arguments.
LITELLM_PASSTHROUGH = frozenset({
    "messages", "prompt", "input", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream_options",
    "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user", "functions", "function_call",
    "modalities", "audio", "prediction", "reasoning_effort", "service_tier", "store", "best_of", "echo",
    "suffix", "dimensions", "encoding_format",
})


async def _nothing_to_release() -> None:
    return None


@dataclass(frozen=True, slots=True)
class TierReply:
    """A tier's successful answer: parsed JSON body plus the response headers we care about.

    A streamed answer also carries its chunks read so far and, when it is still open, the live rest
    (`tail`); `release` closes that stream. `body` then holds what confidence is computed from.
    """

    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    chunks: Sequence[dict[str, Any]] = ()
    tail: AsyncIterator[dict[str, Any]] | None = None
    release: Callable[[], Awaitable[None]] = _nothing_to_release

    @property
    def complete(self) -> bool:
        """The whole answer is here (not a prefix of a stream still open)."""
        return self.tail is None


# Why a tier could not answer: out of time; no connection; an error status; an answer we cannot use;
# an answer past one of our bounds (gateway.upstream.http1.LimitExceeded).
FaultKind = Literal["timeout", "connect", "status", "invalid", "limit"]


class TierFault(Exception):
    """The tier could not answer (timeout, connection, 5xx, 429, garbage): a reason to escalate."""

    def __init__(self, kind: FaultKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: FaultKind = kind
        self.message = message
        self.status = status


class TierRejected(Exception):
    """The tier refused the request itself (a 4xx caused by the client's input, or an upstream 508)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.path = ""  # the cascade's path up to and including the refusing tier (set by the cascade)


@dataclass(frozen=True, slots=True)
class TierStream:
    """An open streamed answer: its chunks as dicts (TierFault if the stream breaks) and a closer."""

    events: AsyncIterator[dict[str, Any]]
    close: Callable[[], Awaitable[None]]
    headers: Mapping[str, str] = field(default_factory=dict)
    # Called when the rest is to be served live: byte limits meant for buffering no longer apply.
    serve_live: Callable[[], None] = lambda: None


class Backend(Protocol):
    """Sends one request body to one tier."""

    async def send(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                   headers: Mapping[str, str]) -> TierReply:
        """Return the tier's answer, or raise TierFault / TierRejected."""
        ...

    async def open_stream(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                          headers: Mapping[str, str]) -> TierStream:
        """Start a streamed answer (`body` has stream=true); faults before the stream opens raise."""
        ...

    async def aclose(self) -> None: ...


class OpenAICompatibleBackend:
    """Any OpenAI-compatible HTTP endpoint, over one pool of keep-alive connections.

    The pool is gateway.upstream.http1, not httpx or aiohttp: the client's own CPU per call is paid on every
    request (`python -m bench.client_cost`; numbers in bench/NOTES.md).
    """

    def __init__(self, tier: TierConfig) -> None:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        key = tier.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._model = tier.model
        self._max_stop = None if tier.is_llama_server else OPENAI_MAX_STOP
        self._secrets = (key,) if key else ()  # never shown to a client, even when the tier echoes them
        bounds = tier.limits
        self._max_containers = bounds.max_json_containers
        limits = http1.Limits(header_bytes=bounds.max_header_bytes, headers=bounds.max_headers,
                              body_bytes=bounds.max_body_bytes, line_bytes=bounds.max_sse_line_bytes)
        # Probes and queued requests may exceed the tier's own concurrency for a moment.
        self._pool = http1.Pool(tier.base_url, limit=max(tier.max_concurrency, 1) * 2, headers=headers,
                                limits=limits)

    def _payload(self, body: dict[str, Any]) -> bytes:
        payload = {**body, "model": self._model}
        stop = body.get("stop")
        if self._max_stop is not None and isinstance(stop, list) and len(stop) > self._max_stop:
            payload["stop"] = stop[:self._max_stop]  # the rest the Messages API applies itself
        return jsonio.dumps(payload)

    async def _exchange(self, call: Callable[[str, str, bytes, Mapping[str, str]], Awaitable[_Answer]],
                        route: Route, body: dict[str, Any], timeout_s: float, headers: Mapping[str, str]) -> _Answer:
        """`call` (the pool's `send` or `open`) for `body`, bounded by `timeout_s`; its failures as TierFault."""
        try:
            async with asyncio.timeout(timeout_s):
                return await call("POST", route, self._payload(body), headers)
        except TimeoutError as exc:
            raise TierFault("timeout", f"timed out after {timeout_s:.3g}s") from exc
        except http1.HttpError as exc:
            raise _transport_fault(exc) from exc

    async def send(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                   headers: Mapping[str, str]) -> TierReply:
        started = time.perf_counter()
        response = await self._exchange(self._pool.send, route, body, timeout_s, headers)
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise _status_error(response.status, response.body, self._secrets)
        # Each container opens with a byte of its own: a body no longer than the bound needs no count.
        if len(response.body) > self._max_containers and json_containers(response.body) > self._max_containers:
            raise TierFault("limit", f"answer holds over {self._max_containers} JSON objects and arrays")
        try:
            answer = jsonio.loads(response.body)
        except (ValueError, RecursionError) as exc:
            raise TierFault("invalid", "answer is not JSON (or nested too deeply)") from exc
        if not isinstance(answer, dict):
            raise TierFault("invalid", "answer is not a JSON object")
        return TierReply(answer, response.headers, elapsed)

    async def open_stream(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                          headers: Mapping[str, str]) -> TierStream:
        # No total bound on a stream: the wait for its head and each read are bounded instead.
        response = await self._exchange(self._pool.open, route, body, timeout_s, headers)
        if response.status != 200:
            try:
                async with asyncio.timeout(timeout_s):
                    content = await response.read()
            except (http1.HttpError, TimeoutError):
                content = b""
            finally:
                response.release()
            raise _status_error(response.status, content, self._secrets)

        async def close() -> None:
            # A stream read to its end goes back to the pool; one cut short drops its connection
            # (release closes it), or the tier would keep generating into it.
            response.release()

        events = _sse_events(response, timeout_s, self._secrets, self._max_containers)
        return TierStream(events, close, response.headers, response.lift_body_limit)

    async def aclose(self) -> None:
        await self._pool.aclose()


def json_containers(data: bytes) -> int:
    """JSON objects and arrays in `data`, counted by opening bracket without parsing (two C scans).
    Brackets inside strings count too: it may over-count, never under-count."""
    return data.count(b"{") + data.count(b"[")


async def _lines(response: http1.Body, read_timeout_s: float, max_containers: int) -> AsyncIterator[str]:
    containers = 0  # while the stream is buffered, its parsed events are all kept
    async for line in response.lines(read_timeout_s):
        if response.limited:
            containers += json_containers(line)
            if containers > max_containers:
                raise http1.LimitExceeded(f"buffered stream holds over {max_containers} JSON objects and arrays")
        yield line.decode("utf-8", errors="replace").rstrip("\r\n")


async def _sse_events(response: http1.Body, read_timeout_s: float, secrets: Sequence[str],
                      max_containers: int) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in sse.parse_events(_lines(response, read_timeout_s, max_containers)):
            yield event
    except sse.StreamBroken as exc:
        raise TierFault("invalid", redact(str(exc), secrets)) from exc
    except TimeoutError as exc:
        raise TierFault("timeout", "stream stalled past the read timeout") from exc
    except http1.HttpError as exc:
        raise _transport_fault(exc, "stream broke: ") from exc


def _transport_fault(exc: http1.HttpError, prefix: str = "") -> TierFault:
    return TierFault("limit" if isinstance(exc, http1.LimitExceeded) else "connect", f"{prefix}{exc}")


def _status_error(status: int, content: bytes, secrets: Sequence[str] = ()) -> Exception:
    """A tier's non-200 answer as ours; its own words reach the client only redacted and cut short."""
    message, param, code = _upstream_error_fields(content)
    message = redact(message, secrets) if message is not None else None
    if status in _CLIENT_FAULT_STATUSES or status == LOOP_STATUS:
        return TierRejected(status, message or f"tier rejected the request ({status})", _short(param), _short(code))
    return TierFault("status", f"HTTP {status}" + (f": {message}" if message else ""), status)


def _short(value: str | None) -> str | None:
    # param and code are identifiers in OpenAI's errors; anything else is not passed on.
    if value is None or len(value) > 64 or not value.replace("_", "").replace(".", "").isalnum():
        return None
    return value


def _upstream_error_fields(content: bytes) -> tuple[str | None, str | None, str | None]:
    if json_containers(content) > _ERROR_BODY_CONTAINERS:
        return None, None, None
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError, RecursionError):
        return None, None, None
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return None, None, None
    message, param, code = error.get("message"), error.get("param"), error.get("code")
    return (
        message if isinstance(message, str) else None,
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )


class LiteLLMBackend:
    """A non-OpenAI provider through litellm; `tier.model` is litellm's model string."""

    def __init__(self, tier: TierConfig) -> None:
        # litellm fetches a price map from the internet at import unless told to use its bundled copy.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
            import openai
        except ModuleNotFoundError as missing:
            raise RuntimeError(f"tier '{tier.name}' has provider: litellm, which needs the `litellm` extra "
                               f"({missing.name} is not installed): pip install 'recserve[litellm]'") from None

        self._litellm: Any = litellm  # untyped library
        self._openai = openai
        self._tier = tier
        # litellm's text-completion path builds a new OpenAI client per call and never closes it,
        # leaking a connection each time; for OpenAI-compatible endpoints we hand it one we own.
        self._text_client = None
        if tier.model.split("/", 1)[0] in ("openai", "text-completion-openai"):
            self._text_client = openai.AsyncOpenAI(base_url=tier.base_url, api_key=tier.api_key() or "not-needed",
                                                   max_retries=0, timeout=tier.timeout_s)

    def _arguments(self, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        # Only OpenAI request fields become litellm keyword arguments: litellm's own (base_url,
        # api_version, fallbacks, mock_response, credentials, ...) would let a client pick the
        # upstream (SSRF; tests/security). Other fields still reach the tier, as extra_body.
        arguments = {k: v for k, v in body.items() if k in LITELLM_PASSTHROUGH}
        if isinstance(arguments.get("stop"), list):
            arguments["stop"] = arguments["stop"][:OPENAI_MAX_STOP]
        extra = {k: v for k, v in body.items() if k not in LITELLM_PASSTHROUGH and k not in ("model", "stream")}
        if extra:
            arguments["extra_body"] = extra
        # litellm caches one HTTP client per distinct timeout value: pass the tier's constant timeout
        # and enforce the request's own (shrinking) budget around the call instead.
        arguments.update(model=self._tier.model, api_base=self._tier.base_url, timeout=self._tier.timeout_s,
                         api_key=self._tier.api_key() or "not-needed", num_retries=0,
                         max_retries=0, extra_headers=dict(headers))
        return arguments

    def _translate(self, exc: BaseException, timeout_s: float) -> BaseException:
        """litellm's exceptions as ours; anything we don't recognise is re-raised unchanged."""
        litellm = self._litellm
        if isinstance(exc, TimeoutError | litellm.exceptions.Timeout):
            return TierFault("timeout", f"timed out after {timeout_s:.3g}s")
        secrets = (self._tier.api_key() or "",)
        if isinstance(exc, litellm.exceptions.APIConnectionError):
            return TierFault("connect", redact(str(exc), secrets))
        if isinstance(exc, self._openai.OpenAIError):  # litellm's other errors derive from openai's
            status = int(getattr(exc, "status_code", 0) or 0)
            message = redact(str(getattr(exc, "message", exc)), secrets)
            if status in _CLIENT_FAULT_STATUSES or status == LOOP_STATUS:
                return TierRejected(status, message)
            return TierFault("status" if status else "invalid", message, status or None)
        return exc

    async def send(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                   headers: Mapping[str, str]) -> TierReply:
        litellm = self._litellm
        arguments = self._arguments(body, headers)
        call = {"chat/completions": litellm.acompletion, "completions": litellm.atext_completion,
                "embeddings": litellm.aembedding}[route]
        if route == "completions" and self._text_client is not None:
            arguments["client"] = self._text_client
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                response = await call(**arguments)
        except Exception as exc:
            raise self._translate(exc, timeout_s) from exc
        payload = response.model_dump(exclude_none=False)
        hidden = getattr(response, "_hidden_params", {}) or {}
        upstream_headers = hidden.get("additional_headers") or {}
        # litellm keeps the provider's response headers under an "llm_provider-" prefix.
        headers = {str(k).lower().removeprefix("llm_provider-"): str(v) for k, v in upstream_headers.items()}
        return TierReply(payload, headers, time.perf_counter() - started)

    async def open_stream(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                          headers: Mapping[str, str]) -> TierStream:
        if route != "chat/completions":
            raise TierFault("invalid", "streaming through litellm is supported for chat completions only")
        litellm = self._litellm
        arguments = self._arguments(body, headers)
        try:
            async with asyncio.timeout(timeout_s):
                response = await litellm.acompletion(**arguments, stream=True)
        except Exception as exc:
            raise self._translate(exc, timeout_s) from exc

        async def events() -> AsyncIterator[dict[str, Any]]:
            try:
                async for chunk in response:
                    yield chunk.model_dump(exclude_none=False)
            except Exception as exc:
                raise self._translate(exc, timeout_s) from exc

        async def close() -> None:
            closer = getattr(response, "aclose", None)
            if closer is not None:
                await closer()

        return TierStream(events(), close)

    async def aclose(self) -> None:
        # litellm pools its HTTP clients process-wide; close them with the app that used them.
        await self._litellm.close_litellm_async_clients()
        if self._text_client is not None:
            await self._text_client.close()

