"""The coding workload's part of the eval report: pass@1 against top-tier traffic for every policy on
both line-ups, the defaults across probe seeds, the half-split tuning, and the agreement measures.

`code_results` computes everything from a HumanEval trace; `code_sections` renders it as markdown;
`write_code_report` writes `humaneval.json` and `humaneval.md` beside the trace and returns the
sections (`recserve eval report` appends them to results.md).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.evaluation.code_agreement import analyse
from gateway.evaluation.code_eval import (
    LINEUPS,
    keep_curve,
    lineup_requests,
    replay_lineup,
    seed_runs,
    split_tuning,
)
from gateway.evaluation.record import read_trace

GOAL = 0.95  # of cloud-only pass@1
SAVING = 0.5  # share of requests that never reach the top tier


def code_results(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Replays, seed runs, split tuning and the agreement analysis of one HumanEval trace."""
    lineups: dict[str, Any] = {}
    for name, lineup in LINEUPS.items():
        tiers = tuple(lineup)
        requests = lineup_requests(rows, lineup)
        lineups[name] = {
            "tiers": list(tiers), "sources": dict(lineup), "n": len(requests),
            "policies": replay_lineup(requests, tiers),
            "defaults": {agreement: seed_runs(requests, tiers, agreement) for agreement in ("token_f1", "code")},
            "split": split_tuning(requests, tiers, GOAL),
            "keep_curve": keep_curve(requests, tiers[-2], tiers[-1]),
        }
    return {"lineups": lineups, "agreement": analyse(rows, ["device", "edge"], "cloud"), "goal": GOAL,
            "saving": SAVING}


def _cloud(policies: Sequence[Mapping[str, Any]], top: str) -> float:
    return float(next(e["pass_at_1"] for e in policies if e["policy"] == f"pinned/{top}"))


def _setting(entry: Mapping[str, Any]) -> str:
    params = entry.get("params") or {}
    if entry["policy"] == "quality":
        return f"target {params['target']}, β {params['beta']}, {params['agreement']}"
    return ", ".join(f"{k} {v}" for k, v in params.items() if k in ("beta", "threshold")) or "—"


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def lineup_table(result: Mapping[str, Any]) -> str:
    """Every policy of one line-up: pass@1, its share of cloud-only's, top-tier traffic, communication."""
    top = result["tiers"][-1]
    cloud = _cloud(result["policies"], top)
    lines = ["| policy | setting | pass@1 | of cloud-only | top-tier traffic | never reached top | comm vs cloud |",
             "|---|---|---|---|---|---|---|"]
    for e in result["policies"]:
        of_cloud = e["pass_at_1"] / cloud if cloud else 0.0
        lines.append(f"| {e['policy']} | {_setting(e)} | {_pct(e['pass_at_1'])} | {_pct(of_cloud)} | "
                     f"{_pct(e['top_traffic'])} | {_pct(1 - e['top_traffic'])} | {e['comm_vs_cloud']:.2f} |")
    return "\n".join(lines)


def defaults_table(result: Mapping[str, Any]) -> str:
    """`recserve/quality` at its defaults over probe seeds, and RecServe at its default β."""
    top = result["tiers"][-1]
    cloud = _cloud(result["policies"], top)
    lines = ["| setting | pass@1 (min-max over seeds) | of cloud-only (min) | never reached top (min-max) |",
             "|---|---|---|---|"]
    for agreement, runs in result["defaults"].items():
        passes = [r["pass_at_1"] for r in runs]
        saved = [1 - r["top_traffic"] for r in runs]
        target = runs[0]["params"]["target"]
        lines.append(f"| quality, defaults (target {target}, β 0.3), {agreement} agreement, seeds 0-{len(runs) - 1} | "
                     f"{_pct(min(passes))}-{_pct(max(passes))} (mean {_pct(statistics.fmean(passes))}) | "
                     f"{_pct(min(passes) / cloud if cloud else 0.0)} | {_pct(min(saved))}-{_pct(max(saved))} |")
    recserve = next(e for e in result["policies"] if e["policy"] == "recserve" and e["params"]["beta"] == 0.3)
    lines.append(f"| recserve, defaults (β 0.3, W 10000) | {_pct(recserve['pass_at_1'])} | "
                 f"{_pct(recserve['pass_at_1'] / cloud if cloud else 0.0)} | {_pct(1 - recserve['top_traffic'])} |")
    return "\n".join(lines)


