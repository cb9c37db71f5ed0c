"""`recserve eval bfcl report`: the BFCL traces as tables (markdown), JSON and a plot of accuracy
against the share of requests that reached the top tier, for each line-up."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.evaluation import bfcl_forms
from gateway.evaluation.bfcl import Item
from gateway.evaluation.bfcl_forms import pct
from gateway.evaluation.bfcl_record import rows_by_item
from gateway.evaluation.bfcl_replay import (
    ALL_TIERS,
    CASCADING,
    DEFAULT_ESTIMATOR,
    FLOOR,
    LINEUPS,
    SEEDS,
    TUNING,
    aurocs,
    by_seed,
    choose,
    estimators,
    requests,
    tier_table,
    validity,
)
from gateway.evaluation.replay import Request

MIN_BELOW_TOP = 0.5  # the saving asked for: at least half the requests never reach the top tier


def _per_seed(runs: Sequence[Mapping[str, Any]], cloud: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ratios = [run["accuracy"] / base["accuracy"] if base["accuracy"] else 0.0
              for run, base in zip(runs, cloud, strict=True)]
    below = [run["below_top"] for run in runs]
    return {"accuracy": [run["accuracy"] for run in runs], "ratio": ratios, "below_top": below,
            "ratio_min": min(ratios), "below_top_min": min(below),
            "median_accuracy": statistics.median(run["accuracy"] for run in runs),
            "median_below_top": statistics.median(below),
            "holds": all(r >= FLOOR for r in ratios), "saves": all(b >= MIN_BELOW_TOP for b in below),
            "invalid_served_max": max(run["invalid_served"] for run in runs)}


def _lineup(table: Mapping[str, Any], order: Sequence[str], tiers: Sequence[str], items: Mapping[str, Item]
            ) -> dict[str, Any]:
    reqs = requests(table, order, estimators()[DEFAULT_ESTIMATOR], validity(items), tiers)
    top = tiers[-1]
    tuning = [r for r in reqs if r.dataset in TUNING]
    streams: dict[str, list[Request]] = {"tuning": tuning, "held-out": [r for r in reqs if r.dataset not in TUNING],
                                         "mixed": reqs}
    runs = {name: by_seed(stream, tiers) if stream else {} for name, stream in streams.items()}
    chosen = choose(runs["tuning"], top) if runs["tuning"] else None
    result: dict[str, Any] = {"tiers": list(tiers), "chosen": chosen, "streams": {},
                              "tier_accuracy": tier_table(reqs, tiers)}
    for name, stream in streams.items():
        if not stream:
            continue
        cloud = runs[name][f"{top}-only"]
        result["streams"][name] = {"n": len(stream), "policies": {
            policy: _per_seed(seeded, cloud) for policy, seeded in runs[name].items()}}
    return result


def evaluate(folder: Path, items: Mapping[str, Item]) -> dict[str, Any]:
    """Everything the report shows, from the traces in `folder` of `items` (by id)."""
    table = rows_by_item(folder, ALL_TIERS)
    order = list(table)  # recording order: the sample interleaves the categories
    complete = requests(table, order, estimators()[DEFAULT_ESTIMATOR], validity(items), ALL_TIERS)
    return {"n_recorded": {tier: sum(tier in rows for rows in table.values()) for tier in ALL_TIERS},
            "n": len(complete), "tiers": tier_table(complete, ALL_TIERS),
            "auroc": aurocs(table, validity(items)), "estimator": DEFAULT_ESTIMATOR,
            "lineups": {name: _lineup(table, order, tiers, items) for name, tiers in LINEUPS.items()},
            "forms": bfcl_forms.compare(folder / "forms", items, ALL_TIERS)}


def _tier_lines(table: Mapping[str, Any], tiers: Sequence[str]) -> list[str]:
    lines = ["| category | n | " + " | ".join(tiers) + " |", "|---|---:|" + "---:|" * len(tiers)]
    for category, row in table.items():
        lines.append(f"| {category} | {row['n']} | " + " | ".join(pct(row[t]) for t in tiers) + " |")
    return lines


def _lineup_tier_lines(results: Mapping[str, Any], lineup: Mapping[str, Any]) -> list[str]:
    """The line-up's tiers alone on its own items, where those are more than the items of every tier."""
    own = lineup["tier_accuracy"]
    if own.get("all", {}).get("n", 0) == results["n"]:
        return []
    return [f"Each tier of this line-up alone, on the {own['all']['n']} items all of them answered:", "",
            *_tier_lines(own, lineup["tiers"]), ""]


