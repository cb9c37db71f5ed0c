"""`python -m bench.tool_validators [--wheel PATH]`: JSON Schema validators on real tool schemas.

The gateway checks a lower tier's tool-call arguments against the tool's `parameters` schema, which
the client sent: the validator must be fast to build (a schema is compiled on first sight), fast to
run, and safe on a hostile schema. This compares `jsonschema`, `fastjsonschema` and `jsonschema-rs`
on the function docs of the Berkeley Function Calling Leaderboard (the `bfcl-eval` wheel, read as a
zip file, never installed):

    pip download --no-deps --only-binary=:all: bfcl-eval==2026.3.23 -d /tmp/bfcl

Each call of the leaderboard's accepted answers (`possible_answer/`, the first accepted value per
argument) is validated as is (valid) and with one required argument dropped (invalid). Prints one
markdown table: median µs to compile a schema, to validate a valid and an invalid instance; how many
valid instances each library accepts; and how each copes with a catastrophic `pattern`, run in a
child process killed after `--hostile-timeout` seconds. Then the validity gate's own cost per tool
request (`policies.structure`: read the request, judge one answer). Never asserts timings.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import multiprocessing
import platform
import statistics
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from gateway.evaluation.bfcl import json_schema

DEFAULT_WHEEL = "/tmp/bfcl/bfcl_eval-2026.3.23-py3-none-any.whl"
CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "live_multiple",
              "live_parallel", "live_parallel_multiple")
HOSTILE_SCHEMA = {"type": "object", "properties": {"q": {"type": "string", "pattern": "^(a+)+$"}}}
HOSTILE_INSTANCE = {"q": "a" * 40 + "!"}  # 2^40 ways to split the a's for a backtracking engine

Validate = Callable[[Any], bool]
Compile = Callable[[dict[str, Any]], Validate]


@dataclass(frozen=True, slots=True)
class Sample:
    schema: dict[str, Any]
    valid: dict[str, Any]
    invalid: dict[str, Any] | None  # a required argument dropped; None when nothing is required


def _lines(wheel: zipfile.ZipFile, name: str) -> Iterator[dict[str, Any]]:
    with wheel.open(name) as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def samples(path: str, categories: tuple[str, ...] = CATEGORIES) -> tuple[list[dict[str, Any]], list[Sample]]:
    """Every distinct tool schema, and one sample per accepted call."""
    schemas: dict[str, dict[str, Any]] = {}
    found: list[Sample] = []
    with zipfile.ZipFile(path) as wheel:
        for category in categories:
            answers = {row["id"]: row["ground_truth"] for row in
                       _lines(wheel, f"bfcl_eval/data/possible_answer/BFCL_v4_{category}.json")}
            for row in _lines(wheel, f"bfcl_eval/data/BFCL_v4_{category}.json"):
                docs = {doc["name"]: json_schema(doc["parameters"]) for doc in row["function"]}
                for schema in docs.values():
                    schemas.setdefault(json.dumps(schema, sort_keys=True), schema)
                for call in answers.get(row["id"], ()):
                    for name, arguments in call.items():
                        if name in docs:
                            found.append(_sample(docs[name], arguments))
    return list(schemas.values()), found


def _sample(schema: dict[str, Any], accepted: dict[str, list[Any]]) -> Sample:
    valid = {key: next(v for v in values if v != "") for key, values in accepted.items()
             if any(v != "" for v in values)}
    required = [key for key in schema.get("required", ()) if key in valid]
    invalid = {k: v for k, v in valid.items() if k != required[0]} if required else None
    return Sample(schema, valid, invalid)


def _jsonschema(schema: dict[str, Any]) -> Validate:
    import jsonschema  # type: ignore[import-untyped]

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # what the gateway needs to know up front: is the schema usable at all
    return cls(schema).is_valid  # type: ignore[no-any-return]


def _fastjsonschema(schema: dict[str, Any]) -> Validate:
    import fastjsonschema

    check = fastjsonschema.compile(schema)

    def valid(instance: Any) -> bool:
        try:
            check(instance)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return valid


def _jsonschema_rs(schema: dict[str, Any]) -> Validate:
    import jsonschema_rs

    # The linear-time regex engine (no lookaround, no backreferences) and no fetching of remote $refs.
    return jsonschema_rs.validator_for(schema, pattern_options=jsonschema_rs.RegexOptions(), offline=True).is_valid


LIBRARIES: dict[str, tuple[str, Compile]] = {
    "jsonschema": ("jsonschema", _jsonschema),
    "fastjsonschema": ("fastjsonschema", _fastjsonschema),
    "jsonschema-rs (RegexOptions)": ("jsonschema_rs", _jsonschema_rs),
}


def _median_us(samples_s: list[float]) -> float:
    return statistics.median(samples_s) * 1e6


def _per_call(function: Callable[[], Any], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat


def measure(compile_: Compile, schemas: list[dict[str, Any]], found: list[Sample],
            repeat: int) -> dict[str, Any]:
    # fastjsonschema writes schema `default`s into the instances it checks: each library gets its own copies.
    schemas, found = copy.deepcopy((schemas, found))
    compile_s = [_per_call(functools.partial(compile_, schema), 1) for schema in schemas]
    compiled = {id(s): compile_(s) for s in {id(x.schema): x.schema for x in found}.values()}
    valid_s: list[float] = []
    invalid_s: list[float] = []
    accepted = rejected = 0
    for sample in found:
        check = compiled[id(sample.schema)]
        accepted += check(sample.valid)
        valid_s.append(_per_call(functools.partial(check, sample.valid), repeat))
        if sample.invalid is not None:
            rejected += not check(sample.invalid)
            invalid_s.append(_per_call(functools.partial(check, sample.invalid), repeat))
    return {"compile": _median_us(compile_s), "valid": _median_us(valid_s), "invalid": _median_us(invalid_s),
            "accepted": accepted, "rejected": rejected, "invalid_total": len(invalid_s)}


def _hostile_child(name: str, queue: Any) -> None:
    check = LIBRARIES[name][1](HOSTILE_SCHEMA)
    started = time.perf_counter()
    result = check(HOSTILE_INSTANCE)
    queue.put((result, time.perf_counter() - started))


def hostile(name: str, timeout_s: float) -> str:
    """How the library fares on `^(a+)+$` against 40 a's and a `!`, in a child it may kill."""
    queue: Any = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=_hostile_child, args=(name, queue))
    child.start()
    child.join(timeout_s)
    if child.is_alive():
        child.kill()
        child.join()
        return f"still running after {timeout_s:g} s (killed)"
    if queue.empty():
        return "refused the schema"
    result, elapsed = queue.get()
    return f"{'valid' if result else 'invalid'} in {elapsed * 1e6:.0f} µs"


