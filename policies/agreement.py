"""Agreement of structured answers, for the quality floor's probes: tool calls compared as calls,
JSON answers compared as values. Pure functions on what a tier sent (untrusted: never raises).

Values are compared after the normalisation the Berkeley Function-Calling Leaderboard's checker
applies, so two answers that a BFCL-style grader would score alike agree:

- strings: lower-cased, with spaces and `,./-_*^` removed and `'` read as `"` ("New York" equals
  "new york" and "new-york");
- numbers by value (5 equals 5.0); booleans are not numbers (`true` is not 1);
- lists element by element, in order; objects key by key (keys compared exactly: they name
  parameters);
- text that is not JSON (or holds NaN or Infinity) equals nothing, itself included.

Calls are compared as a multiset of (function name, normalised arguments): parallel calls in another
order agree, a call made twice does not equal it made once.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

# BFCL's `standardize_string` removes exactly these characters.
_IGNORED_IN_STRINGS = re.compile(r"[ \,\.\/\-\_\*\^]")


class _NotJson(Exception):
    """The text is not JSON we can compare."""


def standardize_string(text: str) -> str:
    """BFCL's string normalisation: `re.sub(r"[ \\,\\.\\/\\-\\_\\*\\^]", "", s).lower().replace("'", '"')`."""
    return _IGNORED_IN_STRINGS.sub("", text).lower().replace("'", '"')


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and never equal themselves.
    raise _NotJson(name)


def _canonical(value: Any) -> Hashable:
    """A hashable form of a parsed JSON value in which equal means "agrees" (see module docstring)."""
    # The type tag keeps "5" apart from 5 and true apart from 1 (bool is an int subclass).
    if isinstance(value, str):
        return ("str", standardize_string(value))
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int | float):
        return ("num", value)  # 5 == 5.0 and hash(5) == hash(5.0): equal by value
    if isinstance(value, list):
        return ("list", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("obj", frozenset((key, _canonical(item)) for key, item in value.items()))
    raise _NotJson(type(value).__name__)


def canonical_json(text: str) -> Hashable | None:
    """The comparable form of JSON text, or None when it is not JSON."""
    try:
        return _canonical(json.loads(text, parse_constant=_reject_constant))
    except (_NotJson, ValueError, TypeError, RecursionError):
        return None


def json_answers_agree(a: str, b: str) -> bool:
    """Two answers to a JSON response format agree when both parse and their values agree."""
    left, right = canonical_json(a), canonical_json(b)
    return left is not None and left == right


def _call_key(call: Any) -> Hashable | None:
    """(name, normalised arguments) of one tool call in the chat layout, or None when malformed."""
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        return None
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        parsed = canonical_json(arguments)
    else:
        # Some OpenAI-compatible servers send the arguments as an object rather than its JSON text.
        try:
            parsed = _canonical(arguments) if isinstance(arguments, Mapping) else None
        except (_NotJson, RecursionError):
            parsed = None
    return None if parsed is None else (function["name"], parsed)


def tool_calls_agree(a: Any, b: Any) -> bool:
    """Two answers' `tool_calls` lists agree when they make the same calls, in any order.

    A call that cannot be read (no name, arguments that are not JSON) makes its answer agree with
    nothing: we cannot tell what it would have done.
    """
    left, right = _call_multiset(a), _call_multiset(b)
    return left is not None and left == right


def _call_multiset(calls: Any) -> Counter[Hashable] | None:
    if calls is None:
        return Counter()  # no tool calls: answered in text
    if not isinstance(calls, list):
        return None
    keys = [_call_key(call) for call in calls]
    if any(key is None for key in keys):
        return None
    return Counter(keys)


def expects_json(response_format: Any) -> bool:
    """Whether a request's `response_format` asks for a JSON answer (json_object or json_schema)."""
    return isinstance(response_format, Mapping) and response_format.get("type") in ("json_object", "json_schema")
