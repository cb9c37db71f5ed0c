"""The hostile cases, what each may end as, and every check made on a client's observation.

A case runs in up to four modes: as the lower tier of a cascade (hostile → healthy: a fault must
escalate) or as the pinned last tier (`recserve/<tier>`: a fault is a 502, or an error event once a
stream has started), each non-streaming (json) and streaming (sse).

Outcomes: `answer:<tier>` (200 JSON), `done:<tier>` (200 SSE ending in [DONE]), `error:<code>` (200
SSE ending in an error event), `cut` (200 SSE ending in neither), `<status>`, `no_answer`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from gateway.telemetry.loop_watch import LOOP_BUCKETS
from tests.hostile.harness import Observation
from tests.hostile.misbehaviours import EVIL_UPLINK

# invalid: an answer whose structure is broken (tool calls): a lower tier escalates, the last is served as is
Kind = Literal["ok", "quirk", "fault", "noconf", "reject", "invalid"]
Position = Literal["lower", "last"]
Transport = Literal["json", "sse"]

TIER_TIMEOUT_S = 3.0  # every hostile tier's timeout_s
REQUEST_TIMEOUT_S = 5.0  # server.request_timeout_s: bounds a served stream
SLACK_S = 1.0
MAX_RSS_MB = 300.0
# The healthy client's worst latency while a case runs, as the client sees it: the promise is 0.5 s on a
# quiet machine; CI runs 2.5x slower with both cores busy, where a process waiting for a CPU adds to it
# (0.5-0.9 s were seen there with the loop never held), so the wall-clock bound is 2.5x the promise.
MAX_HEALTHY_S = 1.25
# What the load cannot blur: the longest the gateway's own work held its event loop in one stretch, in CPU
# seconds of the loop's thread (recserve_event_loop_stall_cpu_seconds). The worst cases (tiny_objects, a
# buffered logprob flood) take 0.07-0.15 s on the reference machine, a 2-core EPYC VM; a lazy tokenizer
# load or an unbounded object count took 0.25-2.5 s there. A slower CPU gets a proportionally larger bound
# (`cpu_slowness`), rounded up to the histogram's next bucket.
MAX_LOOP_CPU_S = 0.25
REFERENCE_LOOP_CPU_S = 0.165  # `_reference_loop` on the reference machine, best of 3


def _reference_loop() -> float:
    started = time.process_time()
    total = 0
    for i in range(2_000_000):
        total += i * i
    return time.process_time() - started


def cpu_slowness() -> float:
    """How many times slower than the reference machine this CPU runs Python, at least 1: measured in CPU
    time, which a busy machine inflates far less than wall time."""
    return max(1.0, min(_reference_loop() for _ in range(3)) / REFERENCE_LOOP_CPU_S)


def loop_cpu_bound(slowness: float) -> float:
    """MAX_LOOP_CPU_S scaled by `slowness`, as the histogram bucket bound that holds it."""
    return min((bound for bound in LOOP_BUCKETS if bound >= MAX_LOOP_CPU_S * slowness), default=float("inf"))
HOSTILE_HEADER_TEXT = ["evil", "<script>", "A" * 16, EVIL_UPLINK]
PATH_CHARACTERS = re.compile(r"^[A-Za-z0-9_.\-\[\]()>!~?]+$")  # names, nesting, markers (DESIGN.md)
MAX_PATH_CHARS = 2048  # "capped": ours plus a chained gateway's, generously
MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    kind: Kind
    what: str
    transports: tuple[Transport, ...] = ("json", "sse")
    positions: tuple[Position, ...] = ("lower", "last")
    tier: str = "hostile"  # the tier pinned as last; the lower position always cascades hostile → healthy
    last_sse: frozenset[str] | None = None  # overrides the kind's outcomes for a served stream
    behaviour: str = ""  # what the request asks of the hostile tier; default: the case's name
    tools: bool = False  # the request offers a tool (tests.hostile.tool_misbehaviours.WEATHER_TOOL)

    @property
    def word(self) -> str:
        return self.behaviour or self.name


CASES: tuple[Case, ...] = (
    Case("healthy", "ok", "an honest answer (the control)"),
    Case("repeat_header", "fault", "one header name 200,000 times (~4.6 MB)"),
    Case("too_many_headers", "fault", "300 distinct small headers"),
    Case("endless_headers", "fault", "a header section that never ends"),
    Case("info_1xx", "quirk", "100 Continue and 103 Early Hints before the answer"),
    Case("http10_no_length", "quirk", "HTTP/1.0, no Content-Length, body ends at close"),
    Case("trailers", "quirk", "chunked with trailers (one forges x-recserve-path)"),
    Case("own_recserve_headers", "ok", "its own x-recserve-path (60 KB evil<script>) and uplink tokens"),
    Case("text_html", "fault", "200 text/html"),
    Case("empty_200", "fault", "200 with an empty body"),
    Case("never_answers", "fault", "reads the request, never answers"),
    Case("close_no_answer", "fault", "closes without a byte"),
    Case("slow_drip", "fault", "a fine answer at 1 byte per 100 ms"),
    Case("reset_mid_body", "fault", "TCP RST mid-body / after the first token"),
    Case("cl_longer_then_close", "fault", "Content-Length longer than the body, then FIN"),
    Case("cl_shorter", "fault", "Content-Length 10, the whole body and a smuggled 2nd response after it"),
    Case("bad_chunk_framing", "fault", "chunk size `zz`"),
    Case("chunk_size_huge", "fault", "a 32-hex-digit chunk size"),
    Case("huge_content_length", "fault", "Content-Length 200 MB, sent in full"),
    Case("endless_chunked", "fault", "an endless chunked body (JSON string / flood of valid chunks)"),
    Case("huge_logprobs", "fault", "65 MB of logprobs (one array / 1,080 chunks)",
         last_sse=frozenset({"done:hostile", "error:*"})),
    Case("tiny_objects", "noconf", "490,000 empty arrays as logprobs (answer / stream): the most JSON objects "
         "a tier may send"),
    Case("gzip_bomb", "fault", "gzip, ~1 MB on the wire → 1 GiB"),
    Case("deflate_bomb", "fault", "deflate, ~1 MB on the wire → 1 GiB"),
    Case("endless_stream", "fault", "a stream that never ends (a token / 20 ms); JSON never completing",
         last_sse=frozenset({"error:stream_timeout"})),
    Case("deep_nesting", "noconf", "100,000 nested `[` (in the body / in an event)"),
    Case("huge_int", "noconf", "a 400-digit integer logprob and usage.prompt_tokens"),
    Case("nan_logprobs", "noconf", "NaN / Infinity logprobs and usage"),
    Case("wrong_types", "noconf", "every field the wrong JSON type"),
    Case("not_object", "fault", "a JSON array / events that are not objects"),
    Case("invalid_utf8", "quirk", "bytes that are not UTF-8 in the answer"),
    Case("error_500_echo", "fault", "500 echoing the request head (authorization: Bearer <tier key>)"),
    Case("error_400_echo", "reject", "400 echoing the request head (authorization: Bearer <tier key>)"),
    Case("sse_no_done", "quirk", "a complete stream without [DONE]", transports=("sse",)),
    Case("sse_huge_line", "fault", "a first chunk, then a data line of 200 MB without newline",
         transports=("sse",)),
    Case("sse_error_echo", "fault", "a first chunk, then an error event echoing the request head",
         transports=("sse",)),
    Case("huge_tool_call", "invalid", "a tool call whose arguments are 60 MB (one string / 60,000 fragments)",
         tools=True),
    Case("many_tool_calls", "invalid", "1,000 distinct tool calls", tools=True),
    Case("malformed_tool_calls", "invalid", "tool calls of every wrong shape and type", tools=True),
    Case("tls_plain", "fault", "https base_url, plain HTTP server", positions=("last",), tier="tls_plain",
         behaviour="healthy"),
    Case("tls_bad_cert", "fault", "https to a self-signed certificate", positions=("last",), tier="tls_bad_cert",
         behaviour="healthy"),
    # A tier marked recserve_gateway: its x-recserve-* headers are read, but still vetted.
    Case("gateway_forged_headers", "ok", "trusted gateway tier: 60 KB evil<script> path, 16-digit uplink",
         positions=("last",), tier="hostile_gw", behaviour="own_recserve_headers"),
    Case("gateway_deep_path", "ok", "trusted gateway tier: a path nested 10,000 deep", positions=("last",),
         tier="hostile_gw", behaviour="deep_path"),
    Case("gateway_long_path", "ok", "trusted gateway tier: a grammatical 40 KB path", positions=("last",),
         tier="hostile_gw", behaviour="long_path"),
)


def modes() -> list[tuple[Case, Position, Transport]]:
    return [(case, position, transport) for case in CASES for position in case.positions
            for transport in case.transports]


def bound_s(position: Position, transport: Transport) -> float:
    """A served stream may last until the request's deadline; everything else, the tier's timeout."""
    return (REQUEST_TIMEOUT_S if position == "last" and transport == "sse" else TIER_TIMEOUT_S) + SLACK_S


def allowed(case: Case, position: Position, transport: Transport) -> frozenset[str]:
    if case.kind == "reject":
        return frozenset({"400"})
    if position == "lower":
        tiers = {"ok": ["hostile"], "quirk": ["hostile", "healthy"]}.get(case.kind, ["healthy"])
        return frozenset(f"{'answer' if transport == 'json' else 'done'}:{tier}" for tier in tiers)
    if transport == "sse" and case.last_sse is not None:
        return case.last_sse
    answered = {f"answer:{case.tier}"} if transport == "json" else {f"done:{case.tier}"}
    failed = {"502", "504"} if transport == "json" else {"502", "504", "error:*"}
    if case.kind == "ok":
        return frozenset(answered)
    if case.kind == "fault":
        return frozenset(failed)
    return frozenset(answered | failed)  # quirk, noconf: either, parsed safely


def expected_paths(case: Case, tier: str) -> frozenset[str]:
    """x-recserve-path of a lower-position answer served by `tier`."""
    if tier == "hostile":
        return frozenset({"hostile"})
    if case.kind == "fault":
        return frozenset({"hostile!>healthy"})
    if case.kind == "invalid":  # past a bound it is a fault; else its structure is invalid
        return frozenset({"hostile(invalid_tool_call)>healthy", "hostile!>healthy"})
    return frozenset({"hostile>healthy", "hostile!>healthy"})


def _strict_json(data: bytes) -> Any:
    """UTF-8 JSON a client in any language can read: no NaN/Infinity, integers within ±2^53 (I-JSON,
    RFC 7493: beyond it JavaScript clients silently lose digits)."""

    def reject(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    def safe_int(text: str) -> int:
        if len(text) > 17 or abs(int(text)) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer outside ±2^53: {text[:24]}…")
        return int(text)

    return json.loads(data.decode("utf-8"), parse_constant=reject, parse_int=safe_int)


def sse_events(data: bytes) -> list[bytes]:
    """Complete `data:` payloads in a slice of an SSE body (a partial first or last event dropped)."""
    blocks = data.split(b"\n\n")
    return [line[5:].strip() for block in blocks[:-1] for line in block.split(b"\n") if line.startswith(b"data:")]


def outcome(obs: Observation, transport: Transport) -> str:
    if obs.status is None:
        return "no_answer"
    if obs.status != 200:
        return str(obs.status)
    tier = obs.headers.get("x-recserve-tier", "?")
    if transport == "json":
        return f"answer:{tier}"
    events = sse_events(obs.last)
    if not events or obs.stopped_reading:
        return "cut"
    if events[-1] == b"[DONE]":
        return f"done:{tier}"
    try:
        error = _strict_json(events[-1]).get("error")
    except (ValueError, AttributeError):
        return "cut"
    return f"error:{error.get('code')}" if isinstance(error, dict) else "cut"


def matches(result: str, patterns: frozenset[str]) -> bool:
    return any(result == p or (p.endswith(":*") and result.startswith(p[:-1])) for p in patterns)


def body_problems(obs: Observation, transport: Transport) -> list[str]:
    """What a client must always be able to rely on in the body."""
    problems: list[str] = []
    if obs.status is not None and obs.status >= 400:
        try:
            error = _strict_json(obs.first)["error"]
            assert set(error) >= {"message", "type", "param", "code"}
        except (ValueError, KeyError, TypeError, AssertionError):
            problems.append(f"error body not in OpenAI shape: {obs.first[:160]!r}")
    elif obs.status == 200 and transport == "json":
        if obs.whole is None:
            problems.append(f"a {obs.size}-byte JSON answer")
        else:
            try:
                _strict_json(obs.whole)
            except ValueError as exc:
                problems.append(f"answer is not strict UTF-8 JSON: {exc}")
    elif obs.status == 200:
        for data in [*sse_events(obs.first), *sse_events(obs.last)]:
            if data != b"[DONE]":
                try:
                    _strict_json(data)
                except ValueError as exc:
                    problems.append(f"stream event is not strict UTF-8 JSON: {exc}: {data[:80]!r}")
                    break
    return problems


def header_problems(obs: Observation) -> list[str]:
    problems = [f"hostile header text {n[:20]!r} reached the client" for n in sorted(obs.found_in_headers)
                if n in HOSTILE_HEADER_TEXT]
    path = obs.headers.get("x-recserve-path")
    if path is not None and (len(path) > MAX_PATH_CHARS or not PATH_CHARACTERS.match(path)):
        problems.append(f"x-recserve-path outside the grammar: {path[:80]!r}")
    uplink = obs.headers.get("x-recserve-uplink-tokens")
    if uplink is not None and (not uplink.isdigit() or int(uplink) > 1_000_000):
        problems.append(f"x-recserve-uplink-tokens implausible: {uplink[:40]!r}")
    return problems
