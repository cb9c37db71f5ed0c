"""`recserve eval seeds`: does the quality floor hold with confidence, not just on average?

`recserve/quality` at its config defaults, replayed on the recorded classification traces with
seeds 0-9 (the seed moves which kept answers are probed): alone on each dataset, and on the mixed
stream keyed both ways — by task (all classification datasets share one window and one competence
curve per tier, as in the paper) and by workload (each dataset is a workload, as clients naming
their applications are). For each run: accuracy as a share of cloud-only accuracy, requests and
prompt tokens that never reached the top tier, and per workload in the mixed stream the share kept
below the top tier.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.config.schema import QualityPolicyConfig, RecServePolicyConfig
from gateway.evaluation.replay import Request, by_workload, fixed, summarise
from gateway.evaluation.replay_quality import DEFAULT_OPTIONS, QualityOptions, run_quality
from gateway.evaluation.report_savings import DEFAULT_RATES, savings_columns
from gateway.evaluation.sweeps import interleave, load_trace

SEEDS = tuple(range(10))
FLOOR = 0.95  # the share of cloud-only accuracy the floor is meant to keep
MEANINGFUL_CLOUD = 0.60  # below this, cloud-only itself is close to guessing: no floor to hold


def classification_streams(traces: Sequence[Path]) -> dict[str, list[Request]]:
    """The classification traces' complete requests, by dataset name (file stem)."""
    streams: dict[str, list[Request]] = {}
    for path in sorted(traces):
        _, requests = load_trace(path)
        if requests and requests[0].task == "classification":
            streams[path.name.split(".")[0]] = requests
    return streams


async def _runs(requests: Sequence[Request], seeds: Sequence[int], options: QualityOptions) -> list[dict[str, Any]]:
    beta = RecServePolicyConfig().beta
    assert isinstance(beta, float)
    target = QualityPolicyConfig().target
    return [await run_quality(requests, beta, target, options.probe_rate, replace(options, seed=seed))
            for seed in seeds]


def _row(name: str, requests: Sequence[Request], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    cloud = summarise(requests, fixed(requests, "cloud"), "cloud-only", {})
    ratios = [run["accuracy"] / cloud["accuracy"] if cloud["accuracy"] else 0.0 for run in runs]
    row: dict[str, Any] = {
        "stream": name, "n": len(requests), "cloud_accuracy": cloud["accuracy"],
        "ratio_by_seed": ratios, "ratio_min": min(ratios),
        "kept_below_top_by_seed": [1.0 - run["top_requests_vs_cloud"] for run in runs],
        "top_tokens_by_seed": [run["top_tokens_vs_cloud"] for run in runs],
        "comm_by_seed": [run["comm_vs_cloud"] for run in runs],
        # At the example rates of the eval report (report_savings.DEFAULT_RATES).
        "spend_by_seed": [savings_columns(run, DEFAULT_RATES)["spend_vs_top"] or 0.0 for run in runs],
        "holds": cloud["accuracy"] < MEANINGFUL_CLOUD or min(ratios) >= FLOOR,
    }
    if len(cloud.get("accuracy_by_dataset", {})) > 1:
        row["kept_below_top_by_workload"] = {
            dataset: sum(run["kept_below_top_by_dataset"][dataset] for run in runs) / len(runs)
            for dataset in cloud["accuracy_by_dataset"]}
    return row


def seed_table(streams: Mapping[str, Sequence[Request]], seeds: Sequence[int] = SEEDS,
               options: QualityOptions = DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    mixed = interleave(list(streams.values()))
    cases: list[tuple[str, Sequence[Request]]] = [("mixed, keyed by task", mixed),
                                                  ("mixed, keyed by workload", by_workload(mixed))]
    cases += [(name, requests) for name, requests in streams.items()]
    return [_row(name, requests, asyncio.run(_runs(requests, seeds, options))) for name, requests in cases]


def render(rows: Sequence[dict[str, Any]], seeds: Sequence[int] = SEEDS) -> str:
    """The seed table as markdown."""
    lines = [
        "# The quality floor across seeds",
        "",
        f"`recserve/quality` at its config defaults (β 0.3, target 0.9, probe rate 0.05, confidence "
        f"level {QualityPolicyConfig().confidence_level}), replayed with seeds {seeds[0]} to {seeds[-1]}. "
        f"*ratio* is accuracy as a share of cloud-only accuracy; it should stay at or above {FLOOR:.0%} "
        f"for every seed wherever cloud-only itself reaches {MEANINGFUL_CLOUD:.0%}. *kept below top* is "
        "the share of requests never answered by the top tier, *top tokens* the top tier's prompt "
        "tokens against cloud-only, *spend* the spend against cloud-only at the evaluation's example "
        "prices (all three medians over seeds). Regenerate: `recserve eval seeds`.",
        "",
        "| stream | n | cloud-only accuracy | ratio, worst seed | ratio, median | kept below top | top tokens "
        "| spend | holds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['stream']} | {row['n']} | {row['cloud_accuracy']:.3f} | {row['ratio_min']:.1%} | "
            f"{_median(row['ratio_by_seed']):.1%} | {_median(row['kept_below_top_by_seed']):.1%} | "
            f"{_median(row['top_tokens_by_seed']):.1%} | {_median(row['spend_by_seed']):.1%} | "
            f"{'yes' if row['holds'] else 'NO'}{_note(row)} |")
    mixed = [row for row in rows if "kept_below_top_by_workload" in row]
    if mixed:
        lines += ["", "Kept below the top tier per workload in the mixed stream (mean over seeds):", "",
                  "| workload | " + " | ".join(row["stream"] for row in mixed) + " |",
                  "|---|" + "---:|" * len(mixed)]
        for workload in mixed[0]["kept_below_top_by_workload"]:
            lines.append(f"| {workload} | " + " | ".join(
                f"{row['kept_below_top_by_workload'][workload]:.1%}" for row in mixed) + " |")
    return "\n".join(lines) + "\n"


def _note(row: dict[str, Any]) -> str:
    return "" if row["cloud_accuracy"] >= MEANINGFUL_CLOUD else f" (cloud-only below {MEANINGFUL_CLOUD:.0%})"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def write_seed_table(traces: Sequence[Path], out: Path, seeds: Sequence[int] = SEEDS) -> list[dict[str, Any]]:
    rows = seed_table(classification_streams(traces), seeds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "seeds.md").write_text(render(rows, seeds))
    return rows
