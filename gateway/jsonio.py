"""JSON on the hot path: orjson (several times faster than the stdlib for the gateway's bodies),
falling back to the stdlib where orjson is stricter, so no input behaves differently.

orjson refuses what the stdlib accepts on input (NaN/Infinity literals, integers beyond 64 bits)
and cannot write integers beyond 64 bits; those rare cases take the stdlib path.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError (or RecursionError for absurd nesting) like `json.loads`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # the stdlib's verdict (and error message) is the one we report


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