def _auroc_lines(results: Mapping[str, Any]) -> list[str]:
    columns = [f"{tier}/{scope}" for tier in ALL_TIERS for scope in ("all", "calls")]
    lines = ["| estimator | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, values in results["auroc"].items():
        cells = ["—" if values.get(c) is None else f"{values[c]:.3f} (n {values[c + '/n']})" for c in columns]
        mark = " (default)" if name == results["estimator"] else ""
        lines.append(f"| {name}{mark} | " + " | ".join(cells) + " |")
    return lines


def _policy_lines(lineup: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    chosen = lineup["chosen"]
    for name, stream in lineup["streams"].items():
        lines += [f"#### {name} ({stream['n']} items)", "",
                  "| setting | accuracy (median) | of cloud-only (worst seed) | never reached top (worst seed) "
                  "| ≥95% at every seed | ≥50% at every seed |", "|---|---:|---:|---:|---|---|"]
        for policy, entry in stream["policies"].items():
            mark = " **(a priori)**" if policy == chosen else ""
            lines.append(f"| {policy}{mark} | {pct(entry['median_accuracy'])} | {pct(entry['ratio_min'])} | "
                         f"{pct(entry['below_top_min'])} | {'yes' if entry['holds'] else 'no'} | "
                         f"{'yes' if entry['saves'] else 'no'} |")
        cascading = [entry["invalid_served_max"] for policy, entry in stream["policies"].items()
                     if policy.split()[0] in CASCADING]
        lines += ["", f"Invalid lower-tier answers served, most in any cascading setting and seed: {max(cascading)}."]
        if chosen in stream["policies"]:
            entry = stream["policies"][chosen]
            lines += ["", f"`{chosen}` per seed 0-{len(SEEDS) - 1}: of cloud-only "
                      + ", ".join(pct(x) for x in entry["ratio"]) + "; never reached top "
                      + ", ".join(pct(x) for x in entry["below_top"]) + "."]
        lines.append("")
    return lines


def render(results: Mapping[str, Any]) -> str:
    lines = ["# BFCL: function calling through the cascade", "",
             f"{results['n']} BFCL v4 items answered at every tier (recorded per tier: "
             + ", ".join(f"{tier} {n}" for tier, n in results["n_recorded"].items())
             + "), graded by BFCL's own AST checker. How they are made and how to reproduce them: "
             "`docs/evaluation.md`, section *Function calling (BFCL)*.", "",
             "## Tier accuracy by category", "", *_tier_lines(results["tiers"], ALL_TIERS), "",
             "## Confidence estimators: AUROC of right vs wrong answers", "",
             "Over the answers the validity gate lets through; `calls` leaves out irrelevance (right = no call).",
             "", *_auroc_lines(results), "", *bfcl_forms.render(results.get("forms", {}))]
    for name, lineup in results["lineups"].items():
        if not lineup["streams"]:
            lines += [f"## Line-up: {name}", "", "No item is recorded at every tier of this line-up yet.", ""]
            continue
        lines += [f"## Line-up: {name}", "",
                  f"A-priori setting, chosen on {' and '.join(TUNING)} only: **`{lineup['chosen']}`** — of the "
                  f"settings holding {FLOOR:.0%} of cloud-only accuracy at every seed there, the one keeping the "
                  "most requests below the top tier at its worst seed.", "", *_lineup_tier_lines(results, lineup),
                  *_policy_lines(lineup)]
    return "\n".join(lines) + "\n"


def plot(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lineups = {name: lineup for name, lineup in results["lineups"].items() if "mixed" in lineup["streams"]}
    if not lineups:
        return
    fig, axes = plt.subplots(1, len(lineups), figsize=(6 * len(lineups), 4.6), squeeze=False)
    for ax, (name, lineup) in zip(axes[0], lineups.items(), strict=True):
        policies = lineup["streams"]["mixed"]["policies"]
        for family, style, color in (("recserve", "o", "tab:blue"), ("casserve", "-s", "tab:orange"),
                                     ("quality", "P", "tab:purple")):
            points = sorted((1 - e["median_below_top"], e["median_accuracy"]) for k, e in policies.items()
                            if k.split()[0] == family)
            ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color, ms=4, label=family)
        for pinned in (*(f"{t}-only" for t in lineup["tiers"]), "oracle"):
            e = policies[pinned]
            ax.plot(1 - e["median_below_top"], e["median_accuracy"], "*" if pinned == "oracle" else "^", ms=9,
                    label=pinned)
        chosen = lineup["chosen"]
        if chosen in policies:
            e = policies[chosen]
            ax.plot(1 - e["median_below_top"], e["median_accuracy"], "ko", mfc="none", ms=12, label="a priori")
        ax.set_title(f"BFCL mixed stream, {name}")
        ax.set_xlabel("share of requests that reached the top tier (median of seeds)")
        ax.set_ylabel("BFCL accuracy (median of seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: Path, out: Path, items: Mapping[str, Item]) -> list[Path]:
    results = evaluate(folder, items)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bfcl.md", out / "bfcl.json", out / "bfcl_accuracy_vs_top_share.png"]
    written[0].write_text(render(results), encoding="utf-8")
    written[1].write_text(json.dumps(results, indent=1, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    plot(results, written[2])
    return [path for path in written if path.exists()]
