"""A hostile tier must never freeze the gateway, exhaust its memory, or leak into an answer.

One real `recserve serve` process for the whole module, in front of a hostile tier (its own process,
~38 misbehaviours) and a healthy scripted tier. The hostile tier is the lower tier of the default
cascade (hostile → healthy) and, pinned as `recserve/<tier>`, the last. While each case runs, a second
client calls `recserve/healthy` in a loop. Every case, in every mode, must end:
  - never 500, and as its kind expects (a fault escalates / is a 502 / ends a stream with an error event);
  - within its bound: the tier's timeout + 1 s (a served stream: request_timeout_s + 1 s);
  - with the gateway's peak RSS (VmHWM per case, from /proc) under 300 MB;
  - with the healthy client's worst latency at most MAX_HEALTHY_S (0.5 s on a fast machine, 2.5x that on a slow one),
    and the gateway's event loop never held for more than MAX_LOOP_CPU_S of CPU at once (its own metric;
    scaled for a slower CPU);
  - with no tier secret and no SMUGGLED text in any response, and no hostile header text in the client's headers.
The table of the last run is printed at the end of the session and kept in tests/artifacts/hostile.md.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.hostile import cases as c
from tests.hostile.harness import (
    REPO,
    REPORT_KEY,
    HealthyLoad,
    HostileTierProcess,
    MeasuredGateway,
    Observation,
    call,
    longest_stall_cpu,
    self_signed_cert,
)
from tests.hostile.misbehaviours import SMUGGLED
from tests.hostile.tool_misbehaviours import WEATHER_TOOL
from tests.support.scripted_tier import ThreadedTier

KEY_ENV = "RECSERVE_HOSTILE_TIER_KEY"
ARTIFACT = REPO / "tests" / "artifacts" / "hostile.md"
FOLLOW_UPS = 3  # honest requests after cl_shorter, to catch a connection reused out of sync
MIN_HEALTHY_CALLS = 3  # completed during each case's window


@dataclass
class Row:
    case: str
    mode: str
    outcome: str = ""
    elapsed_s: float = 0.0
    bound_s: float = 0.0
    rss_mb: float = 0.0
    healthy_worst_s: float = 0.0
    healthy_calls: int = 0
    loop_cpu_s: float = 0.0  # the longest stall of the gateway's event loop (CPU), as a bucket bound
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        verdict = "ok" if not self.problems else "FAIL: " + "; ".join(p[:140] for p in self.problems)
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (f"| {self.case} | {self.mode} | {self.outcome} | {self.elapsed_s:.2f} / {self.bound_s:.0f} | "
                f"{self.rss_mb:.0f} | {self.healthy_worst_s * 1000:.0f} ({self.healthy_calls}) | "
                f"{f'≤ {self.loop_cpu_s * 1000:.0f}' if self.loop_cpu_s else '-'} | "
                f"{verdict}{notes} |".replace("\n", " "))


class Suite:
    """Everything one module run shares, and one case run with every measurement around it."""

    def __init__(self, gateway: MeasuredGateway, hostile: HostileTierProcess, healthy: ThreadedTier,
                 load: HealthyLoad, secret: str) -> None:
        self.gateway = gateway
        self.hostile = hostile
        self.healthy = healthy
        self.load = load
        self.secret = secret
        self.rows: list[Row] = []
        self.sdk = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
        self._stalls: dict[float, float] = {}
        self.max_loop_cpu_s = c.loop_cpu_bound(c.cpu_slowness())

    @property
    def needles(self) -> list[str]:
        return [self.secret, self.secret.removeprefix("sk-hostile-"), SMUGGLED, *c.HOSTILE_HEADER_TEXT]

    def begin(self, row: Row) -> None:
        if not self.gateway.alive:
            self.gateway.restart()
            row.notes.append("gateway restarted before this case")
        if not self.hostile.settle(5.0):
            row.notes.append("hostile tier still busy with the previous case")
        self.gateway.begin_case()
        self._stalls = self.gateway.loop_stalls()
        self.load.begin_case()

    def end(self, row: Row) -> None:
        self.load.wait_for_calls(MIN_HEALTHY_CALLS, 3.0)
        row.healthy_worst_s, row.healthy_calls, failures = self.load.end_case()
        row.loop_cpu_s = longest_stall_cpu(self._stalls, self.gateway.loop_stalls())
        if row.loop_cpu_s > self.max_loop_cpu_s:
            row.problems.append(f"the gateway's event loop was held for up to {row.loop_cpu_s:g} s of CPU "
                                f"> {self.max_loop_cpu_s:g} s")
        row.rss_mb = self.gateway.case_peak_mb()
        if row.rss_mb >= c.MAX_RSS_MB:
            row.problems.append(f"gateway peak RSS {row.rss_mb:.0f} MB ≥ {c.MAX_RSS_MB:.0f}")
        if self.gateway.killed_at_mb:
            row.problems.append(f"gateway killed by the watchdog at {self.gateway.killed_at_mb:.0f} MB RSS")
        elif not self.gateway.alive:
            row.problems.append("gateway process died")
        if row.healthy_worst_s > c.MAX_HEALTHY_S:
            row.problems.append(f"healthy client waited {row.healthy_worst_s:.2f} s > {c.MAX_HEALTHY_S} s")
        if row.healthy_calls < MIN_HEALTHY_CALLS:
            row.problems.append(f"healthy client completed only {row.healthy_calls} calls in the case's window")
        if failures:
            row.problems.append(f"healthy client failed {len(failures)}x: {failures[0]}")
        if not self.hostile.settle(2.0):
            row.notes.append("tier connection still being fed 2 s after the answer")
        self.rows.append(row)

    def run(self, case: c.Case, position: c.Position, transport: c.Transport) -> Row:
        row = Row(case.name, f"{position}/{transport}", bound_s=c.bound_s(position, transport))
        model = "recserve" if position == "lower" else f"recserve/{case.tier}"
        self.begin(row)
        try:
            obs = call(self.sdk, model, case.word, stream=transport == "sse", deadline_s=row.bound_s + 5,
                       needles=self.needles, tools=[WEATHER_TOOL] if case.tools else None)
            row.outcome, row.elapsed_s = c.outcome(obs, transport), obs.elapsed_s
            row.problems += self.check(case, position, transport, obs, row)
            if case.name == "cl_shorter":
                row.problems += self.follow_ups()
        finally:
            self.end(row)
        return row

    def check(self, case: c.Case, position: c.Position, transport: c.Transport, obs: Observation,
              row: Row) -> list[str]:
        problems: list[str] = []
        allowed = c.allowed(case, position, transport)
        if not c.matches(row.outcome, allowed):
            detail = obs.client_error or obs.first[:200].decode("utf-8", "replace")
            problems.append(f"outcome {row.outcome}, expected {'|'.join(sorted(allowed))}: {detail}")
        if obs.elapsed_s > row.bound_s:
            problems.append(f"took {obs.elapsed_s:.2f} s > {row.bound_s:.0f} s")
        if self.secret in obs.found | obs.found_in_headers or self.needles[1] in obs.found | obs.found_in_headers:
            problems.append("the tier's API key reached the client")
        if SMUGGLED in obs.found:
            problems.append("a smuggled response reached the client")
        problems += c.header_problems(obs) + c.body_problems(obs, transport)
        served_by = obs.headers.get("x-recserve-tier")
        if position == "lower" and obs.status == 200 and served_by is not None:
            path = obs.headers.get("x-recserve-path", "")
            if path not in c.expected_paths(case, served_by):
                problems.append(f"x-recserve-path {path[:60]!r}, expected {sorted(c.expected_paths(case, served_by))}")
        return problems

    def follow_ups(self) -> list[str]:
        problems = []
        for _ in range(FOLLOW_UPS):
            obs = call(self.sdk, "recserve", "healthy", stream=False, deadline_s=10, needles=[SMUGGLED])
            if SMUGGLED in obs.found:
                problems.append("a later request got the smuggled response (connection reused out of sync)")
                break
        return problems


def gateway_config(hostile: HostileTierProcess, healthy: ThreadedTier) -> dict[str, Any]:
    def hostile_tier(name: str, base_url: str) -> dict[str, Any]:
        return {"name": name, "base_url": base_url, "model": "hostile-model", "timeout_s": c.TIER_TIMEOUT_S,
                "api_key_env": KEY_ENV}

    return {
        "server": {"request_timeout_s": c.REQUEST_TIMEOUT_S, "max_hops": 4},
        "auth": {"api_keys_env": "RECSERVE_HOSTILE_SUITE_CLIENT_KEYS_UNSET", "admin_key_env": None},
        "tiers": [
            hostile_tier("hostile", f"http://127.0.0.1:{hostile.port}/v1"),
            {"name": "healthy", "base_url": healthy.base_url, "model": "healthy-model", "timeout_s": 5},
            # Only ever pinned: the healthy tier above never escalates (threshold 0).
            hostile_tier("tls_plain", f"https://127.0.0.1:{hostile.port}/v1"),
            hostile_tier("tls_bad_cert", f"https://127.0.0.1:{hostile.tls_port}/v1"),
            {**hostile_tier("hostile_gw", f"http://127.0.0.1:{hostile.port}/v1"), "recserve_gateway": True},
        ],
        "policy": {"default": "casserve", "casserve": {"thresholds": {"hostile": 0.5, "healthy": 0.0,
                                                                      "tls_plain": 0.0}}},
        "windows": {"store": "memory"},
    }


def write_report(rows: list[Row], path: Path, max_loop_cpu_s: float) -> str:
    lines = ["# Hostile tiers", "",
             f"Bounds: time ≤ tier timeout ({c.TIER_TIMEOUT_S:.0f} s) + 1 s, a served stream ≤ request_timeout_s "
             f"({c.REQUEST_TIMEOUT_S:.0f} s) + 1 s; peak RSS < {c.MAX_RSS_MB:.0f} MB; "
             f"healthy client worst ≤ {c.MAX_HEALTHY_S * 1000:.0f} ms; the gateway's event loop held ≤ "
             f"{max_loop_cpu_s * 1000:.0f} ms of CPU at once (stalls over 50 ms, by histogram bucket; "
             f"{c.MAX_LOOP_CPU_S * 1000:.0f} ms on the reference machine).", "",
             "| case | mode | outcome | time s / bound | peak RSS MB | healthy worst ms (calls) | loop held ms CPU "
             "| result |",
             "|---|---|---|---|---|---|---|---|", *(row.markdown() for row in rows), ""]
    failed = sum(bool(row.problems) for row in rows)
    lines.append(f"{len(rows) - failed} of {len(rows)} passed.")
    lines += ["", "Cases (the hostile tier's behaviour):", "",
              *(f"- `{case.name}` ({case.kind}): {case.what}" for case in c.CASES)]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Suite]:
    workdir = tmp_path_factory.mktemp("hostile")
    hostile = HostileTierProcess(workdir, self_signed_cert(workdir)).start()
    healthy = ThreadedTier("healthy", "healthy-model").start()
    secret = f"sk-hostile-{secrets.token_hex(16)}"
    gateway = MeasuredGateway("hostile-gateway", gateway_config(hostile, healthy), workdir, {KEY_ENV: secret})
    load: HealthyLoad | None = None
    try:
        gateway.start()
        load = HealthyLoad(gateway.url, "recserve/healthy").start()
        # The load's first calls warm the gateway. Waited for, not slept on: the load process imports the
        # SDK first, which took longer than a 0.5 s sleep with both cores busy, and the first case then saw
        # no healthy call at all. (The bound only stops a load that never starts.)
        load.begin_case()
        load.wait_for_calls(MIN_HEALTHY_CALLS, 60.0)
        suite = Suite(gateway, hostile, healthy, load, secret)
        yield suite
        request.config.stash[REPORT_KEY] = write_report(suite.rows, ARTIFACT, suite.max_loop_cpu_s)
    finally:
        if load is not None:
            load.stop()
        gateway.close()
        healthy.stop()
        hostile.stop()


@pytest.mark.parametrize(("case", "position", "transport"), c.modes(),
                         ids=[f"{case.name}-{position}-{transport}" for case, position, transport in c.modes()])
def test_hostile_tier(suite: Suite, case: c.Case, position: c.Position, transport: c.Transport) -> None:
    row = suite.run(case, position, transport)
    assert not row.problems, "\n".join(row.problems)


def _records(suite: Suite, nonce: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in suite.hostile.state()[1] if r.get("nonce") == nonce and r.get("kind") == kind]


def _wait_for(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("transport", ["json", "sse"])
@pytest.mark.parametrize("position", ["lower", "last"])
def test_client_disconnect_before_first_byte_cancels_the_cascade(suite: Suite, position: str,
                                                                  transport: str) -> None:
    """The client leaves while the tier is silent: the tier sees its connection closed at once (well
    before its timeout), and no later tier is called for nobody."""
    nonce = uuid.uuid4().hex
    row = Row("client_disconnect", f"{position}/{transport}", bound_s=1.0)
    suite.begin(row)
    try:
        body = json.dumps({"model": "recserve" if position == "lower" else "recserve/hostile",
                           "messages": [{"role": "user", "content": f"hang_until_closed {nonce}"}],
                           "stream": transport == "sse", "max_tokens": 16}).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{suite.gateway.port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", suite.gateway.port), timeout=5) as client:
            client.sendall(head + body)
            reached = _wait_for(lambda: bool(_records(suite, nonce, "request")), 3.0)
            left = time.monotonic()
        closed = _wait_for(lambda: bool(_records(suite, nonce, "peer_closed")), c.TIER_TIMEOUT_S + 1)
        row.elapsed_s = time.monotonic() - left
        row.outcome = "tier closed" if closed else "tier not closed"
        time.sleep(max(0.0, left + c.TIER_TIMEOUT_S + 1 - time.monotonic()))  # a leaked cascade would go on now
        if not reached:
            row.problems.append("the request never reached the hostile tier")
        if not closed or row.elapsed_s > row.bound_s:
            row.problems.append(f"the tier's connection was not closed within {row.bound_s:.0f} s of the client "
                                f"leaving ({row.elapsed_s:.2f} s)")
        if any(nonce in r.body.decode(errors="replace") for r in suite.healthy.requests):
            row.problems.append("the next tier was called after the client had left")
    finally:
        suite.end(row)
    assert not row.problems, "\n".join(row.problems)


@pytest.mark.parametrize("hops", ["-5", "abc", "9" * 40, "1e3"])
def test_bad_hop_header_is_a_400(suite: Suite, hops: str) -> None:
    row = Row("x-recserve-hops", repr(hops[:12]), bound_s=1.0)
    suite.begin(row)
    try:
        started = time.monotonic()
        response = httpx.post(f"{suite.gateway.url}/chat/completions", timeout=10, headers={"x-recserve-hops": hops},
                              json={"model": "recserve/healthy", "messages": [{"role": "user", "content": "hi"}]})
        row.elapsed_s, row.outcome = time.monotonic() - started, str(response.status_code)
        if response.status_code != 400:
            row.problems.append(f"status {response.status_code}, expected 400: {response.text[:120]}")
        else:
            obs = Observation(status=400, first=response.content, size=len(response.content))
            row.problems += c.body_problems(obs, "json")
    finally:
        suite.end(row)
    assert not row.problems, "\n".join(row.problems)


def test_the_checks_catch_what_the_hostile_tier_sends_without_a_gateway(suite: Suite) -> None:
    """Negative control: asked directly, the hostile tier does leak the key it was sent and forge
    headers, so the checks above would see them if the gateway passed them on."""
    with openai.OpenAI(base_url=f"{suite.hostile.url}/v1", api_key=suite.secret, max_retries=0) as direct:
        leaked = call(direct, "m", "error_500_echo", stream=False, deadline_s=5, needles=suite.needles)
        forged = call(direct, "m", "own_recserve_headers", stream=False, deadline_s=5, needles=suite.needles)
    assert leaked.status == 500 and suite.secret in leaked.found
    assert c.header_problems(forged) and "evil" in forged.found_in_headers


def test_a_trusted_gateway_tier_still_nests_a_valid_path(suite: Suite) -> None:
    """Positive control for the gateway_* cases: a tier marked recserve_gateway is read at all."""
    obs = call(suite.sdk, "recserve/hostile_gw", "valid_path", stream=False, deadline_s=5, needles=[])
    assert obs.status == 200
    assert obs.headers.get("x-recserve-path") == "hostile_gw[edge>cloud!]"
    # Uplink tokens add up: the upstream's 42 plus the prompt tokens this gateway sent up to it.
    assert 42 < int(obs.headers.get("x-recserve-uplink-tokens", "0")) < 100
