"""A fake OpenAI-compatible tier that costs as little as possible, so the gateway is what's measured.

Answers every POST with one of a few precomputed chat completions (one token whose logprob cycles,
so a cascade over such tiers sees varied confidences and escalates now and then), or a precomputed
SSE stream when the body asks for `"stream": true`. Raw asyncio protocol, keep-alive, no parsing
beyond Content-Length. Run: python -m bench.fake_tier --port P [--delay-ms D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from typing import Any

PROBABILITIES = (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3)


def _completion(p: float) -> bytes:
    token = {"token": "ok", "logprob": math.log(p), "bytes": [111, 107],
             "top_logprobs": [{"token": "ok", "logprob": math.log(p), "bytes": [111, 107]}]}
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop",
                         "logprobs": {"content": [token]}}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}}
    return _http(json.dumps(body).encode(), b"application/json")


def _stream(p: float) -> bytes:
    token = {"token": "ok", "logprob": math.log(p), "top_logprobs": [{"token": "ok", "logprob": math.log(p)}]}
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}]},
        {"choices": [{"index": 0, "delta": {"content": "ok"}, "logprobs": {"content": [token]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}},
    ]
    envelope = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
    events = b"".join(b"data: " + json.dumps({**envelope, **c}).encode() + b"\n\n" for c in chunks)
    return _http(events + b"data: [DONE]\n\n", b"text/event-stream")


def _paced_stream(p: float, tokens: int) -> list[bytes]:
    """A stream as separate writes, to be sent one token apart: the head and the role chunk, one
    chunk per token (with logprobs), then finish, usage and [DONE]. Chunked transfer encoding."""
    envelope = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake"}

    def event(chunk: dict[str, Any]) -> bytes:
        data = b"data: " + json.dumps({**envelope, **chunk}).encode() + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(data), data)

    token = {"token": " ok", "logprob": math.log(p), "top_logprobs": [{"token": " ok", "logprob": math.log(p)}]}
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: keep-alive\r\n\r\n")
    writes = [head + event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    writes += [event({"choices": [{"index": 0, "delta": {"content": " ok"}, "logprobs": {"content": [token]}}]})
               for _ in range(tokens)]
    done = b"data: [DONE]\n\n"
    writes.append(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                  + event({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": tokens,
                                                    "total_tokens": 8 + tokens}})
                  + b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    return writes


def _http(body: bytes, content_type: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + body)


MODELS = b'{"object":"list","data":[{"id":"fake","object":"model","created":0,"owned_by":"bench"}]}'


class FakeTier(asyncio.Protocol):
    """One connection: buffers until a whole request is in, answers, repeats."""

    def __init__(self, answers: list[bytes], streams: list[bytes], delay_s: float,
                 paced: list[list[bytes]] | None = None, token_s: float = 0.0) -> None:
        self._answers, self._streams, self._delay_s = answers, streams, delay_s
        self._paced, self._token_s = paced, token_s
        self._buffer = b""
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self._served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._buffer[:head_end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15:].split(b"\r\n", 1)[0])
            if len(self._buffer) < head_end + 4 + length:
                return
            body = self._buffer[head_end + 4: head_end + 4 + length]
            self._buffer = self._buffer[head_end + 4 + length:]
            self._respond(head, body)

    def _respond(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"get"):
            reply = _http(MODELS, b"application/json")
        elif self._paced and b'"stream":true' in body.replace(b" ", b""):
            writes = self._paced[self._served % len(self._paced)]
            self._served += 1
            loop = asyncio.get_running_loop()
            for i, piece in enumerate(writes):  # the head at once (plus --delay-ms), then one token per tick
                loop.call_later(self._delay_s + i * self._token_s, self._write, piece)
            return
        else:
            pool = self._streams if b'"stream":true' in body.replace(b" ", b"") else self._answers
            reply = pool[self._served % len(pool)]
            self._served += 1
        if self._delay_s > 0:
            asyncio.get_running_loop().call_later(self._delay_s, self._write, reply)
        else:
            self._write(reply)

    def _write(self, reply: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(reply)


async def serve(port: int, delay_s: float, token_s: float = 0.0, tokens: int = 16) -> None:
    answers = [_completion(p) for p in PROBABILITIES]
    streams = [_stream(p) for p in PROBABILITIES]
    paced = [_paced_stream(p, tokens) for p in PROBABILITIES] if token_s > 0 else None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeTier(answers, streams, delay_s, paced, token_s), "127.0.0.1", port,
                                      backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--token-ms", type=float, default=0.0,
                        help="stream one token every this many ms (a paced, chunked stream); 0: all at once")
    parser.add_argument("--stream-tokens", type=int, default=16, help="tokens per paced stream")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.delay_ms / 1000, args.token_ms / 1000, args.stream_tokens))


if __name__ == "__main__":
    main()
