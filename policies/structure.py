"""Is a structured answer valid? The check that runs before confidence for requests with tools or a
response format: a lower tier's confident answer is kept only when its structure is what was asked.

`expectation_of(body)` reads what a chat request asks for (None when it asks for no structure: then
nothing here runs); `problem(expectation, choices)` says what is wrong with an answer's choices, as
one of the `InvalidReason`s, or None. Tiers are untrusted: answers are read defensively, never raise.

The reasons:
    invalid_tool_call     a call names a tool that was not offered; its arguments are not JSON, not a
                          JSON object, or fail the tool's `parameters` schema; or several calls came
                          where `parallel_tool_calls: false` allows one
    missing_tool_call     `tool_choice` is "required" (Anthropic: "any") and no call came; or a named
                          function was forced and not called
    unexpected_tool_call  a call came where `tool_choice` is "none", or no tools were offered at all
    invalid_json          `response_format` json_object / json_schema and the content does not parse
                          as JSON (no code fences, no NaN)
    schema_mismatch       `response_format` json_schema and the parsed content fails the schema
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from policies.schemas import Check, SchemaValidators, compile_schema

InvalidReason = Literal["invalid_tool_call", "missing_tool_call", "unexpected_tool_call", "invalid_json",
                        "schema_mismatch"]
INVALID_REASONS: Final[tuple[InvalidReason, ...]] = get_args(InvalidReason)
MAX_CALLS: Final = 128  # calls read per message; more is itself an invalid answer


@dataclass(frozen=True, slots=True)
class Tool:
    """An offered function tool: its name and the check of its arguments (None: only "an object")."""

    name: str
    check: Check | None


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a request asks of an answer's structure."""

    tools: Mapping[str, Tool]
    # False when some offered tool is not a function tool we can read: calls to names we do not
    # know are then not held against the answer.
    names_known: bool = True
    choice: Literal["auto", "none", "required", "named"] = "auto"
    named: str | None = None  # the forced function's name when choice is "named"
    single_call: bool = False  # parallel_tool_calls: false
    json_format: bool = False  # response_format json_object or json_schema
    json_check: Check | None = None  # the json_schema's validator, when there is one we can use

    @property
    def wants_call(self) -> bool:
        """The answer must be a tool call (tool_choice "required" or a named function)."""
        return self.choice in ("required", "named")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of an answer, as a tier sent it."""

    name: str  # "" when the tier sent no name (or not a string)
    arguments: str  # the raw arguments text
    parsed: Any = None  # the parsed arguments (a dict) when `error` is None
    error: Literal["not_json", "not_object", "malformed"] | None = None

    @property
    def valid_json_object(self) -> bool:
        return self.error is None


def expectation_of(body: Mapping[str, Any], validators: SchemaValidators | None = None) -> Expectation | None:
    """What the chat request `body` asks of the structure of an answer; None when it asks nothing.

    Schemas are compiled through `validators` (cached), or afresh without one. Never raises: a part
    of the request we cannot read is simply not checked (the tiers judge the request itself).
    """
    raw_tools = body.get("tools")
    response_format = body.get("response_format")
    json_format, json_check = _response_format(response_format, validators)
    if not raw_tools and not json_format:
        return None
    tools: dict[str, Tool] = {}
    names_known = True
    for entry in raw_tools if isinstance(raw_tools, list) else ():
        tool = _tool(entry, validators)
        if tool is None:
            names_known = False
        else:
            tools[tool.name] = tool
    choice, named = _tool_choice(body.get("tool_choice"))
    return Expectation(tools, names_known, choice, named, body.get("parallel_tool_calls") is False,
                       json_format, json_check)


def _compile(schema: Any, validators: SchemaValidators | None) -> Check | None:
    return validators.get(schema) if validators is not None else compile_schema(schema)


def _tool(entry: Any, validators: SchemaValidators | None) -> Tool | None:
    if not isinstance(entry, Mapping) or entry.get("type", "function") != "function":
        return None
    function = entry.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str) or not name:
        return None
    assert isinstance(function, Mapping)
    parameters = function.get("parameters")
    return Tool(name, _compile(parameters, validators) if isinstance(parameters, Mapping) else None)


def _tool_choice(value: Any) -> tuple[Literal["auto", "none", "required", "named"], str | None]:
    if value in ("none", "required"):
        return value, None
    if isinstance(value, Mapping):
        function = value.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str) and name:
            return "named", name
    return "auto", None  # "auto", absent, or a form we cannot read: the tier chooses


def _response_format(value: Any, validators: SchemaValidators | None) -> tuple[bool, Check | None]:
    if not isinstance(value, Mapping):
        return False, None
    kind = value.get("type")
    if kind == "json_object":
        return True, None
    if kind != "json_schema":
        return False, None
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return True, _compile(schema, validators) if isinstance(schema, Mapping | bool) else None


def tool_calls_of(message: Any) -> list[ToolCall]:
    """The calls in a chat `choices[i].message` (`tool_calls`, or the legacy `function_call`), each
    with its arguments parsed. A call that is not even an object comes back as a malformed call."""
    if not isinstance(message, Mapping):
        return []
    raw = message.get("tool_calls")
    entries: list[Any] = list(raw[:MAX_CALLS + 1]) if isinstance(raw, list) else []
    legacy = message.get("function_call")
    if legacy is not None:
        entries.append({"function": legacy})
    return [_call(entry) for entry in entries]


def _call(entry: Any) -> ToolCall:
    function = entry.get("function") if isinstance(entry, Mapping) else None
    if not isinstance(function, Mapping):
        return ToolCall("", "", error="malformed")
    name = function.get("name")
    arguments = function.get("arguments")
    name = name if isinstance(name, str) else ""
    if isinstance(arguments, Mapping):  # some servers send the object itself rather than its text
        return ToolCall(name, "", dict(arguments))
    if not isinstance(arguments, str):
        return ToolCall(name, "", error="malformed")
    if not arguments.strip():
        return ToolCall(name, arguments, {})  # llama.cpp-style empty arguments of a call without any
    parsed = parse_json(arguments)
    if parsed is _UNPARSED:
        return ToolCall(name, arguments, error="not_json")
    if not isinstance(parsed, dict):
        return ToolCall(name, arguments, error="not_object")
    return ToolCall(name, arguments, parsed)


class _Unparsed:
    """The value of text that is not JSON."""


_UNPARSED: Final = _Unparsed()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """`text` as strict JSON (NaN and Infinity refused), or the module's "unparsed" marker."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, too many digits, nested too deep
        return _UNPARSED


