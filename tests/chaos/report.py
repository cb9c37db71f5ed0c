"""What a chaos scenario found: outcomes, checks, and the summary table printed at the end."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.chaos.load import Outcome

_REQUESTS = re.compile(r'^recserve_requests_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$', re.M)


@dataclass
class ScenarioResult:
    """One scenario's outcomes and the checks it made on them."""

    name: str
    outcomes: list[Outcome]
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, description: str, passed: bool) -> None:
        self.checks.append((description, passed))

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    @property
    def failures(self) -> list[str]:
        return [description for description, ok in self.checks if not ok]

    def tiers(self) -> Counter[str]:
        return Counter(o.tier or "-" for o in self.outcomes if o.status == 200)

    def kinds(self) -> Counter[str]:
        return Counter(o.kind for o in self.outcomes)

    def lost(self) -> int:
        return sum(o.lost for o in self.outcomes)

    def server_errors(self) -> int:
        return sum(1 for o in self.outcomes if o.status is not None and o.status >= 500)

    def mean_latency(self) -> float:
        return sum(o.latency_s for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    def max_latency(self) -> float:
        return max((o.latency_s for o in self.outcomes), default=0.0)


def answered_by_tier(roots: list[str]) -> Counter[str]:
    """The gateways' own count of 200 answers per serving tier (recserve_requests_total)."""
    counted: Counter[str] = Counter()
    with httpx.Client(timeout=5) as http:
        for root in roots:
            for match in _REQUESTS.finditer(http.get(root + "/metrics").text):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
                if labels.get("route") == "chat/completions" and labels.get("status") == "200":
                    counted[labels.get("tier", "-")] += int(float(match["value"]))
    return counted


def logged_latencies(log: str) -> list[float]:
    """Seconds each request took as the gateway itself measured it (access-log `latency_ms`)."""
    latencies: list[float] = []
    for line in log.splitlines():
        start = line.find('{"')
        if start < 0 or '"latency_ms"' not in line:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("latency_ms"), int | float):
            latencies.append(float(record["latency_ms"]) / 1e3)
    return latencies


def table(results: list[ScenarioResult]) -> str:
    """The summary: one row per scenario."""
    header = ("scenario", "requests", "answered", "device", "edge", "cloud", "degraded", "errors by type",
              "lost", "5xx", "mean s", "max s", "verdict")
    rows = [header]
    for r in results:
        tiers = r.tiers()
        kinds = r.kinds()
        errors = ", ".join(f"{k}={n}" for k, n in sorted(kinds.items()) if k not in ("ok", "degraded")) or "-"
        rows.append((r.name, str(len(r.outcomes)), str(sum(tiers.values())), str(tiers["device"]),
                     str(tiers["edge"]), str(tiers["cloud"]), str(kinds["degraded"]), errors, str(r.lost()),
                     str(r.server_errors()), f"{r.mean_latency():.2f}", f"{r.max_latency():.2f}",
                     "PASS" if r.passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in results:
        for note in r.notes:
            lines.append(f"  {r.name}: {note}")
        for failure in r.failures:
            lines.append(f"  {r.name}: FAILED: {failure}")
    return "\n".join(lines)
