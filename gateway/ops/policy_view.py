"""What `GET /admin/policy` reports (and the status page draws): per tier and scope (task, workload,
tenant, prefix), the window and the threshold it gives now, plus this replica's traffic and
communication counts and its savings per tenant and workload (gateway/telemetry/savings.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from gateway.cascade.runtime import Runtime
from gateway.telemetry.metrics import Traffic
from gateway.telemetry.savings import SavingsLedger
from policies.base import Learning, Scope
from policies.quantile import linear_quantile, quantile_fraction

HISTOGRAM_BINS: Final = 10


def window_stats(values: Sequence[float], beta: float, size: int) -> dict[str, Any]:
    """Length, current β-quantile threshold, share of the window below it, quantiles, histogram.

    `threshold` is None while the window holds at most one value: the rule does not judge then.
    `escalation_rate` is the share of the window's confidences below today's threshold — what the
    rule would escalate if the same answers came again.
    """
    ordered = sorted(values)
    n = len(ordered)
    threshold = linear_quantile(ordered, quantile_fraction(beta)) if n > 1 else None
    bins = [0] * HISTOGRAM_BINS
    for value in ordered:
        bins[min(int(value * HISTOGRAM_BINS), HISTOGRAM_BINS - 1) if value > 0 else 0] += 1
    return {
        "window_length": n,
        "window_size": size,
        "beta": beta,
        "threshold": threshold,
        "escalation_rate": (sum(1 for v in ordered if v < threshold) / n) if threshold is not None else None,
        "quantiles": {f"p{int(q * 100)}": (linear_quantile(ordered, q) if n else None) for q in (0.1, 0.5, 0.9)},
        "histogram": bins,
    }


def _labels(scope: Scope) -> dict[str, Any]:
    """What a scope is about: its task, workload and tenant (None: shared by every tenant)."""
    return {"task": scope.task, "workload": scope.workload or scope.task, "tenant": scope.tenant or None}


async def learning_view(runtime: Runtime, learning: Learning, tier: str) -> dict[str, Any]:
    """What a policy learned from probes per scope (the quality floor: probes so far, the best
    agreement reachable, bypassed or not).

    Shared probe windows are read afresh first, so the view shows what the cluster has learned."""
    view: dict[str, Any] = {}
    for scope in runtime.window_scopes():  # early commit's prefix answers are judged (and probed) apart
        await learning.sync(tier, scope)
        described = learning.describe(tier, scope)
        if scope.workload and not described["probes"]:
            continue  # a workload seen with one task only: its other task has nothing to show
        view[scope.name] = {**described, **_labels(scope)}
    return view


async def policy_view(runtime: Runtime, traffic: Traffic, savings: SavingsLedger | None = None) -> dict[str, Any]:
    config = runtime.config
    overrides = runtime.overrides.current
    size = config.policy.recserve.window
    tiers: list[dict[str, Any]] = []
    for tier in runtime.tiers:
        name = tier.config.name
        final = tier.level == len(runtime.tiers) - 1
        served = traffic.served.get(name, 0)
        entry: dict[str, Any] = {
            "name": name, "level": tier.level, "final": final, "served": served,
            "share": served / traffic.requests if traffic.requests else None,
            "price": tier.config.price.model_dump() if tier.config.price else None,
            "uplink_weight": tier.config.uplink_weight,
        }
        if final:
            # The last tier never escalates: no β, no window, no threshold.
            entry["recserve"] = None
            entry["casserve"] = None
        else:
            beta = runtime.overrides.beta_for(name)
            tasks = {}
            for scope in runtime.window_scopes():
                values = await runtime.store.snapshot(scope.key("recserve", name))
                if scope.workload and not values:
                    continue
                tasks[scope.name] = {**window_stats(values, beta, size), **_labels(scope)}
            entry["recserve"] = {"beta": beta, "beta_overridden": name in overrides.beta, "tasks": tasks}
            entry["casserve"] = {"threshold": runtime.overrides.threshold_for(name),
                                 "overridden": name in overrides.thresholds}
            for policy_name, policy in runtime.policies.items():
                learning = runtime.learning(policy)
                if learning is not None:
                    entry[policy_name] = await learning_view(runtime, learning, name)
        tiers.append(entry)
    return {
        "policy_default": config.policy.default,
        "requests": traffic.requests,
        "tiers": tiers,
        "communication": {
            "uplink_prompt_tokens": traffic.uplink_tokens,
            "cloud_only_prompt_tokens": traffic.cloud_only_tokens,
            "probe_uplink_prompt_tokens": traffic.probe_uplink_tokens,  # counted in "saved" too
            "uplink_bytes": traffic.uplink_bytes,
            "cloud_only_bytes": traffic.cloud_only_bytes,
            "saved": traffic.saved(),
        },
        "overrides": overrides.to_json(),
        # Per tenant, per workload and in total: below the top tier, communication (plain, weighted), spend.
        "savings": savings.to_json() if savings is not None else None,
    }
