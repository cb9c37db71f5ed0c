"""Offline prompt-token counting with tiktoken's cl100k_base, for tiers that report no usage.

tiktoken downloads its encodings on first use; litellm's wheel ships the same files, so we point
tiktoken's cache at them instead of the network.

Loading the encoding takes 0.3-1 s on a 2-core machine (100,000 base64 tokens decoded, then a map
built in Rust that holds the GIL), and a download has no timeout at all. Counting is done on the event
loop, so loading never is: the gateway loads the encoding in a worker thread at startup
(`load_in_background`), and until it is there (or if it cannot be loaded) a count is an estimate of
UTF-8 bytes / 4.

Counting itself costs about 0.2 s per MB of text, and tiktoken releases the GIL while it encodes: a
request's count (`PromptTokens`) is taken once, and a large prompt's in a worker thread, so that one
client's big prompt does not hold every other client's request.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tiktoken

log = logging.getLogger("recserve.tokens")
# OpenAI's published accounting for chat prompts: a few tokens of framing per message and reply.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3
_BYTES_PER_TOKEN = 4  # the usual ratio for English text, for the estimate
# Prompts with more characters than this are counted in a worker thread (~10 ms of encoding: the
# thread hop costs less than the loop would be held).
OFF_LOOP_CHARS = 1 << 16


def _litellm_tokenizer_dir() -> str | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return str(folder) if folder.is_dir() else None


class PromptTokenCounter:
    """Counts the prompt tokens of a chat or completions request body."""

    def __init__(self) -> None:
        self._encoding: tiktoken.Encoding | None = None
        self._lock = threading.Lock()
        self._failed = False

    @property
    def loaded(self) -> bool:
        return self._encoding is not None

    def load(self) -> bool:
        """Load the encoding (blocking; tiktoken keeps it per process, so a second counter's load is
        free). False if it cannot be loaded: counts stay estimates."""
        with self._lock:
            if self._encoding is None and not self._failed:
                if "TIKTOKEN_CACHE_DIR" not in os.environ:
                    folder = _litellm_tokenizer_dir()
                    if folder:
                        os.environ["TIKTOKEN_CACHE_DIR"] = folder
                try:
                    self._encoding = tiktoken.get_encoding("cl100k_base")
                except Exception as exc:  # a download's or a file's failure, whatever its class
                    self._failed = True
                    log.warning("tiktoken cl100k_base could not be loaded (%s): prompt tokens of tiers that "
                                "report no usage are estimated as UTF-8 bytes / %d", exc, _BYTES_PER_TOKEN)
        return self.loaded

    async def load_in_background(self, wait_s: float) -> None:
        """Load in a worker thread, waiting for it at most `wait_s` (it goes on after that)."""
        loading = asyncio.ensure_future(asyncio.to_thread(self.load))
        done, _ = await asyncio.wait({loading}, timeout=wait_s)
        if not done:
            log.warning("tiktoken cl100k_base still loading after %.0f s: counts are estimates until it is there",
                        wait_s)

    def count_text(self, text: str) -> int:
        encoding = self._encoding
        if encoding is None:
            return -(-len(text.encode("utf-8", "replace")) // _BYTES_PER_TOKEN)  # rounded up
        return len(encoding.encode(text, disallowed_special=()))

    def count(self, body: Mapping[str, Any]) -> int:
        texts = sum(self.count_text(text) for text in _prompt_texts(body))
        messages = body.get("messages")
        if isinstance(messages, list):
            return _TOKENS_PER_REPLY + _TOKENS_PER_MESSAGE * len(messages) + texts
        return texts


class PromptTokens:
    """One request's prompt tokens by our count (for tiers that report no usage): counted at most once,
    in a worker thread when the prompt is large."""

    def __init__(self, count: Callable[[Mapping[str, Any]], int], body: Mapping[str, Any]) -> None:
        self._count = count  # PromptTokenCounter.count
        self._body = body
        self._value: int | None = None

    def __call__(self) -> int:
        """The count for code that cannot wait: the one already taken (`count`), else taken here."""
        if self._value is None:
            self._value = self._count(self._body)
        return self._value

    async def count(self) -> int:
        if self._value is None:
            if sum(len(text) for text in _prompt_texts(self._body)) > OFF_LOOP_CHARS:
                self._value = await asyncio.to_thread(self._count, self._body)
            else:
                self._value = self._count(self._body)
        return self._value


def _prompt_texts(body: Mapping[str, Any]) -> list[str]:
    """The text pieces of a chat body's message contents, or of a completions body's prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return [text for message in messages if isinstance(message, Mapping) for text in _texts(message.get("content"))]
    return _texts(body.get("prompt"))


def _texts(content: Any) -> list[str]:
    """The text pieces of a message content or prompt: a string, a list of strings or of text parts."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        out: list[str] = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                out.append(part["text"])
        return out
    return []
