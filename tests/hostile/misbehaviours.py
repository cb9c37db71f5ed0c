"""What the hostile tier does, one coroutine per case name (the last user message's first word).

Each gets the request and the raw socket, answers JSON or SSE as the request's `stream` asks, and
returns whether the connection may serve another request. Every loop here ends by itself: when the
peer leaves (a write fails) or after `MAX_CASE_S` (the server wraps each case in a timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from tests.hostile import payloads as p
from tests.hostile.wire import Exchange, Header, chunk, head_bytes, status_line

MAX_CASE_S = 40.0
JSON = "application/json"
SSE = "text/event-stream"
HUGE = 200 * 1000 * 1000
EVIL_PATH = "evil<script>]" + "A" * 59_987  # 60 KB: under the 64 KiB header limit on its own
EVIL_UPLINK = "7777777777777777"
HUGE_INT = "9" * 400
SMUGGLED = "SMUGGLED"

Behaviour = Callable[[Exchange, p.Payloads], Awaitable[bool]]
BEHAVIOURS: dict[str, Behaviour] = {}


def behaviour(function: Behaviour) -> Behaviour:
    BEHAVIOURS[function.__name__] = function
    return function


def honest_body(ex: Exchange, content: str = "hostile answer") -> tuple[str, bytes]:
    if ex.stream:
        return SSE, b"".join(p.stream_events(content))
    return JSON, p.dumps(p.answer(content))


async def honest(ex: Exchange, headers: list[Header] | None = None) -> bool:
    kind, body = honest_body(ex)
    await ex.whole(200, kind, body, headers or [])
    return True


def leak(ex: Exchange) -> str:
    """The key the tier was sent, the way providers echo it ("Incorrect API key provided: sk-…"),
    in key-looking fields, then the request head as received (its authorization header included).
    Key-looking values come first, so truncation alone cannot hide them."""
    key = ex.request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return (f"Incorrect API key provided: {key}. api-key: {key}; x-api-key={key}; {{'api_key': '{key}'}}\n"
            f"request was:\n{ex.request.head}")


# --- honest, and valid-but-unusual HTTP ----------------------------------------------------------------


@behaviour
async def healthy(ex: Exchange, _: p.Payloads) -> bool:
    return await honest(ex)


@behaviour
async def info_1xx(ex: Exchange, _: p.Payloads) -> bool:
    """100 Continue and 103 Early Hints before the answer: legal, and easy to mistake for it."""
    await ex.send(status_line(100) + b"\r\n")
    await asyncio.sleep(0.05)
    await ex.send(head_bytes(103, [("link", "</style.css>; rel=preload")]))
    return await honest(ex)


@behaviour
async def http10_no_length(ex: Exchange, _: p.Payloads) -> bool:
    """HTTP/1.0, no Content-Length: the body ends when the connection does."""
    kind, body = honest_body(ex)
    await ex.send(head_bytes(200, [("content-type", kind)], "HTTP/1.0") + body)
    return False


@behaviour
async def trailers(ex: Exchange, _: p.Payloads) -> bool:
    """Chunked with a trailer section, which carries a forged x-recserve-path too."""
    kind, body = honest_body(ex)
    half = len(body) // 2
    await ex.chunked(200, kind, [body[:half], body[half:]], [("trailer", "x-checksum, x-recserve-path")],
                     trailers=b"x-checksum: 12345\r\nx-recserve-path: evil<script>trailer\r\n")
    return True


@behaviour
async def own_recserve_headers(ex: Exchange, _: p.Payloads) -> bool:
    """An honest answer wearing the gateway's own headers, forged."""
    return await honest(ex, [("x-recserve-path", EVIL_PATH), ("x-recserve-uplink-tokens", EVIL_UPLINK),
                             ("x-recserve-tier", "evil"), ("x-recserve-confidence", "1e999"),
                             ("x-recserve-degraded", "evil")])


