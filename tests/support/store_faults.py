"""Shared-store faults put to a real gateway: what its clients get while Redis fails, whether the
failure is counted, and how soon the shared windows are back once the fault is cleared.

`measure` drives one `recserve serve` process with the openai SDK (requests one after another):
until it answers from the shared windows, then through the fault for `during_s`, then from the
moment the fault is cleared until it answers from the shared windows again. A `FaultRow` is what
it saw; `tests/policies/stores/test_store_faults.py` asserts on the rows, and
`python -m tests.policies.stores.fault_table` prints them as the store-fault table.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.processes import GatewayProcess
from tests.support.scripted_tier import ThreadedTier

WINDOW = 20
_ERRORS = re.compile(r'^recserve_window_store_errors_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$', re.M)


def gateway_config(tiers: dict[str, ThreadedTier], windows: dict[str, Any]) -> dict[str, Any]:
    """Three scripted tiers, the RecServe rule, a rate limit (whose buckets share the store) and `windows`."""
    return {
        "auth": {"api_keys_env": "RECSERVE_FAULTS_TEST_KEYS_NEVER_SET", "admin_key_env": None,
                 "rate_limit": {"requests_per_minute": 600_000, "burst": 10_000}},
        "tiers": [{"name": name, "base_url": tiers[name].base_url, "model": tiers[name].model,
                   "provider": "openai", "timeout_s": 5} for name in ("device", "edge", "cloud")],
        "policy": {"default": "recserve", "recserve": {"beta": 0.3, "window": WINDOW}},
        "windows": windows,
    }


def prompts(seed: int) -> Iterator[tuple[str, float]]:
    """Endless prompts with the device confidence each one scripts."""
    rng = random.Random(seed)
    for i in itertools.count():
        device = round(rng.uniform(0.05, 0.95), 3)
        yield f"q{i} [device:{device}][edge:{rng.uniform(0.05, 0.95):.3f}][cloud:0.9]", device


@dataclass(frozen=True)
class Sample:
    """One request's outcome."""

    at: float
    took: float  # seconds until the answer
    status: int  # 0: no HTTP answer at all
    window: str | None  # "local" when decided from local windows
    device: float  # the device confidence the prompt scripted

    @property
    def shared(self) -> bool:
        return self.status == 200 and self.window is None


def ask(client: Any, prompt: tuple[str, float]) -> Sample:
    started = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="recserve", messages=[{"role": "user", "content": prompt[0]}], max_tokens=8)
        return Sample(started, time.monotonic() - started, raw.status_code, raw.headers.get("x-recserve-window"),
                      prompt[1])
    except Exception as exc:  # an error status (the SDK raises) or no answer: recorded, never lost
        return Sample(started, time.monotonic() - started, int(getattr(exc, "status_code", 0) or 0), None,
                      prompt[1])


def errors_by_kind(gateway: GatewayProcess) -> Counter[str]:
    """`recserve_window_store_errors_total` of the gateway now, by `store/kind`."""
    text = httpx.get(f"http://127.0.0.1:{gateway.port}/metrics", timeout=10).text
    counts: Counter[str] = Counter()
    for match in _ERRORS.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        counts[f"{labels.get('store')}/{labels.get('kind')}"] += int(float(match["value"]))
    return counts


def until_shared(client: Any, source: Iterator[tuple[str, float]], timeout_s: float,
                 settle: int = 5) -> tuple[list[Sample], float | None]:
    """Requests until `settle` in a row answer from the shared windows; the seconds to the first of
    them (None when that did not happen within `timeout_s`)."""
    start = time.monotonic()
    samples: list[Sample] = []
    while time.monotonic() - start < timeout_s:
        samples.append(ask(client, next(source)))
        tail = samples[-settle:]
        if len(tail) == settle and all(s.shared for s in tail):
            return samples, tail[0].at - start
        if not samples[-1].shared:
            time.sleep(0.05)
    return samples, None


@dataclass
class Fault:
    """A way to make the shared store fail, and to end it."""

    name: str
    inject: Callable[[], None]
    clear: Callable[[], None]
    expected: tuple[str, ...]  # the `kind`s it may be counted as; none: handled without failing over
    during_s: float = 4.0  # how long requests meet the fault (longer where one call waits out the budget)


@dataclass
class FaultRow:
    """What a gateway's clients saw during and after one fault."""

    fault: Fault
    during: list[Sample]
    counted: Counter[str]  # errors counted during the fault, by store/kind
    after: list[Sample]
    recovered_s: float | None  # clear → first request answered from the shared windows again
    notes: list[str] = field(default_factory=list)

    def statuses(self) -> Counter[int]:
        return Counter(s.status for s in [*self.during, *self.after])

    def local(self) -> int:
        return sum(s.window == "local" for s in self.during)

    def markdown(self) -> str:
        answers = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(self.statuses().items()))
        counted = ", ".join(f"{k} +{n}" for k, n in sorted(self.counted.items()) if n) or "nothing"
        recovered = "no" if self.recovered_s is None else f"{self.recovered_s:.1f} s"
        slowest = max((s.took for s in self.during), default=0.0)
        return (f"| {self.fault.name} | {answers} | {self.local()} of {len(self.during)} | {slowest:.2f} s | "
                f"{counted} | {recovered} |")


TABLE_HEADER = ("| fault | answers (during + after) | decided from local windows during the fault | slowest answer "
                "during | counted (`recserve_window_store_errors_total`, store/kind) | shared again after clearing |\n"
                "|---|---|---|---|---|---|")


def measure(gateway: GatewayProcess, fault: Fault, source: Iterator[tuple[str, float]], *,
            recover_timeout_s: float = 30.0, healthy_first: bool = True) -> FaultRow:
    """Healthy (shared answers) → `fault.inject()` → requests for `fault.during_s` → `fault.clear()`
    → requests until shared again."""
    with gateway.sdk() as client:
        if healthy_first:
            _, ready = until_shared(client, source, recover_timeout_s, settle=3)
            if ready is None:
                raise RuntimeError(f"{fault.name}: the gateway never answered from the shared windows first")
        before = errors_by_kind(gateway)
        fault.inject()
        during: list[Sample] = []
        try:
            end = time.monotonic() + fault.during_s
            while time.monotonic() < end:
                during.append(ask(client, next(source)))
        finally:
            counted = errors_by_kind(gateway) - before
            fault.clear()
        after, recovered = until_shared(client, source, recover_timeout_s)
    return FaultRow(fault, during, counted, after, recovered)
