"""BFCL traces replayed: tier accuracy per category, how well each confidence estimator ranks right
answers above wrong ones (AUROC), and every policy on two line-ups over seeds 0-9.

Line-ups: the shipped three tiers (device, edge, cloud), and edge → cloud (`config.laptop.yaml`: the
0.5B model on the user's machine, the 1.5B one in the cloud). A seed shuffles the order of the stream
(the windows see the requests in another order) and, for the quality policy, also seeds its probe
draws. A lower tier's answer that the gateway's validity gate refuses escalates without a confidence,
as in the gateway; the quality policy's probes compare answers structurally, as the gateway's do.

The setting reported as the product's is chosen a priori: on simple_python and multiple only (the
tuning categories), the cascading setting that keeps the most requests below the top tier while
holding at least `FLOOR` of cloud-only accuracy at every seed; it is then reported on the other
categories and on the whole mixed stream, which it was not tuned on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.cascade.workloads import STRUCTURED
from gateway.evaluation.bfcl import CATEGORIES, Item, tools
from gateway.evaluation.code_agreement import auc
from gateway.evaluation.code_eval import top_traffic
from gateway.evaluation.replay import (
    Outcome,
    Request,
    TierAnswer,
    cascade,
    casserve_policy,
    fixed,
    oracle,
    recserve_policy,
    summarise,
)
from gateway.evaluation.replay_quality import QUALITY_WINDOW, QualityOptions, SimulatedProber, quality_policy
from policies.base import TokenLogprob
from policies.confidence import STRUCTURED_ESTIMATOR, STRUCTURED_ESTIMATORS, generation_confidence
from policies.structure import expectation_of, problem

LINEUPS: dict[str, tuple[str, ...]] = {"three tiers": ("device", "edge", "cloud"), "edge → cloud": ("edge", "cloud")}
ALL_TIERS = ("device", "edge", "cloud")
SEEDS = tuple(range(10))
FLOOR = 0.95
TUNING = ("simple_python", "multiple")
BETAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99)
TARGETS = (0.8, 0.9, 0.95)
Estimator = Callable[[Sequence[TokenLogprob]], "float | None"]
Valid = Callable[[Mapping[str, Any]], bool]
# The estimator the gateway uses for structured answers; the others are measured beside it.
DEFAULT_ESTIMATOR = STRUCTURED_ESTIMATOR
CASCADING = ("recserve", "casserve", "quality")  # the settings that judge answers (not pinned, not the oracle)


def estimators() -> dict[str, Estimator]:
    """Every confidence estimator compared on the traces, by name."""
    return {"whole": generation_confidence, **STRUCTURED_ESTIMATORS}


def validity(items: Mapping[str, Item]) -> Valid:
    """Whether a recorded answer passes the gateway's validity gate for its item's request."""
    def valid(row: Mapping[str, Any]) -> bool:
        item = items.get(str(row.get("id")))
        if item is None or "error" in row:
            return False
        expectation = expectation_of({"tools": tools(item)})
        choice = {"message": row.get("message") or {}, "finish_reason": row.get("finish_reason")}
        return expectation is None or problem(expectation, [choice]) is None

    return valid


def tokens_of(row: Mapping[str, Any]) -> list[TokenLogprob]:
    return [TokenLogprob(str(token), float(logprob), ()) for token, logprob in row.get("tokens") or []]


def answer_of(row: Mapping[str, Any], estimate: Estimator, valid: Valid) -> TierAnswer:
    """A trace row as the replay's TierAnswer: failed calls fail, invalid answers have no confidence."""
    failed = "error" in row
    confidence = None if failed or not valid(row) else estimate(tokens_of(row))
    return TierAnswer(confidence=confidence, correct=bool(row.get("correct")),
                      prompt_tokens=int(row.get("prompt_tokens") or 0), prompt_bytes=int(row.get("prompt_bytes") or 0),
                      latency_s=float(row.get("latency_s") or 0.0), failed=failed,
                      message=None if failed else dict(row.get("message") or {}),
                      completion_tokens=int(row.get("completion_tokens") or 0))


def requests(table: Mapping[str, Mapping[str, Mapping[str, Any]]], order: Sequence[str], estimate: Estimator,
             valid: Valid, tiers: Sequence[str] = ALL_TIERS) -> list[Request]:
    """Items recorded at every tier of `tiers`, in `order`, as replay requests: in the workload the gateway
    derives for tool requests that name none (`structured`), their category kept for the tables."""
    out = []
    for index, item_id in enumerate(order):
        rows = table.get(item_id, {})
        if not all(tier in rows for tier in tiers):
            continue
        category = str(rows[tiers[0]]["category"])
        answers = {tier: answer_of(rows[tier], estimate, valid) for tier in tiers}
        out.append(Request(index, "generation", answers, None, category, STRUCTURED))
    return out


def shuffled(items: Sequence[Request], seed: int) -> list[Request]:
    order = list(items)
    random.Random(seed).shuffle(order)
    return order


