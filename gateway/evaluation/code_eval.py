"""The coding workload (HumanEval) replayed on two line-ups with the gateway's own policy classes.

Line-ups map their tier names to the trace's tiers: the shipped three tiers as recorded, and the
two-tier "laptop -> cloud" line-up (`config.laptop.yaml`: Qwen2.5-Coder-0.5B, then 1.5B), whose
answers are the three-tier trace's edge and cloud rows (same models, same prompts, greedy decoding).
Correctness is the sandbox's verdict stored in the trace (`correct`, with `tests`): code is not
re-run on replay.

Every policy is reported as pass@1 against top-tier traffic: the share of requests whose prompt reached
the top tier at all (served there, verified there, or probed there). Settings a user could have picked
without the answers are (a) the defaults and (b) a setting tuned on one half of the problems (even or
odd index) and measured on the other (`split_tuning`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from gateway.cascade.probes import token_f1
from gateway.evaluation.replay import (
    BETAS,
    Outcome,
    Request,
    TierAnswer,
    cascade,
    casserve_policy,
    fixed,
    oracle,
    recserve_policy,
    requests_from_rows,
    summarise,
)
from gateway.evaluation.replay_quality import (
    DEFAULT_OPTIONS,
    QUALITY_WINDOW,
    QualityOptions,
    SimulatedProber,
    quality_policy,
)
from policies.code_similarity import CODE_AGREEMENT, code_similarity, is_code_answer
from policies.quality import QualityPolicy

LINEUPS: dict[str, dict[str, str]] = {
    "three-tier": {"device": "device", "edge": "edge", "cloud": "cloud"},
    "laptop": {"laptop": "edge", "cloud": "cloud"},
}
# exp(mean logprob) of code answers sits near 1 (most tokens are forced by syntax), so CasServe's
# thresholds are spread over the top of the range, where the tiers' confidences actually fall.
CODE_THRESHOLDS = (0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
# Lower than the classification sweep: two correct programs often differ in their tokens, so the
# agreement a code answer can reach is lower than its correctness.
CODE_TARGETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CODE_SIMILARITY = CODE_AGREEMENT
SEEDS = tuple(range(10))
Agreement = Literal["token_f1", "code"]


def lineup_requests(rows: Sequence[Mapping[str, Any]], lineup: Mapping[str, str]) -> list[Request]:
    """The trace's problems as requests of a line-up (tiers renamed, sandbox verdicts kept); problems
    with a failed call on any of the line-up's tiers are left out."""
    renamed = [{**row, "tier": name} for row in rows for name, source in lineup.items() if row["tier"] == source]
    verdicts = {(int(row["index"]), str(row["tier"])): bool(row.get("correct", False)) for row in renamed}
    requests = requests_from_rows(renamed, tiers=tuple(lineup), complete_only=True)
    # The generic loader re-scores answers with the label/number checker; code keeps its test verdict.
    return [replace(request, answers={tier: replace(answer, correct=verdicts[(request.index, tier)])
                                      for tier, answer in request.answers.items()}) for request in requests]


def top_traffic(outcomes: Sequence[Outcome], top: str) -> float:
    """Share of requests whose prompt reached the top tier (path, verification or probe)."""
    if not outcomes:
        return 0.0
    return sum(top in o.visited or top in o.probes for o in outcomes) / len(outcomes)


class TokenF1Prober(SimulatedProber):
    """The simulated prober comparing code answers by raw-text token-F1 (the generation rule before
    code answers were told apart), for the comparison with the code measure."""

    def _agree(self, request: Request, answer: TierAnswer, reference: TierAnswer) -> bool:
        if answer.text is None or reference.text is None:
            return super()._agree(request, answer, reference)
        return token_f1(answer.text, reference.text) >= self._similarity


