"""OpenAI-shaped bodies for the scripted tier: completions, chunks, embeddings, errors.

Shapes follow OpenAI's API reference (and llama.cpp's /v1/completions variant) closely enough that
the official `openai` SDK parses them; the gateway's parsers are tested against the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

from tests.support.tier_script import Script, Token, call_tokens, choice_tokens

EMBEDDING_DIM = 8
Chunks = tuple[list[dict[str, Any]], int]  # the chunks, and the index of the first one with a token


@dataclass(frozen=True, slots=True)
class Reply:
    """Everything an answer is built from."""

    tier: str
    model: str
    response_id: str
    created: int
    request: dict[str, Any]
    script: Script
    prompt_tokens: int

    @property
    def n(self) -> int:
        n = self.request.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    @property
    def choices(self) -> list[list[Token]]:
        """Each choice's tokens, cut where the request's `stop` says (as llama-server and OpenAI cut)."""
        return [stopped(tokens, self.stop)[0] for tokens in choice_tokens(self.tier, self.script, self.n)]

    @property
    def stop(self) -> list[str]:
        value = self.request.get("stop")
        words = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return [word for word in words if isinstance(word, str) and word]  # llama-server skips empty ones

    def verbose(self) -> dict[str, Any] | None:
        """llama-server's `__verbose` field for choice 0 when the request asks `verbose: true`."""
        if self.request.get("verbose") is not True:
            return None
        word = stopped(choice_tokens(self.tier, self.script, 1)[0], self.stop)[1]
        return {"stop_type": "word" if word else "eos", "stopping_word": word or "", "prompt": "(the prompt)"}

    @property
    def include_usage(self) -> bool:
        options = self.request.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def chat_logprobs(self) -> tuple[bool, int]:
        """Whether to return logprobs, and how many alternatives per token (chat request fields)."""
        top_k = self.request.get("top_logprobs")
        wanted = bool(self.request.get("logprobs")) and not self.script.nologprobs
        return wanted, top_k if isinstance(top_k, int) else 0

    def completion_logprobs(self) -> tuple[bool, int]:
        # Legacy completions ask with an int: how many alternatives per token.
        value = self.request.get("logprobs")
        wanted = value is not None and value is not False and not self.script.nologprobs
        return wanted, int(value) if isinstance(value, int | float) else 0

    def completion_layout(self, tokens: list[Token], offset: int) -> dict[str, Any]:
        _, top_k = self.completion_logprobs()
        if self.script.llamacpp:
            return {"content": [chat_entry(t, top_k) for t in tokens]}
        return legacy_logprobs(tokens, top_k, offset)

    @property
    def prompt_offset(self) -> int:
        prompt = self.request.get("prompt")
        return len(prompt) if isinstance(prompt, str) else 0

    def usage(self, choices: list[list[Token]]) -> dict[str, int]:
        return usage(self.prompt_tokens, sum(len(tokens) for tokens in choices))

    def envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.response_id, "object": kind, "created": self.created, "model": self.model}


def chat_body(reply: Reply) -> dict[str, Any]:
    wanted, top_k = reply.chat_logprobs()
    choices = reply.choices
    out = []
    for index, tokens in enumerate(choices):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(t.text for t in tokens),
            "refusal": None,
        }
        if reply.script.tool:
            message.update(content=None, tool_calls=[tool_call(reply.tier, index)])
        if reply.script.calls:
            message.update(content=None, tool_calls=scripted_calls(reply, index))
        out.append(
            {
                "index": index,
                "message": message,
                "logprobs": {"content": [chat_entry(t, top_k) for t in tokens], "refusal": None}
                if wanted
                else None,
                "finish_reason": finish_reason(reply),
            }
        )
    body = {
        **reply.envelope("chat.completion"),
        "choices": out,
        "usage": reply.usage(choices),
        "system_fingerprint": None,
    }
    verbose = reply.verbose()
    if verbose is not None:
        body["__verbose"] = verbose
    return body


def finish_reason(reply: Reply) -> str:
    if reply.script.length:
        return "length"
    return "tool_calls" if reply.script.tool or reply.script.calls else "stop"


def completion_body(reply: Reply) -> dict[str, Any]:
    wanted, _ = reply.completion_logprobs()
    choices = reply.choices
    out = [
        {
            "text": "".join(t.text for t in tokens),
            "index": index,
            "logprobs": reply.completion_layout(tokens, reply.prompt_offset) if wanted else None,
            "finish_reason": "stop",
        }
        for index, tokens in enumerate(choices)
    ]
    return {
        **reply.envelope("text_completion"),
        "choices": out,
        "usage": reply.usage(choices),
        "system_fingerprint": None,
    }


