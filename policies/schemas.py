"""JSON Schemas from clients, compiled once and kept in a bounded cache.

The validator is jsonschema-rs (Rust), chosen by `python -m bench.tool_validators` on the Berkeley
Function Calling Leaderboard's tool schemas (numbers in docs/concepts/structured-answers.md): it
compiles a schema about 100x faster than `jsonschema` and `fastjsonschema` and validates 8-140x faster.
Safety decided it as much as speed: a schema is the client's, and the other two match `pattern`
with Python's backtracking `re`, where `^(a+)+$` against forty a's and a `!` never finishes. Here
patterns run on Rust's linear-time regex engine (`RegexOptions`), and `$ref`s are never fetched.

A schema the library refuses (invalid, a lookaround in a pattern, a remote `$ref`) cannot be checked:
`compile` returns None and the caller checks what it can without it. A schema error is the client's,
and the tier that is asked decides what it makes of it; the gateway is never stricter than its tiers.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import jsonschema_rs

# A validator: True when the instance satisfies the schema.
Check = Callable[[Any], bool]
MAX_SCHEMAS: Final = 1024  # distinct schemas kept compiled per gateway process
MAX_CACHED_SCHEMA_BYTES: Final = 64 * 1024  # a bigger schema is compiled per request, never kept


def canonical(schema: Any) -> bytes:
    """The schema's bytes with keys sorted: equal schemas, however their keys are ordered, share a key."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def compile_schema(schema: Any) -> Check | None:
    """A validator for `schema`, or None when the library refuses it."""
    if not isinstance(schema, dict | bool):
        return None
    try:
        validator = jsonschema_rs.validator_for(schema, pattern_options=jsonschema_rs.RegexOptions(), offline=True)
    except Exception:  # ValidationError, ReferencingError, ValueError: each means "cannot be checked"
        return None
    return _guarded(validator.is_valid)


def _guarded(is_valid: Check) -> Check:
    def check(instance: Any) -> bool:
        try:
            return is_valid(instance)
        except Exception:  # an instance it cannot read (an int past 64 bits): not the answer's fault
            return True

    return check


class SchemaValidators:
    """Compiled validators by canonical schema bytes, least recently used dropped first.

    One per gateway runtime; the event loop is its only user, so it needs no lock.
    """

    def __init__(self, max_schemas: int = MAX_SCHEMAS) -> None:
        self._max = max_schemas
        self._compiled: OrderedDict[bytes, Check | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._compiled)

    def get(self, schema: Any) -> Check | None:
        """The validator for `schema` (None: it cannot be checked)."""
        try:
            key = canonical(schema)
        except (TypeError, ValueError, RecursionError):
            return None
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        check = compile_schema(schema)
        if len(key) <= MAX_CACHED_SCHEMA_BYTES:
            self._compiled[key] = check
            while len(self._compiled) > self._max:
                self._compiled.popitem(last=False)
        return check