@behaviour
async def valid_path(ex: Exchange, _: p.Payloads) -> bool:
    """What an honest chained gateway says (the positive control for the trusted-tier cases)."""
    return await honest(ex, [("x-recserve-path", "edge>cloud!"), ("x-recserve-uplink-tokens", "42")])


@behaviour
async def deep_path(ex: Exchange, _: p.Payloads) -> bool:
    """A grammatical x-recserve-path nested 10,000 deep (20 KB): a recursive parser's end."""
    return await honest(ex, [("x-recserve-path", "a[" * 10_000 + "a" + "]" * 10_000)])


@behaviour
async def long_path(ex: Exchange, _: p.Payloads) -> bool:
    """A grammatical, flat x-recserve-path of 40 KB."""
    return await honest(ex, [("x-recserve-path", "edge>" * 8_000 + "cloud")])


# --- the header section ----------------------------------------------------------------------------------


async def _headers_then_answer(ex: Exchange, lines: Iterator[bytes], batch: int) -> bool:
    kind, body = honest_body(ex)
    await ex.send(status_line(200))
    while piece := b"".join(itertools.islice(lines, batch)):
        await ex.send(piece)
    await ex.send(f"content-type: {kind}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    return False


@behaviour
async def repeat_header(ex: Exchange, _: p.Payloads) -> bool:
    """The same header name 200,000 times (~4.6 MB), then a fine answer."""
    return await _headers_then_answer(ex, itertools.repeat(b"x-repeated-header: aa\r\n", 200_000), 10_000)


@behaviour
async def too_many_headers(ex: Exchange, _: p.Payloads) -> bool:
    """300 small distinct headers (~5 KB): under any byte limit, over any count limit."""
    return await _headers_then_answer(ex, (b"x-h-%03d: v\r\n" % i for i in range(300)), 100)


@behaviour
async def endless_headers(ex: Exchange, _: p.Payloads) -> bool:
    """A header section that never ends, as fast as the peer takes it."""
    lines = (b"x-endless-%d: %b\r\n" % (i, b"b" * 1000) for i in itertools.count())
    await ex.send(status_line(200))
    while True:
        await ex.send(b"".join(itertools.islice(lines, 64)))


# --- framing lies -------------------------------------------------------------------------------------------


@behaviour
async def never_answers(ex: Exchange, _: p.Payloads) -> bool:
    await ex.gone_within(MAX_CASE_S)
    return False


@behaviour
async def hang_until_closed(ex: Exchange, _: p.Payloads) -> bool:
    """Like never_answers; the disconnect tests look for its `peer_closed` record."""
    await ex.gone_within(MAX_CASE_S)
    return False


@behaviour
async def close_no_answer(ex: Exchange, _: p.Payloads) -> bool:
    return False


@behaviour
async def empty_200(ex: Exchange, _: p.Payloads) -> bool:
    await ex.whole(200, SSE if ex.stream else JSON, b"")
    return True


@behaviour
async def text_html(ex: Exchange, _: p.Payloads) -> bool:
    await ex.whole(200, "text/html; charset=utf-8", b"<html><body><h1>It works!</h1></body></html>")
    return True


@behaviour
async def slow_drip(ex: Exchange, _: p.Payloads) -> bool:
    """A fine answer, one byte per 100 ms, status line included."""
    kind, body = honest_body(ex)
    await ex.drip(head_bytes(200, [("content-type", kind), ("content-length", str(len(body)))]) + body, 0.1)
    return False


@behaviour
async def reset_mid_body(ex: Exchange, _: p.Payloads) -> bool:
    """TCP RST mid-body; a stream is reset after its first token."""
    if ex.stream:
        await ex.head(200, [("content-type", SSE), ("transfer-encoding", "chunked")])
        await ex.send(*(chunk(e) for e in p.stream_events()[:2]))
    else:
        body = p.dumps(p.answer())
        await ex.send(head_bytes(200, [("content-type", JSON), ("content-length", str(len(body)))]),
                      body[: len(body) // 3])
    await asyncio.sleep(0.1)
    ex.reset()
    return False


@behaviour
async def cl_longer_then_close(ex: Exchange, _: p.Payloads) -> bool:
    """Content-Length 1000 bytes longer than what is sent, then FIN (a stream without [DONE])."""
    kind, body = (SSE, b"".join(p.stream_events(done=False))) if ex.stream else (JSON, p.dumps(p.answer()))
    await ex.send(head_bytes(200, [("content-type", kind), ("content-length", str(len(body) + 1000))]) + body)
    return False


@behaviour
async def cl_shorter(ex: Exchange, _: p.Payloads) -> bool:
    """Content-Length 10, then the whole body and a second, smuggled response on the same connection:
    a client that reuses it reads SMUGGLED as the answer to its next request."""
    kind, body = honest_body(ex)
    smuggled = p.dumps(p.answer(SMUGGLED, math.log(0.99)))
    await ex.send(head_bytes(200, [("content-type", kind), ("content-length", "10")]) + body
                  + head_bytes(200, [("content-type", JSON), ("content-length", str(len(smuggled)))]) + smuggled)
    return True


@behaviour
async def bad_chunk_framing(ex: Exchange, _: p.Payloads) -> bool:
    kind, body = honest_body(ex)
    await ex.head(200, [("content-type", kind), ("transfer-encoding", "chunked")])
    await ex.send(b"zz\r\n" + body[:40] + b"\r\n4\r\nabcdefgh\r\n0\r\n\r\n")
    return False


@behaviour
async def chunk_size_huge(ex: Exchange, _: p.Payloads) -> bool:
    """A chunk size of 32 hex digits (2^128), some data, then FIN."""
    kind, body = honest_body(ex)
    await ex.head(200, [("content-type", kind), ("transfer-encoding", "chunked")])
    await ex.send(b"f" * 32 + b"\r\n" + body + b"a" * 4096)
    return False


# --- size -----------------------------------------------------------------------------------------------------


@behaviour
async def huge_content_length(ex: Exchange, _: p.Payloads) -> bool:
    """Content-Length 200 MB, all sent as fast as the peer reads: one JSON string / one SSE line."""
    opening, closing = (p.SSE_OPEN, p.SSE_CLOSE) if ex.stream else (p.JSON_OPEN, p.JSON_CLOSE)
    await ex.head(200, [("content-type", SSE if ex.stream else JSON), ("content-length", str(HUGE))])
    await ex.send(opening)
    block = b"a" * p.MIB
    left = HUGE - len(opening) - len(closing)
    while left > 0:
        await ex.send(block[: min(left, len(block))])
        left -= len(block)
    await ex.send(closing)
    return False


@behaviour
async def endless_chunked(ex: Exchange, _: p.Payloads) -> bool:
    """A chunked body that never ends: one endless JSON string, or a flood of valid stream chunks."""
    if ex.stream:
        await ex.head(200, [("content-type", SSE), ("transfer-encoding", "chunked")])
        burst = chunk(p.event(p.token_chunk(" flood")) * 200)
        while True:
            await ex.send(burst)
    await ex.head(200, [("content-type", JSON), ("transfer-encoding", "chunked")])
    await ex.send(chunk(p.JSON_OPEN))
    burst = chunk(b"a" * 65536)
    while True:
        await ex.send(burst)


@behaviour
async def huge_logprobs(ex: Exchange, payloads: p.Payloads) -> bool:
    """65 MB of well-formed logprobs: one array, or ~1,080 stream chunks of 1,000 entries each."""
    if not ex.stream:
        await ex.whole(200, JSON, payloads.logprobs_json, close=True)
        return False
    await ex.head(200, [("content-type", SSE), ("transfer-encoding", "chunked")])
    await ex.send(chunk(p.event(p.chunk({"role": "assistant", "content": ""}))))
    for _ in range(p.LOGPROBS_BYTES // len(payloads.logprobs_event)):
        await ex.send(chunk(payloads.logprobs_event))
    await ex.send(chunk(p.event(p.usage_chunk()) + p.DONE) + b"0\r\n\r\n")
    return False


@behaviour
async def tiny_objects(ex: Exchange, payloads: p.Payloads) -> bool:
    """490,000 empty arrays as logprobs, just under the default max_json_containers: one answer, or a
    complete stream of chunks holding 20,000 each. The most objects a tier can make the gateway parse
    and keep (1.5 MB)."""
    body = payloads.tiny_objects_sse if ex.stream else payloads.tiny_objects_json
    await ex.whole(200, SSE if ex.stream else JSON, body)
    return True


async def _bomb(ex: Exchange, body: bytes, encoding: str) -> bool:
    await ex.whole(200, SSE if ex.stream else JSON, body, [("content-encoding", encoding)], close=True)
    return False


@behaviour
async def gzip_bomb(ex: Exchange, payloads: p.Payloads) -> bool:
    """~1 MB of gzip inflating to 1 GiB: one JSON string, or one SSE line after a valid first chunk."""
    return await _bomb(ex, payloads.gzip_sse if ex.stream else payloads.gzip_json, "gzip")


@behaviour
async def deflate_bomb(ex: Exchange, payloads: p.Payloads) -> bool:
    return await _bomb(ex, payloads.deflate_sse if ex.stream else payloads.deflate_json, "deflate")


@behaviour
async def endless_stream(ex: Exchange, _: p.Payloads) -> bool:
    """A stream that never ends (a token every 20 ms, no [DONE]); a JSON answer that never completes
    (a space every 50 ms)."""
    await ex.head(200, [("content-type", SSE if ex.stream else JSON), ("transfer-encoding", "chunked")])
    if not ex.stream:
        while True:
            await ex.send(chunk(b" "))
            await asyncio.sleep(0.05)
    await ex.send(chunk(p.event(p.chunk({"role": "assistant", "content": ""}))))
    while True:
        await ex.send(chunk(p.event(p.token_chunk(" more"))))
        await asyncio.sleep(0.02)


# --- content that breaks parsers ----------------------------------------------------------------------------


def _poisoned(ex: Exchange, json_body: bytes, bad_event: bytes) -> tuple[str, bytes]:
    """JSON: the body as given. SSE: valid first chunks without logprobs (so a served stream has
    started, and the bad event is all there is to judge), the bad event, then a normal ending."""
    if not ex.stream:
        return JSON, json_body
    first = p.event(p.chunk({"role": "assistant", "content": ""})) + p.event(p.chunk({"content": "hostile"}))
    return SSE, first + bad_event + p.event(p.chunk({}, None, "stop")) + p.DONE


async def _send_poisoned(ex: Exchange, json_body: bytes, bad_event: bytes) -> bool:
    kind, body = _poisoned(ex, json_body, bad_event)
    await ex.whole(200, kind, body)
    return True


def _template(value: Any, marker: str, raw: bytes) -> bytes:
    return p.dumps(value).replace(p.dumps(marker), raw)


@behaviour
async def deep_nesting(ex: Exchange, _: p.Payloads) -> bool:
    """100,000 nested `[` as logprobs content."""
    nested = b"[" * 100_000 + b"]" * 100_000
    body = p.answer()
    body["choices"][0]["logprobs"]["content"] = "@"
    bad = p.chunk({"content": " deep"}, {"content": "@"})
    return await _send_poisoned(ex, _template(body, "@", nested), p.event(_template(bad, "@", nested)))


@behaviour
async def huge_int(ex: Exchange, _: p.Payloads) -> bool:
    """A 400-digit integer as every logprob and as usage.prompt_tokens."""
    marker = "@"
    body = p.answer(logprob=marker, usage={"prompt_tokens": marker, "completion_tokens": 2, "total_tokens": 5})
    raw = HUGE_INT.encode()
    bad = p.event(_template(p.token_chunk(" big", marker), marker, raw)) + p.event(
        _template(p.usage_chunk(marker), marker, raw))
    return await _send_poisoned(ex, _template(body, marker, raw), bad)


@behaviour
async def nan_logprobs(ex: Exchange, _: p.Payloads) -> bool:
    """Bare NaN / Infinity / -Infinity where numbers belong."""
    body = p.answer(logprob=math.nan)
    body["choices"][0]["logprobs"]["content"][0]["top_logprobs"] = [
        {"token": "x", "logprob": math.inf, "bytes": None}, {"token": "y", "logprob": -math.inf, "bytes": None}]
    body["usage"] = {"prompt_tokens": math.nan, "completion_tokens": math.inf, "total_tokens": -math.inf}
    return await _send_poisoned(ex, p.dumps(body), p.event(p.token_chunk(" nan", math.nan)))


@behaviour
async def wrong_types(ex: Exchange, _: p.Payloads) -> bool:
    """Every field the wrong JSON type."""
    body = {"id": 5, "object": [], "created": "yesterday", "model": {"name": 1},
            "choices": [{"index": "zero", "message": {"role": 7, "content": ["not", "a", "string"]},
                         "logprobs": {"content": [{"token": 5, "logprob": "high", "top_logprobs": "none"}, 3]},
                         "finish_reason": 9}, "second", None],
            "usage": {"prompt_tokens": "many", "completion_tokens": -1, "total_tokens": None}}
    bad = {"id": [], "choices": [{"index": [], "delta": 5, "logprobs": {"content": "abc"}}, 7], "usage": "lots"}
    return await _send_poisoned(ex, p.dumps(body), p.event(bad))


@behaviour
async def not_object(ex: Exchange, _: p.Payloads) -> bool:
    """A JSON array where an object belongs; stream events that are a number and a string."""
    if ex.stream:
        await ex.whole(200, SSE, b'data: 5\n\ndata: "chunk"\n\ndata: [1, 2]\n\n' + p.DONE)
    else:
        await ex.whole(200, JSON, b'[{"choices": []}, 2, 3]')
    return True


@behaviour
async def invalid_utf8(ex: Exchange, _: p.Payloads) -> bool:
    """Bytes that are not UTF-8 inside the answer text and a token."""
    raw = b"caf\xc3\x28 \xff\xfe\xed\xa0\x80"
    body = p.dumps(p.answer("hostile answer")).replace(b"hostile", b"hostile" + raw)
    return await _send_poisoned(ex, body, p.event(p.dumps(p.token_chunk(" @")).replace(b"@", raw)))


# --- errors that leak, and broken streams --------------------------------------------------------------------


@behaviour
async def error_500_echo(ex: Exchange, _: p.Payloads) -> bool:
    await ex.whole(500, JSON, p.error(leak(ex)))
    return True


@behaviour
async def error_400_echo(ex: Exchange, _: p.Payloads) -> bool:
    await ex.whole(400, JSON, p.error(leak(ex), "invalid_request_error"))
    return True


@behaviour
async def sse_no_done(ex: Exchange, _: p.Payloads) -> bool:
    """A complete, correctly framed stream that never says [DONE]."""
    await ex.chunked(200, SSE, p.stream_events(done=False))
    return True


@behaviour
async def sse_huge_line(ex: Exchange, _: p.Payloads) -> bool:
    """A valid first chunk, then one `data:` line that never ends (up to 200 MB, no newline)."""
    await ex.head(200, [("content-type", SSE), ("transfer-encoding", "chunked")])
    await ex.send(chunk(p.SSE_OPEN))
    burst = chunk(b"a" * p.MIB)
    for _megabyte in range(200):
        await ex.send(burst)
    await ex.send(b"0\r\n\r\n")
    return False


@behaviour
async def sse_error_echo(ex: Exchange, _: p.Payloads) -> bool:
    """A stream that starts, then sends an error event leaking the request head."""
    first = p.stream_events()[:2]
    await ex.chunked(200, SSE, [*first, p.event({"error": {"message": leak(ex), "type": "server_error"}})])
    return True
