"""Spend and weighted communication of replayed policies, as the gateway reports them (gateway/telemetry/savings.py).

A replayed policy's summary counts, per tier, the prompt and completion tokens of every call it made
(probes included), the completion tokens of the answers it served, and the top tier's prompt tokens
(`savings_tokens`). With each tier's `uplink_weight` and `price`:

- weighted communication = sum over tiers of weight x prompt tokens shipped there, over the top tier's
  weight x every prompt (top-tier-only);
- spend = sum over tiers of prompt tokens x input price + completion tokens x output price, over the same
  prompts and served answers at the top tier's prices.

Weights and prices come from a gateway config (`recserve eval report --config`), else `DEFAULT_RATES`:
the device beside the client (weight 0, free), the edge and the cloud at weight 1 and at example prices
proportional to their size (0.5B and 1.5B parameters; USD per million input / output tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.config.schema import GatewayConfig


@dataclass(frozen=True, slots=True)
class TierRates:
    """One tier's uplink weight and prices (USD per million tokens)."""

    uplink_weight: float = 1.0
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


DEFAULT_RATES: Mapping[str, TierRates] = MappingProxyType({
    "device": TierRates(0.0),
    "edge": TierRates(1.0, 0.05, 0.20),
    "cloud": TierRates(1.0, 0.15, 0.60),
})


def rates_from_config(config: GatewayConfig) -> Mapping[str, TierRates]:
    """Each configured tier's `uplink_weight` and `price` (no price: free)."""
    return MappingProxyType({
        tier.name: TierRates(tier.uplink_weight, tier.price.input_per_mtok if tier.price else 0.0,
                             tier.price.output_per_mtok if tier.price else 0.0)
        for tier in config.tiers})


def savings_columns(entry: Mapping[str, Any], rates: Mapping[str, TierRates]) -> dict[str, float | None]:
    """`weighted_vs_top` and `spend_vs_top` of one replayed policy (None without the token counts, or
    when the top-tier-only baseline is zero)."""
    tokens = entry.get("savings_tokens")
    if not isinstance(tokens, Mapping):
        return {"weighted_vs_top": None, "spend_vs_top": None}
    tiers = list(tokens["in"])
    top = rates.get(tiers[-1], TierRates())

    def rate(tier: str) -> TierRates:
        return rates.get(tier, TierRates())

    weighted = sum(rate(t).uplink_weight * tokens["in"][t] for t in tiers)
    spend = sum(rate(t).input_per_mtok * tokens["in"][t] + rate(t).output_per_mtok * tokens["out"][t] for t in tiers)
    top_weighted = top.uplink_weight * tokens["top_prompt"]
    top_spend = top.input_per_mtok * tokens["top_prompt"] + top.output_per_mtok * tokens["served_out"]
    return {"weighted_vs_top": weighted / top_weighted if top_weighted > 0 else None,
            "spend_vs_top": spend / top_spend if top_spend > 0 else None}


def annotate(results: list[dict[str, Any]], rates: Mapping[str, TierRates]) -> None:
    """Add the two columns to every replayed policy of every result (in place)."""
    for result in results:
        for entry in result["policies"]:
            entry.update(savings_columns(entry, rates))


def cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
