"""JSON on the hot path: orjson (several times faster than the stdlib for the gateway's bodies),
falling back to the stdlib where orjson is stricter, so no input behaves differently.

orjson refuses what the stdlib accepts on input (NaN/Infinity literals, integers beyond 64 bits)
and cannot write integers beyond 64 bits; those rare cases take the stdlib path.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import orjson

# Documents at least this long are parsed with the cyclic garbage collector paused (see `loads`).
_PAUSE_GC_FROM = 64 * 1024


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError (or RecursionError for absurd nesting) like `json.loads`."""
    if len(data) < _PAUSE_GC_FROM or not gc.isenabled():
        return _loads(data)
    # A parsed document is a tree: the collector has no cycle to find in it. Left running, the
    # allocations of a big one set off collections that walk everything parsed so far, again and
    # again, while the parse holds the event loop: 8 MB of empty arrays from a tier took 4x as long.
    gc.disable()
    try:
        return _loads(data)
    finally:
        gc.enable()


def _loads(data: bytes | str) -> Any:
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


# I-JSON (RFC 7493): integers beyond ±2^53 lose digits in JavaScript clients, silently.
SAFE_INTEGER = 2**53


def dumps_for_client(value: Any) -> bytes:
    """Compact UTF-8 JSON of something that may hold a tier's numbers: an integer beyond ±2^53 is
    written as null. Costs nothing extra unless such an integer (or nesting past orjson's limit) is
    there. Raises ValueError when the value cannot be written at all (nested past the stdlib's)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:
        pass
    try:
        return json.dumps(_safe_integers(value), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except RecursionError:
        raise ValueError("nested too deeply to be written as JSON") from None


def _safe_integers(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _safe_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_safe_integers(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -SAFE_INTEGER <= value <= SAFE_INTEGER else None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None  # as orjson writes NaN and infinities
    return value