def is_json(value: Any) -> bool:
    """Whether `parse_json` parsed its text."""
    return value is not _UNPARSED


def problem(expectation: Expectation, choices: Any) -> InvalidReason | None:
    """What is wrong with the structure of an answer's `choices` (every one must be valid), or None.

    An answer without a readable list of choices is not judged here: it has no confidence either.
    """
    if not isinstance(choices, list):
        return None
    for choice in choices:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if not isinstance(message, Mapping):  # no message to read (or a stream's, cut at its bound)
            return "invalid_tool_call" if expectation.tools or expectation.wants_call else "invalid_json"
        reason = message_problem(expectation, message)
        if reason is None and choice.get("finish_reason") == "length" and tool_calls_of(message):
            reason = "invalid_tool_call"  # the token limit cut the calls: the last may lack arguments or more calls
        if reason is not None:
            return reason
    return None


def message_problem(expectation: Expectation, message: Mapping[str, Any]) -> InvalidReason | None:
    """What is wrong with one answer message, or None."""
    calls = tool_calls_of(message)
    if calls:
        return _calls_problem(expectation, calls)
    if expectation.wants_call:
        return "missing_tool_call"
    if expectation.json_format:
        return _content_problem(expectation, message)
    return None


def _calls_problem(expectation: Expectation, calls: list[ToolCall]) -> InvalidReason | None:
    if expectation.choice == "none" or (not expectation.tools and expectation.names_known):
        return "unexpected_tool_call"
    if len(calls) > MAX_CALLS or (expectation.single_call and len(calls) > 1):
        return "invalid_tool_call"
    for call in calls:
        tool = expectation.tools.get(call.name)
        if tool is None and (expectation.names_known or not call.name):
            return "invalid_tool_call"
        if not call.valid_json_object:
            return "invalid_tool_call"
        if tool is not None and tool.check is not None and not tool.check(call.parsed):
            return "invalid_tool_call"
    if expectation.choice == "named" and all(call.name != expectation.named for call in calls):
        return "missing_tool_call"
    return None


def _content_problem(expectation: Expectation, message: Mapping[str, Any]) -> InvalidReason | None:
    refusal = message.get("refusal")
    content = message.get("content")
    if isinstance(refusal, str) and refusal and not content:
        return None  # a refusal is an answer the API allows in place of the JSON; confidence judges it
    if not isinstance(content, str):
        return "invalid_json"
    parsed = parse_json(content)
    if not is_json(parsed):
        return "invalid_json"
    if expectation.json_check is not None and not expectation.json_check(parsed):
        return "schema_mismatch"
    return None
