"""How a tool request reaches a tier: `native` passes `tools` through; `constrained` also sends a JSON
Schema built from the offered tools as `response_format`, and turns the JSON answer back into
OpenAI `tool_calls`. The tier's `tool_call_form` says how calls are written under the schema: `list`
(always a list of calls) or `call_or_list` (one call, or a list of two or more).

Small local models (the embedded Qwen2.5-Coder tiers) mostly write a right call in the wrong shape —
a JSON code block in `content` that llama-server's tool parser does not recognise — so a client gets
no `tool_calls` at all. Constrained by the schema (llama-server compiles it to a grammar) they write
exactly one of: a list of calls `[{"name": ..., "arguments": {...}}, ...]` (or, in the
`call_or_list` form, also one call on its own), or,
when `tool_choice` is `auto`, `{"text": ...}` — a plain answer, so "no call" stays possible. The
tools are described to the tier in the system message, with the answer's form.

The answer's logprobs are kept as the tier sent them (they cover the JSON), so confidence can be
taken over the tokens that carry the decision. A streamed answer's text is held until it ends (a
half-written call cannot be converted) while its logprobs and usage pass on as they come.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from gateway.protocol import Route
from gateway.upstream.backends import Backend, TierReply, TierStream

# The `response_format.json_schema.name` we send; never seen by a client.
SCHEMA_NAME = "tool_call"
# A held streamed answer beyond this many characters is no call we could convert: passed on as text.
MAX_HELD_CHARS = 1 << 20

CallForm = Literal["list", "call_or_list"]


def _offered(body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, parameters schema) of each function tool in the request, in order."""
    offered: list[tuple[str, Any]] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            offered.append((function["name"], parameters if isinstance(parameters, Mapping) else {"type": "object"}))
    return offered


