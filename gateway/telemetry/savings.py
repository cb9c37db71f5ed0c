"""Savings in what users pay for, per tenant and workload: how much traffic never reached the top tier, the
prompt tokens shipped up (plain and weighted by each tier's `uplink_weight`) and the spend at each
tier's `price`, each against sending every request to the top tier alone.

One finished request is costed from its hops (`RequestCost`): every tier that received the prompt
(answered, escalated, faulted — not one that was busy, skipped or bypassed) is charged the prompt's
input tokens and, when known, its own completion tokens; the tier that answered is charged the
answer's completion tokens. The top-tier-only baseline is the same prompt and answer tokens at the top
tier's weight and prices. Running totals per tenant and workload live in a `SavingsLedger` (one per app,
with its Prometheus counters); the number of workloads it keeps apart is bounded like the gateway's own.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.cascade.climb import Hop, reported_tokens
from gateway.cascade.workloads import OVERFLOW
from gateway.config.schema import TierConfig

PER_MTOK: Final = 1e-6
NO_TIER: Final = "none"  # the `tier` label of a request no tier answered
_NOT_ASKED: Final = frozenset({"busy", "skipped", "bypassed"})


def prompt_shipped(hop: Hop) -> bool:
    """Whether the hop's tier received the prompt (a busy, skipped or bypassed tier was not asked)."""
    return hop.outcome not in _NOT_ASKED and hop.reason not in ("busy", "budget")


def completion_tokens_of(body: Mapping[str, Any], count_text: Callable[[str], int]) -> int:
    """The answer's `usage.completion_tokens`, else our count of its text (every choice)."""
    reported = reported_tokens(body, "completion_tokens")
    if reported is not None:
        return reported
    total = 0
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
        if isinstance(text, str):
            total += count_text(text)
    return total