def split_table(result: Mapping[str, Any], goal: float) -> str:
    """Settings tuned on one half of the problems, measured on the other."""
    lines = [f"| family | tuned on | setting | held {_pct(goal)} on tuning half | measured half: pass@1 | "
             "of cloud-only | never reached top |", "|---|---|---|---|---|---|---|"]
    for s in result["split"]:
        lines.append(f"| {s['family']} | {s['tuned_on']} | {s['setting']} | {'yes' if s['held_on_tuning'] else 'no'} | "
                     f"{_pct(s['pass_at_1'])} | {_pct(s['of_cloud'])} | {_pct(1 - s['top_traffic'])} |")
    return "\n".join(lines)


def keep_table(result: Mapping[str, Any]) -> str:
    """The best a confidence threshold between the two top tiers can do, share by share."""
    lower, top = result["tiers"][-2], result["tiers"][-1]
    lines = [f"| kept at {lower} (most confident first) | lowest confidence kept | {lower} pass@1 on kept | "
             f"{top} pass@1 on the same | pass@1 of the mix | of {top}-only |", "|---|---|---|---|---|---|"]
    for c in result["keep_curve"]:
        lines.append(f"| {_pct(c['kept_share'])} | {c['min_confidence_kept']:.4f} | {_pct(c['kept_pass'])} | "
                     f"{_pct(c['top_on_kept'])} | {_pct(c['pass_at_1'])} | {_pct(c['of_top'])} |")
    return "\n".join(lines)


def agreement_table(analysis: Mapping[str, Any]) -> str:
    """AUCs and the threshold's behaviour on the odd half, per measure."""
    tiers = analysis["lower"]
    lines = ["| measure | AUC: pass alike | " + " | ".join(f"AUC {t}" for t in tiers)
             + " | AUC: lower passes | threshold | odd half: agree rate | precision | balanced accuracy |",
             "|---|---|" + "---|" * len(tiers) + "---|---|---|---|---|"]
    for name, m in analysis["measures"].items():
        odd = m["on_odd"]
        lines.append(f"| {name} | {m['auc']:.3f} | " + " | ".join(f"{m['auc_by_tier'][t]:.3f}" for t in tiers)
                     + f" | {m['auc_lower_passes']:.3f} | {odd['threshold']} | {_pct(odd['agree_rate'])} | "
                     f"{_pct(odd['precision'])} | {odd['balanced_accuracy']:.3f} |")
    return "\n".join(lines)


def code_sections(results: Mapping[str, Any]) -> list[str]:
    """The report's markdown for the coding workload."""
    goal, saving = results["goal"], results["saving"]
    sections = ["## Coding workload (HumanEval)", "",
                "pass@1 of greedy answers, each run against the problem's own tests in the sandbox; "
                "\"top-tier traffic\" is the share of requests whose prompt reached the top tier at all "
                "(served, verified or probed there). Goal: at least "
                f"{_pct(goal)} of cloud-only pass@1 with at least {_pct(saving)} of requests never reaching "
                "the top tier, at a setting chosen without the answers.", ""]
    for name, result in results["lineups"].items():
        route = " → ".join(f"{t} ({s})" if t != s else t for t, s in result["sources"].items())
        sections += [f"### {name}: {route}, {result['n']} problems", "", defaults_table(result), "",
                     "Tuned on one half, measured on the other:", "", split_table(result, goal), "",
                     f"What ranking by the {result['tiers'][-2]} tier's confidence allows (a threshold set with "
                     "hindsight: the best one confidence threshold can do on these problems):", "",
                     keep_table(result), "",
                     "Every policy:", "", lineup_table(result), ""]
    analysis = results["agreement"]
    sections += ["### Agreement measures for code (no code run)", "",
                 f"{analysis['pairs']} pairs (a lower tier's answer, the top tier's); they pass or fail alike in "
                 f"{_pct(analysis['same_rate'] or 0.0)}. Thresholds: raw token-F1 at the gateway's 0.5; the code "
                 "measures' chosen on even problems by balanced accuracy, scored on odd ones.", "",
                 agreement_table(analysis), ""]
    return sections


def write_code_report(trace: Path, out: Path) -> list[str]:
    """Compute the coding results of `trace`, write them to `out/humaneval.json` and `out/humaneval.md`
    (the same sections the main report appends to results.md), return the sections."""
    results = code_results(read_trace(trace))
    out.mkdir(parents=True, exist_ok=True)
    (out / "humaneval.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    sections = code_sections(results)
    (out / "humaneval.md").write_text("\n".join(sections), encoding="utf-8")
    return sections