def tool_call_schema(body: Mapping[str, Any], form: CallForm = "list") -> dict[str, Any] | None:
    """The JSON Schema a constrained tier answers `body` by; None when the request is not constrained
    (no function tools, `tool_choice: none`, or the client set its own `response_format`)."""
    choice = body.get("tool_choice", "auto")
    offered = _offered(body)
    if not offered or choice == "none" or body.get("response_format") is not None:
        return None
    if isinstance(choice, Mapping):  # {"type": "function", "function": {"name": ...}}
        function = choice.get("function")
        wanted = function.get("name") if isinstance(function, Mapping) else None
        offered = [(name, parameters) for name, parameters in offered if name == wanted]
        if not offered:
            return None  # names no offered tool: the tier (or the validity gate) says so, not us
    calls = [{"type": "object", "properties": {"name": {"const": name}, "arguments": parameters},
              "required": ["name", "arguments"]} for name, parameters in offered]
    # Where several calls may be made: `list` asks for a list of calls (one call: a list of one), and
    # the models make each call a request needs, but a small one also adds calls nobody asked for;
    # `call_or_list` offers a lone call beside a list of two or more, and the small model then writes
    # the one call right, and never a list (eval/results/bfcl/bfcl.md, "Tool-call forms").
    parallel = body.get("parallel_tool_calls", True) is not False and not isinstance(choice, Mapping)
    alternatives: list[dict[str, Any]] = list(calls) if not parallel or form == "call_or_list" else []
    if parallel:
        alternatives.append({"type": "array", "items": {"anyOf": calls}, "minItems": 1 if form == "list" else 2})
    if choice == "auto":
        alternatives.append({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
    return {"anyOf": alternatives}


def instructions(body: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """What the tier is told about the tools and the answer's form (the schema enforces the form)."""
    offered = [tool["function"] for tool in body.get("tools") or () if isinstance(tool, Mapping)
               and isinstance(tool.get("function"), Mapping)]
    call = '{"name": <function name>, "arguments": {<its arguments>}}'
    alternatives = schema["anyOf"]
    forms = [f"{call} to call a function"] if any("name" in a.get("properties", {}) for a in alternatives) else []
    if any(alternative.get("type") == "array" for alternative in alternatives):
        forms.append(f"a list of calls [{call}, ...], one for each call the request needs" if not forms
                     else f"a list of calls [{call}, ...] when the request needs several calls")
    if any("text" in alternative.get("properties", {}) for alternative in schema["anyOf"]):
        forms.append('{"text": <your answer>} to answer without calling a function')
    return ("You can call these functions:\n" + "\n".join(json.dumps(f, ensure_ascii=False) for f in offered)
            + "\n\nAnswer with JSON only: " + "; or ".join(forms) + ".")


def _with_system(messages: Any, text: str) -> list[Any]:
    """`messages` with `text` in the system message (the first one, or a new one ahead of the rest)."""
    listed = list(messages) if isinstance(messages, list) else []
    first = listed[0] if listed else None
    if isinstance(first, Mapping) and first.get("role") in ("system", "developer"):
        content = first.get("content")
        if isinstance(content, str):
            return [{**first, "content": f"{content}\n\n{text}"}, *listed[1:]]
        if isinstance(content, list):
            return [{**first, "content": [*content, {"type": "text", "text": text}]}, *listed[1:]]
    return [{"role": "system", "content": text}, *listed]


def constrained_body(body: dict[str, Any], form: CallForm = "list") -> dict[str, Any] | None:
    """`body` as a constrained tier is asked it; None when it goes as it is.

    The tools leave the request: told about in the system message and enforced by the schema instead.
    (Sent along, llama-server applies its own tool-call handling and the schema no longer binds: the
    models then write one call where several are asked for.)
    """
    schema = tool_call_schema(body, form)
    if schema is None:
        return None
    asked = {key: value for key, value in body.items() if key not in ("tools", "tool_choice", "parallel_tool_calls")}
    asked["messages"] = _with_system(body.get("messages"), instructions(body, schema))
    asked["response_format"] = {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema}}
    return asked


def _calls(answer: Any) -> list[dict[str, Any]] | None:
    """The answer's calls as OpenAI `tool_calls`; None when it is not calls.

    A call the list repeats verbatim is made once: asked for a list, a small model often writes its one
    call two or three times (the 0.5B tier did on most single-call BFCL items), and the same function
    with the same arguments twice in one answer has no use a client could want.
    """
    items = answer if isinstance(answer, list) else [answer]
    calls: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and "arguments" in item):
            return None
        arguments = json.dumps(item["arguments"], ensure_ascii=False)
        key = (item["name"], json.dumps(item["arguments"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        calls.append({"id": f"call_{len(calls)}", "type": "function",
                      "function": {"name": item["name"], "arguments": arguments}})
    return calls or None


def message_fields(content: Any, finish_reason: Any = None) -> dict[str, Any] | None:
    """The message fields a constrained answer's `content` stands for: `tool_calls` (content null) or
    the plain answer's `content`; None when the content is no constrained answer (passed on as is).
    An answer the token limit cut (`finish_reason` "length") is read as far as it goes."""
    if not isinstance(content, str):
        return None
    try:
        answer = json.loads(content)
    except (ValueError, RecursionError):  # the tier ignored the schema, or the token limit cut it
        return _cut_fields(content) if finish_reason == "length" else None
    calls = _calls(answer)
    if calls is not None:
        return {"content": None, "tool_calls": calls}
    if isinstance(answer, dict) and set(answer) == {"text"} and isinstance(answer["text"], str):
        return {"content": answer["text"]}
    return None


# The heads of the constrained forms, as llama-server's grammar lets a model space them.
_STRING = r'"((?:[^"\\]|\\.)*)'  # a JSON string's body so far (its closing quote optional)
_TEXT_HEAD = re.compile(r'\s*\{\s*"text"\s*:\s*' + _STRING)
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*' + _STRING + r'"?(?:\s*,\s*"arguments"\s*:\s*)?')
_LIST_HEAD = re.compile(r"\s*\[\s*")
_BETWEEN_ITEMS = re.compile(r"\s*,?\s*")


def _string_so_far(body: str) -> str:
    """A cut JSON string's body decoded as far as it is whole (a half-written escape is dropped)."""
    for end in range(len(body), max(len(body) - 6, -1), -1):
        try:
            return str(json.loads(f'"{body[:end]}"', strict=False))
        except ValueError:
            continue
    return ""


def _opens_a_form(content: str) -> bool:
    compact = re.sub(r"\s+", "", content)
    return any(form.startswith(compact) for form in ('[{"name":', '{"name":', '{"text":'))


def _cut_fields(content: str) -> dict[str, Any] | None:
    """The message fields of a constrained answer the token limit cut, as an OpenAI tier's own cut
    answer has them: the text so far, or the calls so far with the last one's `arguments` as far as
    they were written (not JSON, so never taken for a whole call). None when it is neither form."""
    text = _TEXT_HEAD.match(content)
    if text is not None:
        return {"content": _string_so_far(text[1])}
    listed = _LIST_HEAD.match(content)
    position, items = (listed.end(), []) if listed else (0, [])
    decoder = json.JSONDecoder()
    while listed:
        try:
            item, end = decoder.raw_decode(content, position)
        except (ValueError, RecursionError):
            break
        items.append(item)
        position = _BETWEEN_ITEMS.match(content, end).end()  # type: ignore[union-attr]  # matches empty
    whole = _calls(items) if items else []
    if whole is None:
        return None
    head = _CALL_HEAD.match(content, position)
    if head is None and whole:
        return {"content": None, "tool_calls": whole}
    if head is None:  # cut before its form could be read: no text and no call yet
        return {"content": ""} if _opens_a_form(content) else None
    cut = {"id": f"call_{len(whole)}", "type": "function",
           "function": {"name": _string_so_far(head[1]), "arguments": content[head.end():]}}
    return {"content": None, "tool_calls": [*whole, cut]}


def _convert_choice(choice: Any) -> None:
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return
    fields = message_fields(message.get("content"), choice.get("finish_reason"))
    if fields is None:
        return
    message.update(fields)
    if "tool_calls" in fields and choice.get("finish_reason") in ("stop", None):
        choice["finish_reason"] = "tool_calls"


def converted_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A constrained tier's whole answer with each choice's JSON turned into calls or text (in place)."""
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        _convert_choice(choice)
    return body


def _finish(index: int, held: str, finish_reason: Any) -> dict[str, Any]:
    """The delta that replaces a held answer, and its finish reason."""
    fields = message_fields(held, finish_reason)
    if fields is None:
        return {"index": index, "delta": {"content": held}, "finish_reason": finish_reason}
    if "tool_calls" in fields:
        calls = [{"index": i, **call} for i, call in enumerate(fields["tool_calls"])]
        reason = "tool_calls" if finish_reason in ("stop", None) else finish_reason
        return {"index": index, "delta": {"tool_calls": calls}, "finish_reason": reason}
    return {"index": index, "delta": {"content": fields["content"]}, "finish_reason": finish_reason}


async def converted_events(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """A constrained tier's stream: every chunk passes on with its text held back (logprobs, usage and
    the rest as they come); a choice's finishing chunk carries its whole answer, converted."""
    held: dict[int, list[str]] = {}
    sizes: dict[int, int] = {}
    async for chunk in events:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            yield chunk
            continue
        out: list[Any] = []
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                out.append(choice)
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and sizes.get(index, 0) + len(text) <= MAX_HELD_CHARS:
                held.setdefault(index, []).append(text)
                sizes[index] = sizes.get(index, 0) + len(text)
                choice = {**choice, "delta": {key: v for key, v in delta.items() if key != "content"}}  # type: ignore[union-attr]
            if choice.get("finish_reason") is not None:
                finished = _finish(index, "".join(held.pop(index, [])), choice["finish_reason"])
                choice = {**choice, **finished, "delta": {**choice.get("delta", {}), **finished["delta"]}}
            out.append(choice)
        yield {**chunk, "choices": out}


class ConstrainedTools:
    """A Backend that asks its tier tool requests through a JSON Schema and answers with `tool_calls`."""

    def __init__(self, backend: Backend, form: CallForm = "list") -> None:
        self._backend = backend
        self._form: CallForm = form

    async def send(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                   headers: Mapping[str, str]) -> TierReply:
        asked = constrained_body(body, self._form) if route == "chat/completions" else None
        reply = await self._backend.send(route, asked or body, timeout_s=timeout_s, headers=headers)
        if asked is None:
            return reply
        return TierReply(converted_answer(reply.body), reply.headers, reply.elapsed_s, reply.chunks, reply.tail,
                         reply.release)

    async def open_stream(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                          headers: Mapping[str, str]) -> TierStream:
        asked = constrained_body(body, self._form) if route == "chat/completions" else None
        stream = await self._backend.open_stream(route, asked or body, timeout_s=timeout_s, headers=headers)
        if asked is None:
            return stream
        return TierStream(converted_events(stream.events), stream.close, stream.headers, stream.serve_live)

    async def aclose(self) -> None:
        await self._backend.aclose()