@dataclass(frozen=True, slots=True)
class Rates:
    """One tier's uplink weight and prices per token."""

    weight: float
    input_usd: float
    output_usd: float

    @classmethod
    def of(cls, tier: TierConfig) -> Rates:
        price = tier.price
        return cls(tier.uplink_weight, price.input_per_mtok * PER_MTOK if price else 0.0,
                   price.output_per_mtok * PER_MTOK if price else 0.0)

    def spend(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.input_usd + output_tokens * self.output_usd


@dataclass(slots=True)  # not frozen: built on every request, and a frozen one pays a setattr per field
class RequestCost:
    """What one request (or one probe) cost, and what sending it to the top tier alone would have."""

    prompt_tokens: int = 0  # counted once per request (0 for a probe: its request is counted already)
    reached_top: bool = False
    uplink_tokens: int = 0  # prompt tokens shipped to tiers above the first
    weighted_uplink: float = 0.0
    top_only_weighted_uplink: float = 0.0
    spend_usd: float = 0.0
    top_only_spend_usd: float = 0.0


class SavingsRates:
    """Every tier's weight and prices (a runtime's: a reload may change them); costs requests and probes."""

    def __init__(self, tiers: Sequence[TierConfig], max_workloads: int) -> None:
        self._rates = {tier.name: Rates.of(tier) for tier in tiers}
        self._first = tiers[0].name
        self.top = tiers[-1].name
        self.max_workloads = max_workloads

    def request(self, hops: Sequence[Hop], served: str | None, prompt_tokens: int,
                completion_tokens: int) -> RequestCost:
        """A finished request's cost: `served` answered with `completion_tokens` (None: no tier did)."""
        uplink = 0
        weighted = spend = 0.0
        reached_top = False
        for hop in hops:
            if not prompt_shipped(hop):
                continue
            rates = self._rates[hop.tier]
            output = completion_tokens if hop.tier == served else (hop.completion_tokens or 0)
            weighted += rates.weight * prompt_tokens
            spend += rates.spend(prompt_tokens, output)
            if hop.tier != self._first:
                uplink += prompt_tokens
            if hop.tier == self.top:
                reached_top = True
        top = self._rates[self.top]
        return RequestCost(
            prompt_tokens=prompt_tokens, reached_top=reached_top,
            uplink_tokens=uplink, weighted_uplink=weighted, top_only_weighted_uplink=top.weight * prompt_tokens,
            spend_usd=spend, top_only_spend_usd=top.spend(prompt_tokens, completion_tokens if served else 0))

    def probe(self, tier: str, prompt_tokens: int, completion_tokens: int) -> RequestCost:
        """A quality probe's cost: a call the top-tier-only baseline would not have made."""
        rates = self._rates[tier]
        return RequestCost(uplink_tokens=prompt_tokens if tier != self._first else 0,
                           weighted_uplink=rates.weight * prompt_tokens,
                           spend_usd=rates.spend(prompt_tokens, completion_tokens))


def share(part: float, whole: float) -> float | None:
    """`part / whole`; None while the baseline `whole` is zero (nothing to compare against yet)."""
    return part / whole if whole > 0 else None


@dataclass(slots=True)
class RequestTally:
    """Finished requests and how many each tier answered: the running totals every savings view counts."""

    requests: int = 0
    served: Tally[str] = field(default_factory=Tally)

    def count_request(self, served: str | None) -> None:
        """One finished request; `served` (the answering tier) is tallied unless it is None."""
        self.requests += 1
        if served is not None:
            self.served[served] += 1


@dataclass(slots=True)
class WorkloadSavings(RequestTally):
    """Running totals of one workload (or of all)."""

    top_tier_requests: int = 0
    prompt_tokens: int = 0
    top_tier_prompt_tokens: int = 0
    uplink_tokens: int = 0
    weighted_uplink: float = 0.0
    top_only_weighted_uplink: float = 0.0
    spend_usd: float = 0.0
    top_only_spend_usd: float = 0.0

    def add(self, cost: RequestCost) -> None:
        """What a call cost (a probe's, or a request's calls)."""
        self.uplink_tokens += cost.uplink_tokens
        self.weighted_uplink += cost.weighted_uplink
        self.top_only_weighted_uplink += cost.top_only_weighted_uplink
        self.spend_usd += cost.spend_usd
        self.top_only_spend_usd += cost.top_only_spend_usd

    def count(self, cost: RequestCost, served: str | None) -> None:
        """One finished request (a probe is only `add`ed: it is no request of its own)."""
        self.count_request(served or NO_TIER)
        self.prompt_tokens += cost.prompt_tokens
        if cost.reached_top:
            self.top_tier_requests += 1
            self.top_tier_prompt_tokens += cost.prompt_tokens
        self.add(cost)

    def merge(self, other: WorkloadSavings) -> None:
        self.requests += other.requests
        self.served.update(other.served)
        self.top_tier_requests += other.top_tier_requests
        self.prompt_tokens += other.prompt_tokens
        self.top_tier_prompt_tokens += other.top_tier_prompt_tokens
        self.uplink_tokens += other.uplink_tokens
        self.weighted_uplink += other.weighted_uplink
        self.top_only_weighted_uplink += other.top_only_weighted_uplink
        self.spend_usd += other.spend_usd
        self.top_only_spend_usd += other.top_only_spend_usd

    def to_json(self) -> dict[str, Any]:
        """The totals and their shares; a ratio is None while its baseline is zero (e.g. no prices)."""
        below = share(self.requests - self.top_tier_requests, self.requests)
        below_tokens = share(self.prompt_tokens - self.top_tier_prompt_tokens, self.prompt_tokens)
        return {
            "requests": self.requests,
            "served": dict(sorted(self.served.items())),
            "below_top": {"requests": self.requests - self.top_tier_requests, "requests_share": below,
                          "prompt_tokens": self.prompt_tokens - self.top_tier_prompt_tokens,
                          "prompt_tokens_share": below_tokens},
            "communication": {"uplink_prompt_tokens": self.uplink_tokens,
                              "top_tier_only_prompt_tokens": self.prompt_tokens,
                              "vs_top_tier_only": share(self.uplink_tokens, self.prompt_tokens)},
            "weighted_communication": {"weighted": self.weighted_uplink,
                                       "top_tier_only": self.top_only_weighted_uplink,
                                       "vs_top_tier_only": share(self.weighted_uplink,
                                                                  self.top_only_weighted_uplink)},
            "spend": {"usd": self.spend_usd, "top_tier_only_usd": self.top_only_spend_usd,
                      "saved_usd": self.top_only_spend_usd - self.spend_usd,
                      "vs_top_tier_only": share(self.spend_usd, self.top_only_spend_usd)},
        }


# (metric name, help, WorkloadSavings field): counters read from the running totals at scrape time.
_COUNTERS: Final = (
    ("recserve_workload_top_tier_requests", "Requests whose prompt reached the top tier, by workload",
     "top_tier_requests"),
    ("recserve_workload_prompt_tokens", "Prompt tokens of finished requests (what top-tier-only ships), by workload",
     "prompt_tokens"),
    ("recserve_workload_top_tier_prompt_tokens", "Prompt tokens of requests that reached the top tier, by workload",
     "top_tier_prompt_tokens"),
    ("recserve_workload_uplink_prompt_tokens",
     "Prompt tokens shipped to tiers above the first (probes included), by workload", "uplink_tokens"),
    ("recserve_workload_weighted_uplink_tokens",
     "Sum of uplink_weight x prompt tokens shipped to each tier (probes included), by workload", "weighted_uplink"),
    ("recserve_workload_top_tier_only_weighted_uplink_tokens",
     "The top tier's uplink_weight x every prompt token, by workload", "top_only_weighted_uplink"),
    ("recserve_workload_spend_usd",
     "USD at the tiers' prices: input and output tokens of every tier asked (probes included), by workload",
     "spend_usd"),
    ("recserve_workload_top_tier_only_spend_usd",
     "USD had the top tier been sent every prompt and produced every answer, by workload", "top_only_spend_usd"),
)


class SavingsLedger(Collector):
    """Per-tenant, per-workload savings of one app (outlives reloads), as running totals that Prometheus
    reads when it scrapes: a request costs a few additions, not a dozen labelled counter updates.

    Workload names are the gateway's (already folded into "other" past `policy.max_workloads`); the
    ledger folds too (into the tenant's "other"), so its label values stay bounded however names come
    and go over time. Tenants are named, never keyed by a client key (gateway/config/tenants.py).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._entries: dict[tuple[str, str], WorkloadSavings] = {}  # (tenant, workload) -> totals
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("recserve_workload_requests", "Finished requests by tenant, workload and "
                                       "answering tier ('none': no tier answered)",
                                       labels=["tenant", "workload", "tier"])
        for (tenant, name), savings in self._entries.items():
            for tier, count in savings.served.items():
                requests.add_metric([tenant, name, tier], count)
        yield requests
        for metric, text, attribute in _COUNTERS:
            family = CounterMetricFamily(metric, text, labels=["tenant", "workload"])
            for (tenant, name), savings in self._entries.items():
                family.add_metric([tenant, name], getattr(savings, attribute))
            yield family

    def _entry(self, tenant: str, workload: str, limit: int) -> WorkloadSavings:
        key = (tenant, workload)
        if key not in self._entries and len(self._entries) >= limit:
            key = (tenant, OVERFLOW)
        savings = self._entries.get(key)
        if savings is None:
            savings = self._entries[key] = WorkloadSavings()
        return savings

    def request(self, tenant: str, workload: str, cost: RequestCost, served: str | None, limit: int) -> None:
        """One finished request of `tenant`'s `workload` (at most `limit` workloads are kept apart, and
        each tenant's overflow)."""
        self._entry(tenant, workload, limit).count(cost, served)

    def probe(self, tenant: str, workload: str, cost: RequestCost, limit: int) -> None:
        """A quality probe made for a request of `tenant`'s `workload`."""
        self._entry(tenant, workload, limit).add(cost)

    def to_json(self) -> dict[str, Any]:
        """{"total": ..., "workloads": {name: ... (every tenant's together)},
        "tenants": {tenant: {"total": ..., "workloads": {name: ...}}}}; workloads and tenants by
        requests, most first."""
        total = WorkloadSavings()
        by_name: dict[str, WorkloadSavings] = {}
        by_tenant: dict[str, tuple[WorkloadSavings, dict[str, WorkloadSavings]]] = {}
        for (tenant, name), savings in self._entries.items():
            total.merge(savings)
            by_name.setdefault(name, WorkloadSavings()).merge(savings)
            tenant_total, workloads = by_tenant.setdefault(tenant, (WorkloadSavings(), {}))
            tenant_total.merge(savings)
            workloads[name] = savings
        return {"total": total.to_json(), "workloads": _ordered(by_name),
                "tenants": {tenant: {"total": tenant_total.to_json(), "workloads": _ordered(workloads)}
                            for tenant, (tenant_total, workloads) in
                            sorted(by_tenant.items(), key=lambda item: (-item[1][0].requests, item[0]))}}


def _ordered(entries: Mapping[str, WorkloadSavings]) -> dict[str, Any]:
    """Each entry's figures, most requests first, then by name."""
    ordered = sorted(entries.items(), key=lambda item: (-item[1].requests, item[0]))
    return {name: savings.to_json() for name, savings in ordered}
