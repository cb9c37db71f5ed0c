"""A streamed choice rebuilt as the message a whole answer carries: the content text, and the tool
calls from `delta.tool_calls` fragments (by index: the name once, the arguments concatenated).

The tier is untrusted, so the rebuilt message is bounded: at most `max_chars` characters of text,
names and arguments together, and at most MAX_CALLS calls. Past a bound the message is `cut`: it is
no longer the tier's answer, and is never judged valid or compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.structure import MAX_CALLS


@dataclass(slots=True)
class _CallParts:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class MessageBuilder:
    """One choice's message, folded delta by delta."""

    max_chars: int
    cut: bool = False
    _text: list[str] = field(default_factory=list)
    _calls: dict[int, _CallParts] = field(default_factory=dict)
    _chars: int = 0
    _refusal: str = ""
    _last_call: int = -1

    @property
    def has_tool_call(self) -> bool:
        return bool(self._calls)

    def add(self, delta: Any) -> None:
        """Fold one chunk's `choices[i].delta` (or a legacy completion's `text`, passed as content)."""
        if self.cut or not isinstance(delta, Mapping):
            return
        content = delta.get("content")
        if isinstance(content, str) and content and self._room(len(content)):
            self._text.append(content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal and self._room(len(refusal)):
            self._refusal += refusal
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for fragment in calls:
                if isinstance(fragment, Mapping):
                    self._add_call(fragment)
        legacy = delta.get("function_call")
        if isinstance(legacy, Mapping):
            self._add_call({"index": 0, "function": legacy})

    def add_text(self, text: str) -> None:
        if not self.cut and text and self._room(len(text)):
            self._text.append(text)

    def _room(self, chars: int) -> bool:
        self._chars += chars
        if self._chars > self.max_chars:
            self.cut, self._text, self._calls, self._refusal = True, [], {}, ""  # nothing half kept
        return not self.cut

    def _add_call(self, fragment: Mapping[str, Any]) -> None:
        index = fragment.get("index")
        function = fragment.get("function")
        function = function if isinstance(function, Mapping) else {}
        name, arguments, given_id = function.get("name"), function.get("arguments"), fragment.get("id")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            # No usable index: a fragment that names a call starts one, any other continues the last.
            starts = isinstance(given_id, str) or isinstance(name, str)
            index = len(self._calls) if starts or self._last_call < 0 else self._last_call
        parts = self._calls.get(index)
        if parts is None:
            if len(self._calls) > MAX_CALLS:  # one past the limit is kept: it makes the answer invalid
                self.cut = True
                return
            parts = self._calls[index] = _CallParts()
        self._last_call = index
        if isinstance(given_id, str) and parts.id is None and self._room(len(given_id)):
            parts.id = given_id
        if isinstance(name, str) and name and not self.cut and self._room(len(name)):
            parts.name += name  # a name may itself arrive in pieces
        if isinstance(arguments, str) and arguments and not self.cut and self._room(len(arguments)):
            parts.arguments.append(arguments)

    def message(self) -> dict[str, Any] | None:
        """The message as a non-streamed answer carries it; None when it was cut."""
        if self.cut:
            return None
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._text) if self._text else None}
        if self._refusal:
            message["refusal"] = self._refusal
        if self._calls:
            message["tool_calls"] = [
                {"id": parts.id or f"call_{index}", "type": "function",
                 "function": {"name": parts.name, "arguments": "".join(parts.arguments)}}
                for index, parts in sorted(self._calls.items())]
        elif message["content"] is None:
            message["content"] = ""
        return message