def tier_table(reqs: Sequence[Request], tiers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Accuracy of each tier alone, per category and in all."""
    table: dict[str, dict[str, Any]] = {}
    for category in [*CATEGORIES, "all"]:
        chosen = [r for r in reqs if category in ("all", r.dataset)]
        if chosen:
            table[category] = {"n": len(chosen), **{tier: sum(r.answers[tier].correct for r in chosen) / len(chosen)
                                                    for tier in tiers},
                               "errors": {tier: sum(r.answers[tier].failed for r in chosen) for tier in tiers}}
    return table


def aurocs(table: Mapping[str, Mapping[str, Mapping[str, Any]]], valid: Valid) -> dict[str, dict[str, Any]]:
    """AUROC of each estimator at each tier: right answers ranked above wrong ones, over every valid
    answer (`all`) and without irrelevance, where right means making no call (`calls`)."""
    result: dict[str, dict[str, Any]] = {}
    for name, estimate in estimators().items():
        for tier in ALL_TIERS:
            for scope in ("all", "calls"):
                scores, labels = [], []
                for rows in table.values():
                    row = rows.get(tier)
                    if row is None or not valid(row) or (scope == "calls" and row["category"] == "irrelevance"):
                        continue
                    value = estimate(tokens_of(row))
                    if value is not None:
                        scores.append(value)
                        labels.append(bool(row["correct"]))
                usable = any(labels) and not all(labels)
                result.setdefault(name, {})[f"{tier}/{scope}"] = auc(scores, labels) if usable else None
                result[name][f"{tier}/{scope}/n"] = len(scores)
    return result


def _betas(tiers: Sequence[str]) -> list[float | dict[str, float]]:
    """One β for every tier, and for three tiers also a higher β at the first (it answers less often)."""
    grid: list[float | dict[str, float]] = list(BETAS)
    if len(tiers) == 3:
        grid += [{tiers[0]: first, tiers[1]: second} for first in (0.7, 0.9) for second in BETAS if second < first]
    return grid


def _entry(reqs: Sequence[Request], outcomes: Sequence[Outcome], policy: str, params: Mapping[str, Any],
           tiers: Sequence[str]) -> dict[str, Any]:
    """A run's summary plus `below_top`: the share of requests whose prompt never reached the top tier
    (served, verified or probed there all count as reaching it), and `invalid_served`: lower-tier answers
    served that the validity gate refuses (they carry no confidence; only a pinned run serves them)."""
    invalid = sum(1 for request, outcome in zip(reqs, outcomes, strict=True) if outcome.served != tiers[-1]
                  and request.answers[outcome.served].confidence is None and not request.answers[outcome.served].failed)
    return {**summarise(reqs, outcomes, policy, params, tiers), "below_top": 1 - top_traffic(outcomes, tiers[-1]),
            "invalid_served": invalid}


async def _quality(reqs: Sequence[Request], tiers: Sequence[str], beta: float, target: float,
                   seed: int) -> dict[str, Any]:
    options = replace(QualityOptions(), seed=seed)
    policy = quality_policy(beta, QUALITY_WINDOW, target, options)
    prober = SimulatedProber(policy, options.probe_rate, options.similarity, seed, tiers)
    outcomes = await cascade(reqs, policy, tiers, prober=prober)
    return _entry(reqs, outcomes, "quality", {"beta": beta, "target": target}, tiers)


async def _runs(reqs: Sequence[Request], tiers: Sequence[str], seed: int) -> list[dict[str, Any]]:
    runs = [_entry(reqs, fixed(reqs, tier), f"{tier}-only", {}, tiers) for tier in tiers]
    runs.append(_entry(reqs, oracle(reqs, tiers), "oracle", {}, tiers))
    for beta in _betas(tiers):
        outcomes = await cascade(reqs, recserve_policy(beta, 10000), tiers)
        runs.append(_entry(reqs, outcomes, "recserve", {"beta": beta}, tiers))
    for threshold in THRESHOLDS:
        runs.append(_entry(reqs, await cascade(reqs, casserve_policy(threshold), tiers), "casserve",
                           {"threshold": threshold}, tiers))
    for beta in (0.3, 0.5):
        for target in TARGETS:
            runs.append(await _quality(reqs, tiers, beta, target, seed))
    return runs


def key(run: Mapping[str, Any]) -> str:
    params = run["params"]
    return str(run["policy"]) + "".join(f" {k}={params[k]}" for k in sorted(params))


def by_seed(reqs: Sequence[Request], tiers: Sequence[str], seeds: Sequence[int] = SEEDS
            ) -> dict[str, list[dict[str, Any]]]:
    """Every policy on `reqs` shuffled by each seed: {policy key: [summary per seed]}."""
    table: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        for run in asyncio.run(_runs(shuffled(reqs, seed), tiers, seed)):
            table.setdefault(key(run), []).append(run)
    return table


def holds(runs: Sequence[Mapping[str, Any]], cloud: Sequence[Mapping[str, Any]]) -> bool:
    return all(run["accuracy"] >= FLOOR * base["accuracy"] for run, base in zip(runs, cloud, strict=True))


def choose(tuning: Mapping[str, Sequence[Mapping[str, Any]]], top: str) -> str | None:
    """The a-priori setting: of the cascading settings that hold the floor at every seed on the tuning
    categories, the one keeping the most requests below the top tier at its worst seed."""
    cloud = tuning[f"{top}-only"]
    candidates = [(min(r["below_top"] for r in runs), name) for name, runs in tuning.items()
                  if name.split()[0] in CASCADING and holds(runs, cloud)]
    return max(candidates)[1] if candidates else None
