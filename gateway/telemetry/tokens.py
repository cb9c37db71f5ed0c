"""Offline prompt-token counting with tiktoken's cl100k_base, for tiers that report no usage.

tiktoken downloads its encodings on first use; litellm's wheel ships the same files, so we point
tiktoken's cache at them instead of the network.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import tiktoken

# OpenAI's published accounting for chat prompts: a few tokens of framing per message and reply.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3


def _litellm_tokenizer_dir() -> str | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return str(folder) if folder.is_dir() else None


class PromptTokenCounter:
    """Counts the prompt tokens of a chat or completions request body."""

    @cached_property
    def _encoding(self) -> tiktoken.Encoding:
        if "TIKTOKEN_CACHE_DIR" not in os.environ:
            folder = _litellm_tokenizer_dir()
            if folder:
                os.environ["TIKTOKEN_CACHE_DIR"] = folder
        return tiktoken.get_encoding("cl100k_base")

    def count_text(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def count(self, body: Mapping[str, Any]) -> int:
        messages = body.get("messages")
        if isinstance(messages, list):
            total = _TOKENS_PER_REPLY
            for message in messages:
                total += _TOKENS_PER_MESSAGE
                if isinstance(message, Mapping):
                    total += sum(self.count_text(text) for text in _texts(message.get("content")))
            return total
        return sum(self.count_text(text) for text in _texts(body.get("prompt")))


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
