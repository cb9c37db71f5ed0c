"""Bodies for the hostile tier: honest OpenAI shapes to start from, and the big or poisoned ones
(bombs, a 65 MB logprobs array), built once when the server starts so no case pays for them."""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MODEL = "hostile-model"
ANSWER_P = 0.9  # the honest answer's token probability: kept by a 0.5 threshold
ANSWER_LOGPROB = math.log(ANSWER_P)
MIB = 1024 * 1024
DONE = b"data: [DONE]\n\n"
BOMB_MIB = 1024  # 1 GiB once inflated
LOGPROBS_BYTES = 65 * 1000 * 1000
# Just under the tier's default max_json_containers (500,000), so the gateway parses and keeps them all.
TINY_OBJECTS = 490_000
TINY_OBJECTS_PER_EVENT = 20_000


def dumps(value: Any) -> bytes:
    # allow_nan: some cases put bare NaN / Infinity on the wire on purpose.
    return json.dumps(value, allow_nan=True, separators=(",", ":")).encode()


def event(value: Any) -> bytes:
    return b"data: " + (value if isinstance(value, bytes) else dumps(value)) + b"\n\n"


def entry(token: str, logprob: Any) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": None, "top_logprobs": []}


def answer(content: str = "hostile answer", logprob: Any = ANSWER_LOGPROB,
           usage: Any = None) -> dict[str, Any]:
    """A chat.completion with one logprob entry per word."""
    tokens = content.split(" ")
    pieces = [tokens[0], *(" " + t for t in tokens[1:])]
    return {
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": {"content": [entry(p, logprob) for p in pieces]}, "finish_reason": "stop"}],
        "usage": usage if usage is not None else {"prompt_tokens": 3, "completion_tokens": len(pieces),
                                                  "total_tokens": 3 + len(pieces)},
    }


def chunk(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def token_chunk(text: str, logprob: Any = ANSWER_LOGPROB) -> dict[str, Any]:
    return chunk({"content": text}, {"content": [entry(text, logprob)]})


def usage_chunk(prompt_tokens: Any = 3, completion_tokens: Any = 2) -> dict[str, Any]:
    return {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
            "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                     "total_tokens": 5}}


def stream_events(content: str = "hostile answer", logprob: Any = ANSWER_LOGPROB,
                  done: bool = True) -> list[bytes]:
    """An honest chat stream: role, one chunk per word, finish, usage, [DONE]."""
    tokens = content.split(" ")
    pieces = [tokens[0], *(" " + t for t in tokens[1:])]
    events = [event(chunk({"role": "assistant", "content": ""}))]
    events += [event(token_chunk(p, logprob)) for p in pieces]
    events += [event(chunk({}, None, "stop")), event(usage_chunk(3, len(pieces)))]
    return [*events, DONE] if done else events


def error(message: str, kind: str = "server_error") -> bytes:
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def compressed(prefix: bytes, suffix: bytes, *, gzip: bool, filler: bytes = b"a" * MIB,
               count: int = BOMB_MIB) -> bytes:
    """prefix + filler*count + suffix, deflated to ~1/1000 (gzip or zlib wrapper), built without
    compressing the filler `count` times: after a full flush the deflater forgets its history, so
    each filler block compresses to the same bytes. The checksum is real: a complete bomb."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = deflater.compress(prefix) + deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(filler) + deflater.flush(zlib.Z_FULL_FLUSH)
    end = deflater.compress(suffix) + deflater.flush(zlib.Z_FINISH)
    check = zlib.crc32(prefix) if gzip else zlib.adler32(prefix)
    for _ in range(count):
        check = zlib.crc32(filler, check) if gzip else zlib.adler32(filler, check)
    check = zlib.crc32(suffix, check) if gzip else zlib.adler32(suffix, check)
    size = len(prefix) + len(filler) * count + len(suffix)
    if gzip:
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        trailer = struct.pack("<II", check & 0xFFFFFFFF, size & 0xFFFFFFFF)
    else:
        header, trailer = b"\x78\xda", struct.pack(">I", check & 0xFFFFFFFF)
    return header + start + block * count + end + trailer


JSON_OPEN = (b'{"id":"chatcmpl-hostile","object":"chat.completion","created":0,"model":"hostile-model",'
             b'"choices":[{"index":0,"message":{"role":"assistant","content":"')
JSON_CLOSE = b'"},"finish_reason":"stop"}]}'
SSE_OPEN = b"data: " + dumps(chunk({"role": "assistant", "content": ""})) + b"\n\n" + (
    b'data: {"id":"chatcmpl-hostile","object":"chat.completion.chunk","created":0,"model":"hostile-model",'
    b'"choices":[{"index":0,"delta":{"content":"')
SSE_CLOSE = b'"},"finish_reason":null}]}\n\n' + DONE


def huge_logprobs_body(size: int = LOGPROBS_BYTES) -> bytes:
    """A well-formed chat.completion whose logprobs array is `size` bytes."""
    one = dumps(entry("a", -0.1))
    count = size // (len(one) + 1)
    body = answer()
    body["choices"][0]["logprobs"]["content"] = "@LOGPROBS@"
    return dumps(body).replace(b'"@LOGPROBS@"', b"[" + b",".join([one] * count) + b"]")


def huge_logprobs_event(entries: int = 1000) -> bytes:
    """One stream chunk carrying `entries` logprob entries (~47 KB)."""
    return event(chunk({"content": "a"}, {"content": [entry("a", -0.1)] * entries}))


def _empty_arrays(count: int) -> bytes:
    return b"[" + b"[]," * (count - 1) + b"[]]"


def tiny_objects_json(count: int = TINY_OBJECTS) -> bytes:
    """A chat.completion whose logprobs content is `count` empty arrays: as many objects as bytes allow."""
    body = answer()
    body["choices"][0]["logprobs"]["content"] = "@"
    return dumps(body).replace(b'"@"', _empty_arrays(count))


def tiny_objects_events(count: int = TINY_OBJECTS, per_event: int = TINY_OBJECTS_PER_EVENT) -> bytes:
    """A complete stream whose chunks carry `per_event` empty arrays each as logprobs, `count` in all."""
    one = event(chunk({"content": "a"}, {"content": "@"})).replace(b'"@"', _empty_arrays(per_event))
    return b"".join([event(chunk({"role": "assistant", "content": ""})), one * (count // per_event),
                     event(usage_chunk()), DONE])


@dataclass(frozen=True, slots=True)
class Payloads:
    gzip_json: bytes
    gzip_sse: bytes
    deflate_json: bytes
    deflate_sse: bytes
    logprobs_json: bytes
    logprobs_event: bytes
    tiny_objects_json: bytes
    tiny_objects_sse: bytes

    @classmethod
    def build(cls) -> Payloads:
        return cls(
            gzip_json=compressed(JSON_OPEN, JSON_CLOSE, gzip=True),
            gzip_sse=compressed(SSE_OPEN, SSE_CLOSE, gzip=True),
            deflate_json=compressed(JSON_OPEN, JSON_CLOSE, gzip=False),
            deflate_sse=compressed(SSE_OPEN, SSE_CLOSE, gzip=False),
            logprobs_json=huge_logprobs_body(),
            logprobs_event=huge_logprobs_event(),
            tiny_objects_json=tiny_objects_json(),
            tiny_objects_sse=tiny_objects_events(),
        )