def gate_cost(found: list[Sample], repeat: int) -> dict[str, float]:
    """The validity gate's own cost per tool request, as the gateway pays it: reading what the request
    asks (`expectation_of`, its schema already compiled and cached) and judging one answer (`problem`)."""
    from policies.schemas import SchemaValidators
    from policies.structure import expectation_of, problem

    validators = SchemaValidators()
    read_s: list[float] = []
    judge_s: list[float] = []
    for sample in copy.deepcopy(found):
        body = {"messages": [{"role": "user", "content": "q"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": sample.schema}}]}
        answer = [{"message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": json.dumps(sample.valid)}}]}}]
        expectation = expectation_of(body, validators)  # compiles once: the steady state is timed
        assert expectation is not None
        read_s.append(_per_call(functools.partial(expectation_of, body, validators), repeat))
        judge_s.append(_per_call(functools.partial(problem, expectation, answer), repeat))
    return {"read": _median_us(read_s), "judge": _median_us(judge_s)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--wheel", default=DEFAULT_WHEEL, help="the bfcl-eval wheel")
    parser.add_argument("--repeat", type=int, default=50, help="validations timed together per sample")
    parser.add_argument("--hostile-timeout", type=float, default=5.0)
    parser.add_argument("--categories", default=",".join(CATEGORIES), help="BFCL categories, comma-separated")
    args = parser.parse_args(argv)
    schemas, found = samples(args.wheel, tuple(args.categories.split(",")))
    print(f"{len(schemas)} distinct tool schemas, {len(found)} accepted calls "
          f"({sum(s.invalid is not None for s in found)} with a required argument to drop); "
          f"Python {platform.python_version()}, {platform.machine()}\n")
    print("| library | version | compile µs | valid µs | invalid µs | valid accepted | invalid rejected "
          "| `^(a+)+$` on 'a'*40+'!' |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for label, (module, compile_) in LIBRARIES.items():
        row = measure(compile_, schemas, found, args.repeat)
        package = {"jsonschema_rs": "jsonschema-rs"}.get(module, module)
        print(f"| {label} | {version(package)} | {row['compile']:.1f} | {row['valid']:.2f} | {row['invalid']:.2f} "
              f"| {row['accepted']}/{len(found)} | {row['rejected']}/{row['invalid_total']} "
              f"| {hostile(label, args.hostile_timeout)} |")
        sys.stdout.flush()
    cost = gate_cost(found, args.repeat)
    print(f"\nThe validity gate per tool request (one tool, one call, schema cached): reading the request "
          f"{cost['read']:.1f} µs, judging the answer {cost['judge']:.1f} µs (medians).")


if __name__ == "__main__":
    main()