def chat_chunks(reply: Reply) -> Chunks:
    wanted, top_k = reply.chat_logprobs()
    base = {**reply.envelope("chat.completion.chunk"), "system_fingerprint": None}
    if reply.include_usage:
        base["usage"] = None  # OpenAI sends null usage on every chunk but the last

    def chunk(
        index: int, delta: dict[str, Any], tokens: list[Token], finish: str | None = None
    ) -> dict[str, Any]:
        logprobs = (
            {"content": [chat_entry(t, top_k) for t in tokens], "refusal": None}
            if wanted and tokens
            else None
        )
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**base, "choices": [choice]}

    chunks: list[dict[str, Any]] = []
    first_token: int | None = None
    choices = reply.choices
    for index, tokens in enumerate(choices):
        chunks.append(chunk(index, {"role": "assistant", "content": None if reply.script.tool else ""}, []))
        if reply.script.calls:
            first_token = len(chunks) if first_token is None else first_token
            chunks += [chunk(index, {"tool_calls": [fragment]}, [token])
                       for fragment, token in call_fragments(reply, index)]
            chunks.append(chunk(index, {}, [], finish_reason(reply)))
            continue
        if reply.script.tool:
            first_token = len(chunks) if first_token is None else first_token
            delta = {"tool_calls": [{"index": 0, **tool_call(reply.tier, index)}]}
            chunks.append(chunk(index, delta, tokens))
        for token in [] if reply.script.tool else tokens:
            first_token = len(chunks) if first_token is None else first_token
            chunks.append(chunk(index, {"content": token.text}, [token]))
        chunks.append(chunk(index, {}, [], finish_reason(reply)))
        verbose = reply.verbose() if index == 0 else None
        if verbose is not None:  # llama-server: on the chunk that finishes the answer
            chunks[-1]["__verbose"] = verbose
    if reply.include_usage:
        chunks.append({**base, "choices": [], "usage": reply.usage(choices)})
    return chunks, first_token or 0


def completion_chunks(reply: Reply) -> Chunks:
    wanted, _ = reply.completion_logprobs()
    base = reply.envelope("text_completion")
    chunks: list[dict[str, Any]] = []
    first_token: int | None = None
    choices = reply.choices
    for index, tokens in enumerate(choices):
        offset = reply.prompt_offset
        for token in tokens:
            first_token = len(chunks) if first_token is None else first_token
            logprobs = reply.completion_layout([token], offset) if wanted else None
            chunks.append(
                {
                    **base,
                    "choices": [
                        {"text": token.text, "index": index, "logprobs": logprobs, "finish_reason": None}
                    ],
                }
            )
            offset += len(token.text)
        chunks.append(
            {**base, "choices": [{"text": "", "index": index, "logprobs": None, "finish_reason": "stop"}]}
        )
    if reply.include_usage:
        chunks.append({**base, "choices": [], "usage": reply.usage(choices)})
    return chunks, first_token or 0


def stopped(tokens: list[Token], stop: list[str]) -> tuple[list[Token], str | None]:
    """`tokens` up to the earliest of the `stop` words (the first listed at a tie), which is left out,
    and the word; the tokens as they are and None when none occurs."""
    text = "".join(t.text for t in tokens)
    found = min(((text.find(word), k, word) for k, word in enumerate(stop) if word in text), default=None)
    if found is None:
        return tokens, None
    cut, _, word = found
    kept: list[Token] = []
    offset = 0
    for token in tokens:
        if offset + len(token.text) <= cut:
            kept.append(token)
        elif offset < cut:
            kept.append(Token(token.text[:cut - offset], token.logprob, token.top))
        offset += len(token.text)
    return kept, word


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }
    kind = kinds.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def chat_entry(token: Token, top_k: int) -> dict[str, Any]:
    """One token in the chat layout (also llama.cpp's /v1/completions layout)."""
    return {
        "token": token.text,
        "logprob": token.logprob,
        "bytes": list(token.text.encode()),
        "top_logprobs": [
            {"token": text, "logprob": lp, "bytes": list(text.encode())} for text, lp in token.top[:top_k]
        ],
    }


def legacy_logprobs(tokens: list[Token], top_k: int, offset: int) -> dict[str, Any]:
    """The legacy completions layout; `offset` is where the answer starts in prompt + answer."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top[:top_k]) for t in tokens],
        "text_offset": offsets,
    }


def tool_call(tier: str, index: int) -> dict[str, Any]:
    return {
        "id": f"call_{tier}_{index}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }


def scripted_calls(reply: Reply, index: int) -> list[dict[str, Any]]:
    """The `call=` directives' calls, as a whole answer's message carries them."""
    return [{"id": f"call_{reply.tier}_{index}_{k}", "type": "function", "function": {"name": name, "arguments": args}}
            for k, (name, args) in enumerate(reply.script.calls)]


def call_fragments(reply: Reply, index: int) -> list[tuple[dict[str, Any], Token]]:
    """The `call=` calls as streamed `delta.tool_calls` fragments, each with its token: the first names
    the call (arguments ""), the others carry the arguments piece by piece."""
    fragments: list[tuple[dict[str, Any], Token]] = []
    for k, (name_token, pieces) in enumerate(call_tokens(reply.script)):
        fragments.append(({"index": k, "id": f"call_{reply.tier}_{index}_{k}", "type": "function",
                           "function": {"name": name_token.text, "arguments": ""}}, name_token))
        fragments += [({"index": k, "function": {"arguments": piece.text}}, piece) for piece in pieces]
    return fragments


def embedding(text: str) -> list[float]:
    """A unit vector from the text's hash: equal inputs embed equally, different ones differ."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{EMBEDDING_DIM}H", digest[: 2 * EMBEDDING_DIM])]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def embeddings_body(model: str, body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("input")
    inputs = value if isinstance(value, list) else [value]
    texts = [item if isinstance(item, str) else repr(item) for item in inputs]
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector: list[float] | str = embedding(text)
        if as_base64:  # what the openai SDK asks for by default: little-endian float32
            vector = base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    words = sum(len(text.split()) for text in texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": words, "total_tokens": words},
    }
