"""The table the eval report (and the README) opens with: per workload and for the mixed stream, what
the default `recserve/quality` keeps of cloud-only quality, and how much top-tier traffic and spend
it saves. Built from `recserve eval seeds` (classification) and `recserve eval code` (HumanEval)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.evaluation.report_savings import DEFAULT_RATES, savings_columns

HEADER = ("| workload | n | cloud-only quality | `recserve/quality` keeps (worst of 10 seeds) | never reached the top "
          "tier | top-tier prompt tokens | spend vs cloud-only |")


def _pct(value: float) -> str:
    return f"{value:.1%}"


def headline(seed_rows: Sequence[Mapping[str, Any]], code: Mapping[str, Any] | None) -> str:
    """Markdown: one row per workload (the mixed stream keyed by workload first), medians over seeds."""
    lines = [HEADER, "|---|---:|---:|---:|---:|---:|---:|"]
    ordered = sorted(seed_rows, key=lambda row: (not row["stream"].startswith("mixed, keyed by workload"),
                                                 row["stream"].startswith("mixed"), row["stream"]))
    for row in ordered:
        if row["stream"] == "mixed, keyed by task":
            continue  # the paper's keying: in the seed table, not the headline
        name = "mixed classification stream" if row["stream"].startswith("mixed") else row["stream"]
        lines.append(f"| {name} | {row['n']} | {row['cloud_accuracy']:.3f} accuracy | {_pct(row['ratio_min'])} | "
                     f"{_pct(statistics.median(row['kept_below_top_by_seed']))} | "
                     f"{_pct(statistics.median(row['top_tokens_by_seed']))} | "
                     f"{_pct(statistics.median(row['spend_by_seed']))} |")
    if code is not None:
        lines += [_code_row(name, lineup) for name, lineup in code["lineups"].items()]
    return "\n".join(lines)


def _code_row(name: str, lineup: Mapping[str, Any]) -> str:
    top = lineup["tiers"][-1]
    cloud = next(float(e["pass_at_1"]) for e in lineup["policies"] if e["policy"] == f"pinned/{top}")
    runs = lineup["defaults"]["code"]
    worst = min(float(r["pass_at_1"]) for r in runs) / cloud if cloud else 0.0
    never = statistics.median(1.0 - float(r["top_traffic"]) for r in runs)
    tokens = statistics.median(float(r["top_tokens_vs_cloud"]) for r in runs)
    spend = statistics.median(savings_columns(r, DEFAULT_RATES)["spend_vs_top"] or 0.0 for r in runs)
    labels = {"laptop": "HumanEval, laptop → cloud", "three-tier": "HumanEval, three tiers"}
    label = labels.get(name, f"HumanEval, {name}")
    return (f"| {label} | {lineup['n']} | {cloud:.3f} pass@1 | {_pct(worst)} | {_pct(never)} | "
            f"{_pct(tokens)} | {_pct(spend)} |")