class CodeProber(SimulatedProber):
    """The simulated prober with the code agreement measure: when both answers carry code, they agree
    when `code_similarity` reaches `code_threshold`; otherwise the gateway's rule applies."""

    def __init__(self, policy: QualityPolicy, rate: float, similarity: float, seed: int, tiers: Sequence[str],
                 code_threshold: float = CODE_SIMILARITY) -> None:
        super().__init__(policy, rate, similarity, seed, tiers)
        self._code_threshold = code_threshold

    def _agree(self, request: Request, answer: TierAnswer, reference: TierAnswer) -> bool:
        if answer.text is None or reference.text is None or not (
                is_code_answer(answer.text) and is_code_answer(reference.text)):
            return super()._agree(request, answer, reference)
        return code_similarity(answer.text, reference.text) >= self._code_threshold


def _entry(requests: Sequence[Request], outcomes: Sequence[Outcome], policy: str, params: Mapping[str, Any],
           tiers: Sequence[str]) -> dict[str, Any]:
    summary = summarise(requests, outcomes, policy, params, tiers)
    summary["pass_at_1"] = summary.pop("accuracy")
    summary["top_traffic"] = top_traffic(outcomes, tiers[-1])
    return summary


async def run_quality(requests: Sequence[Request], tiers: Sequence[str], beta: float, target: float,
                      agreement: Agreement, options: QualityOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """One `recserve/quality` run on a line-up (fresh windows and probes, probes seeded by options.seed)."""
    policy = quality_policy(beta, QUALITY_WINDOW, target, options)
    prober: SimulatedProber
    if agreement == "code":
        prober = CodeProber(policy, options.probe_rate, options.similarity, options.seed, tiers)
    else:
        prober = TokenF1Prober(policy, options.probe_rate, options.similarity, options.seed, tiers)
    outcomes = await cascade(requests, policy, tiers, prober=prober)
    params = {"target": target, "beta": beta, "agreement": agreement, "seed": options.seed,
              "probe_rate": options.probe_rate, "similarity": CODE_SIMILARITY if agreement == "code"
              else options.similarity}
    return _entry(requests, outcomes, "quality", params, tiers)


async def _sweep(requests: Sequence[Request], tiers: Sequence[str], options: QualityOptions) -> list[dict[str, Any]]:
    entries = [_entry(requests, fixed(requests, tier), f"pinned/{tier}", {}, tiers) for tier in tiers]
    entries.append(_entry(requests, oracle(requests, tiers), "oracle", {}, tiers))
    for beta in BETAS:
        outcomes = await cascade(requests, recserve_policy(beta, 10000), tiers)
        entries.append(_entry(requests, outcomes, "recserve", {"beta": beta, "window": 10000}, tiers))
    for threshold in CODE_THRESHOLDS:
        outcomes = await cascade(requests, casserve_policy(threshold), tiers)
        entries.append(_entry(requests, outcomes, "casserve", {"threshold": threshold}, tiers))
    for agreement in ("token_f1", "code"):
        for target in CODE_TARGETS:
            entries.append(await run_quality(requests, tiers, 0.3, target, agreement, options))
    return entries


def replay_lineup(requests: Sequence[Request], tiers: Sequence[str],
                  options: QualityOptions = DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    """Every policy on one line-up: pins, oracle, RecServe (β sweep), CasServe (θ sweep), quality
    (target sweep at β 0.3, with each agreement measure)."""
    return asyncio.run(_sweep(requests, tiers, options))


def seed_runs(requests: Sequence[Request], tiers: Sequence[str], agreement: Agreement,
              target: float | None = None, seeds: Sequence[int] = SEEDS) -> list[dict[str, Any]]:
    """`recserve/quality` at its defaults (β 0.3, default target unless given) for each probe seed."""
    chosen = target if target is not None else _default_target()

    async def go() -> list[dict[str, Any]]:
        return [await run_quality(requests, tiers, 0.3, chosen, agreement, replace(DEFAULT_OPTIONS, seed=s))
                for s in seeds]

    return asyncio.run(go())


def _default_target() -> float:
    from gateway.config.schema import QualityPolicyConfig

    return QualityPolicyConfig().target


Family = tuple[str, Sequence[Any], Callable[[Sequence[Request], Any], dict[str, Any]]]


def families(tiers: Sequence[str]) -> list[Family]:
    """Policy families with one knob each, as `split_tuning` tunes them."""

    def recserve(requests: Sequence[Request], beta: Any) -> dict[str, Any]:
        outcomes = asyncio.run(cascade(requests, recserve_policy(beta, 10000), tiers))
        return _entry(requests, outcomes, "recserve", {"beta": beta}, tiers)

    def casserve(requests: Sequence[Request], threshold: Any) -> dict[str, Any]:
        outcomes = asyncio.run(cascade(requests, casserve_policy(threshold), tiers))
        return _entry(requests, outcomes, "casserve", {"threshold": threshold}, tiers)

    def quality(requests: Sequence[Request], target: Any) -> dict[str, Any]:
        return asyncio.run(run_quality(requests, tiers, 0.3, target, "code"))

    return [("recserve", BETAS, recserve), ("casserve", CODE_THRESHOLDS, casserve),
            ("quality (code agreement)", CODE_TARGETS, quality)]


def split_tuning(requests: Sequence[Request], tiers: Sequence[str], goal: float = 0.95) -> list[dict[str, Any]]:
    """Per family and per direction (tune on even problems, measure on odd, and the reverse): the
    setting that keeps the most requests off the top tier while holding `goal` of the top tier's pass@1
    on the tuning half (the safest setting if none does), and what it gives on the other half."""
    halves = {"even": [r for r in requests if r.index % 2 == 0], "odd": [r for r in requests if r.index % 2 == 1]}
    top = tiers[-1]
    results: list[dict[str, Any]] = []
    for name, knobs, run in families(tiers):
        for tune, measure in (("even", "odd"), ("odd", "even")):
            tuning = halves[tune]
            cloud = _pass_rate(tuning, top)
            runs = [(knob, run(tuning, knob)) for knob in knobs]
            holding = [(knob, e) for knob, e in runs if e["pass_at_1"] >= goal * cloud]
            knob, tuned = (min(holding, key=lambda ke: ke[1]["top_traffic"]) if holding
                           else max(runs, key=lambda ke: (ke[1]["pass_at_1"], -ke[1]["top_traffic"])))
            measured = run(halves[measure], knob)
            cloud_measured = _pass_rate(halves[measure], top)
            results.append({"family": name, "tuned_on": tune, "setting": knob, "held_on_tuning": bool(holding),
                            "tuning_pass": tuned["pass_at_1"], "tuning_top_traffic": tuned["top_traffic"],
                            "pass_at_1": measured["pass_at_1"], "cloud_pass_at_1": cloud_measured,
                            "of_cloud": measured["pass_at_1"] / cloud_measured if cloud_measured else math.nan,
                            "top_traffic": measured["top_traffic"], "n": len(halves[measure])})
    return results


KEEP_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def keep_curve(requests: Sequence[Request], lower: str, top: str,
               shares: Sequence[float] = KEEP_SHARES) -> list[dict[str, float]]:
    """The two-tier trade-off the confidence allows at best: for each share, keep that share of the
    requests (the lower tier's most confident answers, ranked over the whole trace, i.e. with
    hindsight of the distribution) at the lower tier and send the rest to the top. The pass@1 of the
    kept answers and of the mix, against the top tier's on the same requests."""
    ranked = sorted(requests, key=lambda r: -(r.answers[lower].confidence or 0.0))
    top_all = _pass_rate(requests, top)
    curve = []
    for share in shares:
        k = round(share * len(ranked))
        kept, rest = ranked[:k], ranked[k:]
        mixed = (sum(r.answers[lower].correct for r in kept) + sum(r.answers[top].correct for r in rest))
        curve.append({"kept_share": k / len(ranked) if ranked else 0.0,
                      "kept_pass": _pass_rate(kept, lower), "top_on_kept": _pass_rate(kept, top),
                      "pass_at_1": mixed / len(ranked) if ranked else 0.0,
                      "of_top": mixed / len(ranked) / top_all if ranked and top_all else 0.0,
                      "min_confidence_kept": kept[-1].answers[lower].confidence or 0.0 if kept else 1.0})
    return curve


def _pass_rate(requests: Sequence[Request], tier: str) -> float:
    return sum(r.answers[tier].correct for r in requests) / len(requests) if requests else 0.0
