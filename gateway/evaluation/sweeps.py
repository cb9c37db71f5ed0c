"""Every policy of the evaluation replayed on a trace file, or on several interleaved (the mixed
stream): the fixed tiers, the CasServe and RecServe sweeps, the quality policy's sweeps (targets x βs;
at β 0.3 the other probe rates, steady states, warm-up lengths and warm-up answers), the oracle."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.evaluation.record import TIERS, read_trace
from gateway.evaluation.replay import (
    BETAS,
    THRESHOLDS,
    WINDOWS,
    Request,
    cascade,
    casserve_policy,
    fixed,
    oracle,
    recserve_policy,
    requests_from_rows,
    summarise,
)
from gateway.evaluation.replay_quality import DEFAULT_OPTIONS, MAIN_BETA, QualityOptions, run_quality


async def _sweeps(requests: Sequence[Request], options: QualityOptions) -> list[dict[str, Any]]:
    results = []
    for threshold in THRESHOLDS:
        outcomes = await cascade(requests, casserve_policy(threshold))
        results.append(summarise(requests, outcomes, "casserve", {"threshold": threshold}))
    for window in WINDOWS:
        for beta in BETAS:
            outcomes = await cascade(requests, recserve_policy(beta, window))
            results.append(summarise(requests, outcomes, "recserve", {"beta": beta, "window": window}))
    for beta in options.betas:
        for target in options.targets:
            results.append(await run_quality(requests, beta, target, options.probe_rate, options))
    for rate in options.other_probe_rates:
        for target in options.targets:
            results.append(await run_quality(requests, MAIN_BETA, target, rate, options))
    for rate in (options.probe_rate, *options.other_probe_rates):
        for target in options.targets:
            results.append(await run_quality(requests, MAIN_BETA, target, rate, options, warm=True))
    for warmup in options.other_warmups:
        for target in options.targets:
            results.append(await run_quality(requests, MAIN_BETA, target, options.probe_rate,
                                             replace(options, warmup_probes=warmup)))
    for answer in options.other_warmup_answers:
        for target in options.targets:
            results.append(await run_quality(requests, MAIN_BETA, target, options.probe_rate,
                                             replace(options, warmup_answer=answer)))
    return results


def replay(requests: Sequence[Request], options: QualityOptions = DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    """Every policy of the evaluation on one trace, each with fresh windows."""
    results = [summarise(requests, fixed(requests, tier), f"{tier}-only", {}) for tier in TIERS]
    results += asyncio.run(_sweeps(requests, options))
    results.append(summarise(requests, oracle(requests), "oracle", {}))
    return results


def load_trace(path: Path) -> tuple[list[dict[str, Any]], list[Request]]:
    """A trace's rows and its complete requests (those where no tier call failed)."""
    rows = read_trace(path)
    return rows, requests_from_rows(rows, complete_only=True)


def replay_trace_file(path: Path, options: QualityOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """Replay one trace file; the dataset name, request count and every policy's metrics."""
    rows, requests = load_trace(path)
    failed = sorted({int(row["index"]) for row in rows if "error" in row})
    dataset = str(rows[0]["dataset"]) if rows else path.stem
    agrees = [row.get("confidence_agrees") for row in rows if "error" not in row]
    return {"dataset": dataset, "trace": str(path), "n": len(requests), "excluded_failed_calls": failed,
            "task": requests[0].task if requests else None,
            "confidence_header_agrees": sum(1 for a in agrees if a), "confidence_rows": len(agrees),
            "quality_warmup": options.warmup, "quality_warmup_answer": options.warmup_answer,
            "policies": replay(requests, options)}


def interleave(streams: Sequence[Sequence[Request]]) -> list[Request]:
    """One mixed stream: the first request of each stream in turn, then the second, ... (round robin in
    the given order; a stream that runs out is skipped)."""
    mixed: list[Request] = []
    for position in range(max((len(s) for s in streams), default=0)):
        mixed += [stream[position] for stream in streams if position < len(stream)]
    return mixed


def replay_mixed(streams: Mapping[str, Sequence[Request]],
                 options: QualityOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """Every policy on the datasets interleaved (datasets in the mapping's order). Windows are keyed
    by task as in the gateway, so all classification datasets share one window per tier."""
    mixed = interleave(list(streams.values()))
    return {"dataset": "mixed", "trace": "round robin over " + ", ".join(streams), "n": len(mixed),
            "excluded_failed_calls": [], "task": "mixed", "datasets": {k: len(v) for k, v in streams.items()},
            "quality_warmup": options.warmup, "quality_warmup_answer": options.warmup_answer,
            "policies": replay(mixed, options)}
