"""The quality policy's part of the report: its main points against the baselines, its curve against
the RecServe + CasServe upper envelope, the warm-up and probe-rate sensitivity, issue #11's goals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.evaluation.record import TIERS
from gateway.evaluation.replay_quality import MAIN_BETA, WARMUP_ANSWERS, QualityOptions
from gateway.evaluation.report_common import (
    MAIN_TARGET,
    MAIN_THRESHOLD,
    acc_comm,
    interpolate,
    main_rows,
    panels,
    quality_beta_curve,
    quality_curve,
    quality_main,
    quality_targets,
)


def envelope_points(result: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The baselines' upper envelope: the Pareto-optimal (communication, accuracy) points among every
    RecServe (all β and W) and CasServe (all θ) point, by communication; each point has strictly
    higher accuracy than every point of no more communication."""
    points = sorted(((e["comm_vs_cloud"], e["accuracy"]) for e in result["policies"]
                     if e["policy"] in {"recserve", "casserve"}), key=lambda p: (p[0], -p[1]))
    frontier: list[tuple[float, float]] = []
    for comm, accuracy in points:
        if not frontier or accuracy > frontier[-1][1]:
            frontier.append((comm, accuracy))
    return frontier


def envelope_verdict(result: Mapping[str, Any], curve: Sequence[Mapping[str, Any]],
                     key: str = "target") -> dict[str, Any]:
    """Whether a curve lies on or above the envelope. The envelope's accuracy at communication x is the
    linear interpolation between its neighbouring Pareto points (a random mix of the two policies
    reaches it), flat beyond its ends. A point is on or above iff its accuracy >= that value minus
    half an example (0.5 / n); the curve is iff every point is. `key`: the parameter the curve sweeps
    (its points' margins and those below are named by it)."""
    frontier = envelope_points(result)
    n = max(int(result["n"]), 1)
    margins = [e["accuracy"] - interpolate(frontier, e["comm_vs_cloud"]) for e in curve]
    on = [m >= -0.5 / n for m in margins]
    names = [e["params"][key] for e in curve]
    return {"dataset": result["dataset"], "n": result["n"], "sweep": key, "points": len(curve),
            "on_or_above": sum(on), "verdict": bool(curve) and all(on), "worst_margin": min(margins, default=0.0),
            "worst_margin_examples": min(margins, default=0.0) * n,
            "below": [name for name, ok in zip(names, on, strict=True) if not ok],
            "margins": dict(zip(names, margins, strict=True))}


def _brief(verdict: Mapping[str, Any]) -> dict[str, Any]:
    return {k: verdict[k] for k in ("on_or_above", "points", "verdict", "worst_margin_examples", "below")}


def beta_envelope(result: Mapping[str, Any], probe_rate: float, warm: bool = False) -> dict[str, Any] | None:
    """The verdict of the quality policy's β sweep at the main target (issue #11's curve: the policy at
    its target, its β swept as RecServe's is), with that target; None when it ran at one β only (the
    steady state is run at β 0.3 only)."""
    curve = quality_beta_curve(result, probe_rate, warm=warm)
    if len(curve) < 2:
        return None
    return {**envelope_verdict(result, curve, key="beta"), "target": curve[0]["params"]["target"]}


def envelope_by_target(result: Mapping[str, Any], probe_rate: float, warm: bool = False) -> list[dict[str, Any]]:
    """Per target run: the verdict of its β sweep (None when it ran at one β only) and of its point at the
    main β (None when not run)."""
    views = []
    for target in quality_targets(result, probe_rate, warm):
        sweep = quality_beta_curve(result, probe_rate, target, warm)
        point = [e for e in sweep if e["params"]["beta"] == MAIN_BETA]
        views.append({"target": target,
                      "beta_sweep": _brief(envelope_verdict(result, sweep, key="beta")) if len(sweep) > 1 else None,
                      "main_beta": _brief(envelope_verdict(result, point)) if point else None})
    return views


def quality_summary(result: Mapping[str, Any], probe_rate: float) -> dict[str, Any]:
    """The quality policy at the main target (cold, and in a steady state: `warm`) against cloud-only,
    RecServe, CasServe."""
    by_policy = {e["policy"]: e for e in main_rows(result) if e["policy"] != "quality"}
    cold, warm = quality_main(result, probe_rate), quality_main(result, probe_rate, warm=True)
    cloud = by_policy["cloud-only"]["accuracy"]
    bypassed = sorted(key for key, state in cold.get("learned", {}).items() if state["bypassed"])
    return {"dataset": result["dataset"], "n": result["n"], "cloud": by_policy["cloud-only"],
            "recserve": by_policy["recserve"], "casserve": by_policy["casserve"], "quality": cold,
            "warm": warm, "of_cloud": cold["accuracy"] / cloud if cloud else 0.0,
            "warm_of_cloud": warm["accuracy"] / cloud if cloud else 0.0, "bypassed_at_end": bypassed,
            "envelope": envelope_verdict(result, quality_curve(result, probe_rate)),
            "warm_envelope": envelope_verdict(result, quality_curve(result, probe_rate, warm=True)),
            "envelope_beta": beta_envelope(result, probe_rate),
            "warm_envelope_beta": beta_envelope(result, probe_rate, warm=True),
            "envelope_by_target": envelope_by_target(result, probe_rate),
            "warm_envelope_by_target": envelope_by_target(result, probe_rate, warm=True)}


def quality_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Per dataset: accuracy / communication (vs cloud-only tokens, probes included) at the main points."""
    lines = [f"| dataset | n | cloud-only | RecServe β={MAIN_BETA} | CasServe θ={MAIN_THRESHOLD} | "
             f"Quality t={MAIN_TARGET} | its share device / edge / cloud | probe calls | % of cloud-only acc | "
             "bypassed at end | Quality steady state | its share d / e / c | its % of cloud-only |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---|---:|"]
    for m in summaries:
        q, w = m["quality"], m["warm"]
        lines.append(
            f"| {m['dataset']} | {m['n']} | {acc_comm(m['cloud'])} | {acc_comm(m['recserve'])} | "
            f"{acc_comm(m['casserve'])} | "
            f"{acc_comm(q)} | " + " / ".join(f"{q['share'][t]:.2f}" for t in TIERS)
            + f" | {q.get('probe_calls', 0)} | {m['of_cloud']:.0%} | {', '.join(m['bypassed_at_end']) or '-'} | "
            f"{acc_comm(w)} | " + " / ".join(f"{w['share'][t]:.2f}" for t in TIERS) + f" | {m['warm_of_cloud']:.0%} |")
    return "\n".join(lines)


def envelope_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Per dataset: how many points of the target sweep are on or above the envelope, the verdict."""
    lines = ["| dataset | n | cold: points on/above | worst margin (examples) | verdict | "
             "steady state: points on/above | worst margin (examples) | verdict |",
             "|---|---:|---:|---:|---|---:|---:|---|"]
    for m in summaries:
        cells = []
        for key in ("envelope", "warm_envelope"):
            v = m[key]
            cells.append(f"{v['on_or_above']}/{v['points']} | {v['worst_margin_examples']:+.1f} | "
                         + ("on/above" if v["verdict"] else "below"))
        lines.append(f"| {m['dataset']} | {m['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


STATES = (("cold", ""), ("steady state", "warm_"))  # a state's label and its summary keys' prefix


def _count(named: Sequence[tuple[str, Mapping[str, Any] | None]]) -> dict[str, Any] | None:
    present = [(name, view) for name, view in named if view is not None]
    if not present:
        return None
    return {"on_or_above": sum(bool(view["verdict"]) for _, view in present), "of": len(present),
            "below": [name for name, view in present if not view["verdict"]]}


def envelope_counts(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Over the datasets (the mixed stream aside), cold and in the steady state: how many are on or above
    the envelope with the target sweep at the main β, with the β sweep at the main target, and per target
    with its β sweep and with its point at the main β; with the datasets below. A view run for no dataset
    is None."""
    datasets = [m for m in summaries if m["dataset"] != "mixed"]
    counts: dict[str, Any] = {}
    for label, prefix in STATES:
        targets = sorted({v["target"] for m in datasets for v in m[prefix + "envelope_by_target"]})

        def at(m: Mapping[str, Any], target: float, view: str, prefix: str = prefix) -> Mapping[str, Any] | None:
            return next((v[view] for v in m[prefix + "envelope_by_target"] if v["target"] == target), None)

        counts[label] = {
            "target_sweep": _count([(m["dataset"], m[prefix + "envelope"]) for m in datasets]),
            "beta_sweep": _count([(m["dataset"], m[prefix + "envelope_beta"]) for m in datasets]),
            "by_target": [{"target": t, **{view: _count([(m["dataset"], at(m, t, view)) for m in datasets])
                                           for view in ("beta_sweep", "main_beta")}} for t in targets]}
    return counts


def _span(values: Sequence[float]) -> str:
    return f"{min(values)}-{max(values)}" if values else "-"


def _swept(summaries: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """The values a view's curves sweep (its first dataset that has it)."""
    view = next((m[key] for m in summaries if m[key]), None)
    return sorted(view["margins"]) if view else []


def _of(count: Mapping[str, Any] | None) -> str:
    return f"{count['on_or_above']} of {count['of']}" if count else "not run"


def beta_envelope_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Per dataset: how many points of the β sweep at the main target are on or above the envelope, the
    worst margin, the βs below, the verdict; cold, and in the steady state when it was run at several βs."""
    states = [(label, prefix) for label, prefix in STATES if any(m[prefix + "envelope_beta"] for m in summaries)]
    lines = ["| dataset | n | " + " | ".join(f"{label}: points on/above | worst margin (examples) | below at β | "
                                              "verdict" for label, _ in states) + " |",
             "|---|---:|" + "---:|---:|---|---|" * len(states)]
    for m in summaries:
        cells = []
        for _, prefix in states:
            v = m[prefix + "envelope_beta"]
            cells.append(f"{v['on_or_above']}/{v['points']} | {v['worst_margin_examples']:+.1f} | "
                         f"{', '.join(str(b) for b in v['below']) or '-'} | "
                         + ("on/above" if v["verdict"] else "below") if v else "- | - | - | not run")
        lines.append(f"| {m['dataset']} | {m['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_envelope_table(counts: Mapping[str, Any]) -> str:
    """Per target: how many datasets are on or above the envelope with the β sweep at that target and with
    its point at the main β (cold, steady state), and which are below. Views run for no target are left out."""
    columns = [(label, view) for label, _ in STATES for view in ("beta_sweep", "main_beta")
               if any(row[view] for row in counts[label]["by_target"])]
    names = {"beta_sweep": "β sweep", "main_beta": f"β={MAIN_BETA} point"}
    targets = sorted({row["target"] for label, _ in STATES for row in counts[label]["by_target"]})
    lines = ["| target | " + " | ".join(f"{label}: {names[view]} on/above | below" for label, view in columns) + " |",
             "|---:|" + "---:|---|" * len(columns)]
    for target in targets:
        cells = []
        for label, view in columns:
            count = next((row[view] for row in counts[label]["by_target"] if row["target"] == target), None)
            cells.append(f"{count['on_or_above']}/{count['of']} | {', '.join(count['below']) or '-'}" if count
                         else "- | -")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sensitivity_table(result: Mapping[str, Any], rates: Sequence[float]) -> str:
    """One stream: the quality policy at the main target for each probe rate, cold and in a steady state."""
    cloud = next(e for e in result["policies"] if e["policy"] == "cloud-only")["accuracy"]
    lines = ["| probe rate | cold acc / comm | probe calls | % of cloud-only | steady acc / comm | "
             "steady % of cloud-only |", "|---:|---:|---:|---:|---:|---:|"]
    for rate in rates:
        cold, warm = quality_main(result, rate), quality_main(result, rate, warm=True)
        lines.append(f"| {rate:.0%} | {acc_comm(cold)} | {cold.get('probe_calls', 0)} | "
                     f"{cold['accuracy'] / cloud:.0%} | {acc_comm(warm)} | {warm['accuracy'] / cloud:.0%} |")
    return "\n".join(lines)


def warmup_table(result: Mapping[str, Any], probe_rate: float, warmups: Sequence[int]) -> str:
    """One stream: the quality policy (cold, β=0.3, `probe_rate`) for each warm-up length: the main target's
    point and whether its target sweep is on or above the envelope."""
    cloud = next(e for e in result["policies"] if e["policy"] == "cloud-only")["accuracy"]
    lines = [f"| warmup_probes | acc / comm (t={MAIN_TARGET}) | % of cloud-only | share d / e / c | probe calls | "
             "bypassed at end | sweep on/above envelope | worst margin (examples) |",
             "|---:|---:|---:|---|---:|---|---:|---:|"]
    for warmup in warmups:
        curve = quality_curve(result, probe_rate, warmup=warmup)
        if not curve:
            continue
        main = quality_main(result, probe_rate, warmup=warmup)
        verdict = envelope_verdict(result, curve)
        bypassed = sorted(key for key, state in main.get("learned", {}).items() if state["bypassed"])
        lines.append(f"| {warmup} | {acc_comm(main)} | {main['accuracy'] / cloud if cloud else 0.0:.0%} | "
                     + " / ".join(f"{main['share'][t]:.2f}" for t in TIERS)
                     + f" | {main.get('probe_calls', 0)} | {', '.join(bypassed) or '-'} | "
                     f"{verdict['on_or_above']}/{verdict['points']} | {verdict['worst_margin_examples']:+.1f} |")
    return "\n".join(lines)


def warmup_answer_comparison(result: Mapping[str, Any], probe_rate: float) -> dict[str, Any]:
    """One stream: the quality policy (cold, β=0.3, `probe_rate`) at the main target with each warm-up answer
    (`top`: verified by the top tier, which answers; `kept`: served, probed in the background), against
    cloud-only, with its target sweep's envelope verdict. A mode that was not run is None."""
    cloud = next(e for e in result["policies"] if e["policy"] == "cloud-only")
    modes: dict[str, Any] = {}
    for answer in WARMUP_ANSWERS:
        curve = quality_curve(result, probe_rate, answer=answer)
        if not curve:
            modes[answer] = None
            continue
        main = quality_main(result, probe_rate, answer=answer)
        verdict = envelope_verdict(result, curve)
        modes[answer] = {"target": main["params"]["target"], "accuracy": main["accuracy"],
                         "of_cloud": main["accuracy"] / cloud["accuracy"] if cloud["accuracy"] else 0.0,
                         "comm_vs_cloud": main["comm_vs_cloud"], "mean_latency_s": main["mean_latency_s"],
                         "share": main["share"], "verified_requests": main.get("verified_requests", 0),
                         "probe_calls": main.get("probe_calls", 0),
                         "envelope": {k: verdict[k] for k in ("on_or_above", "points", "verdict",
                                                              "worst_margin_examples")}}
    return {"dataset": result["dataset"], "n": result["n"], "cloud_accuracy": cloud["accuracy"],
            "cloud_latency_s": cloud["mean_latency_s"], **modes}


def _verdict_cell(envelope: Mapping[str, Any]) -> str:
    return (f"{'on/above' if envelope['verdict'] else 'below'} ({envelope['on_or_above']}/{envelope['points']}, "
            f"{envelope['worst_margin_examples']:+.1f})")


def warmup_answer_table(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """Per stream: each warm-up answer's accuracy, % of cloud-only, communication, mean latency and the
    envelope verdict of its target sweep (points on or above / points, worst margin in examples)."""
    modes = [a for a in WARMUP_ANSWERS if any(c[a] for c in comparisons)]
    lines = ["| dataset | n | cloud-only acc / latency (s) | "
             + " | ".join(f"{a}: acc | % of cloud-only | comm | latency (s) | envelope" for a in modes) + " |",
             "|---|---:|---:|" + "---:|---:|---:|---:|---|" * len(modes)]
    for c in comparisons:
        cells = [f"{c['dataset']}", f"{c['n']}", f"{c['cloud_accuracy']:.3f} / {c['cloud_latency_s']:.2f}"]
        for answer in modes:
            m = c[answer]
            cells += ([f"{m['accuracy']:.3f}", f"{m['of_cloud']:.0%}", f"{m['comm_vs_cloud']:.2f}",
                       f"{m['mean_latency_s']:.2f}", _verdict_cell(m["envelope"])] if m else ["-"] * 5)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _warmup_answer_section(results: Sequence[Mapping[str, Any]], options: QualityOptions) -> list[str]:
    comparisons = [warmup_answer_comparison(r, options.probe_rate) for r in results]
    datasets = [c for c in comparisons if c["dataset"] != "mixed"]
    counts = ", ".join(f"{a} {sum(bool(c[a]) and c[a]['envelope']['verdict'] for c in datasets)}/{len(datasets)}"
                       for a in WARMUP_ANSWERS if any(c[a] for c in comparisons))
    return [f"## Warm-up answer: top vs kept (quality t={MAIN_TARGET}, cold, β={MAIN_BETA}, probes "
            f"{options.probe_rate:.0%}, warmup_probes {options.warmup}): policy.quality.warmup_answer", "",
            "While a tier and task is warming up, `top` verifies an answer the tier would keep: the request goes "
            "straight to the top tier (tiers in between not asked), whose answer is served, and the pair is the "
            "tier's probe (no probe call). `kept` serves the kept answer and probes it in the background. "
            "Latency: the tiers a request visited, one after another. Envelope: the target sweep's verdict "
            "(points on or above / points, worst margin in examples).", "",
            warmup_answer_table(comparisons), "",
            f"Target sweep on or above the envelope: {counts} datasets.", ""]


def goal_lines(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Issue #11's goals, measured: the mixed stream's share of cloud-only accuracy, the envelope counts."""
    mixed = next((m for m in summaries if m["dataset"] == "mixed"), None)
    goal1 = (f"Goal 1 (mixed stream at t={MAIN_TARGET}: ≥ 95 % of cloud-only accuracy): "
             + (f"{mixed['of_cloud']:.1%} ({'met' if mixed['of_cloud'] >= 0.95 else 'missed'})." if mixed
                else "no mixed stream (one trace)."))
    goal2 = f"Goal 2 (on or above the envelope on ≥ 6 of 8 datasets), {_envelope_counts_text(summaries)}"
    return [goal1, "", goal2, ""]


def _envelope_counts_text(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Every envelope view's count of datasets on or above, cold then in the steady state, in words."""
    counts = envelope_counts(summaries)
    names = {"beta_sweep": "its β sweep", "main_beta": f"its β={MAIN_BETA} point"}
    texts = []
    for label, prefix in STATES:
        c = counts[label]
        beta = next((m[prefix + "envelope_beta"] for m in summaries if m[prefix + "envelope_beta"]), None)
        parts = [f"β sweep {_span(_swept(summaries, prefix + 'envelope_beta'))} at t={beta['target']}: "
                 f"{_of(c['beta_sweep'])}" if beta else f"no β sweep (run at β={MAIN_BETA} only)",
                 f"target sweep {_span(_swept(summaries, prefix + 'envelope'))} at β={MAIN_BETA}: "
                 f"{_of(c['target_sweep'])}"]
        for view in ("beta_sweep", "main_beta"):
            rows = [row for row in c["by_target"] if row[view]]
            if rows:
                parts.append(f"at each target, {names[view]}: "
                             + ", ".join(f"t={row['target']} {row[view]['on_or_above']}/{row[view]['of']}"
                                         for row in rows))
        texts.append(("; ".join(parts) + ".") if label == "cold" else f"Steady state: {'; '.join(parts)}.")
    return "cold: " + " ".join(texts)


def plot_warmups(results: Sequence[Mapping[str, Any]], path: Path, probe_rate: float,
                 warmups: Sequence[int]) -> None:
    """The quality policy's cold target sweep for each warm-up length against the baselines' envelope,
    one panel per dataset and one for the mixed stream."""
    from matplotlib import colormaps

    colors = colormaps["viridis"]

    def draw(ax: Any, result: Mapping[str, Any]) -> None:
        frontier = envelope_points(result)
        right = max([e["comm_vs_cloud"] for e in result["policies"] if e["policy"] == "quality"]
                    + [c for c, _ in frontier], default=1.0)
        line = [*frontier, (right, frontier[-1][1])] if frontier else []  # flat beyond its end
        ax.plot([c for c, _ in line], [a for _, a in line], "-", color="grey", lw=2, alpha=0.6,
                label="RecServe + CasServe envelope (flat beyond its end)")
        cloud = next(e for e in result["policies"] if e["policy"] == "cloud-only")
        ax.plot(cloud["comm_vs_cloud"], cloud["accuracy"], "^", color="tab:red", ms=8, label="cloud-only")
        for i, warmup in enumerate(warmups):
            curve = quality_curve(result, probe_rate, warmup=warmup)
            ax.plot([e["comm_vs_cloud"] for e in curve], [e["accuracy"] for e in curve], "-" + "PoXsD"[i % 5],
                    ms=7 - i, color=colors(i / max(len(warmups) - 1, 1)), alpha=0.85,
                    label=f"Quality t 0.6-0.95, warmup_probes {warmup}")

    panels(results, path, draw, legend_columns=3)


def _beta_sections(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The β sweep at the main target's table and count, and the per-target counts (cold, steady state)."""
    counts = envelope_counts(summaries)
    cold = next((m["envelope_beta"] for m in summaries if m["envelope_beta"]), None)
    sections: list[str] = []
    if cold:
        warm = counts["steady state"]["beta_sweep"]
        sections += [f"### β sweep ({_span(_swept(summaries, 'envelope_beta'))}) at t={cold['target']}", "",
                     beta_envelope_table(summaries), "",
                     f"Cold: on or above on {_of(counts['cold']['beta_sweep'])} datasets; steady state: "
                     + (f"{_of(warm)}." if warm else f"not run (the steady state is run at β={MAIN_BETA} only)."),
                     ""]
    if any(row["beta_sweep"] or row["main_beta"] for c in counts.values() for row in c["by_target"]):
        sections += ["### Per target: datasets on or above the envelope", "",
                     f"At each target: its β sweep (every β run), and its point at β={MAIN_BETA} (the target "
                     "sweep's point there); out of the datasets (the mixed stream aside).", "",
                     target_envelope_table(counts), ""]
    return sections


def quality_sections(results: Sequence[Mapping[str, Any]], summaries: Sequence[Mapping[str, Any]],
                     options: QualityOptions) -> list[str]:
    """results.md's quality part: the main table and the goals, the envelope verdicts, the warm-up
    sensitivity (when swept) and the probe-rate sensitivity."""
    rates = (options.probe_rate, *options.other_probe_rates)
    warmups = sorted({options.warmup, *options.other_warmups})
    datasets = [m for m in summaries if m["dataset"] != "mixed"]
    sections = [f"## Quality floor (recserve/quality, t={MAIN_TARGET}, β={MAIN_BETA}, probes {options.probe_rate:.0%}, "
                f"min_probes {options.min_probes}, warmup_probes {options.warmup}, warm-up answer "
                f"{options.warmup_answer}, seed {options.seed}): "
                "accuracy / communication", "", quality_table(summaries), "", *goal_lines(summaries),
                "## Quality curve vs the RecServe + CasServe upper envelope", "",
                "The envelope: the Pareto-optimal points of every RecServe (β 0.1-0.7, W 10/100/10000) and "
                "CasServe (θ 0.2-0.95) run, linearly interpolated between them and flat beyond their ends. "
                "A quality point is on or above it iff its accuracy is at least the envelope's at its "
                "communication minus half an example (0.5/n); a curve is iff all its points are. Three views of "
                f"the quality policy's curve: its target sweep at β={MAIN_BETA}; its β sweep at t={MAIN_TARGET} "
                "(the policy at issue #11's target, its β swept as RecServe's is); and, per target, its β sweep "
                f"there and its point at β={MAIN_BETA}. Steady state: after an unmeasured pre-pass of "
                "2·min_probes/probe_rate requests over the same stream (repeated), an optimistic view (judged on "
                "the examples it was probed on).", "",
                f"### Target sweep at β={MAIN_BETA}", "",
                envelope_table(summaries), "",
                f"Cold: on or above on {sum(m['envelope']['verdict'] for m in datasets)}/{len(datasets)} datasets; "
                f"steady state: {sum(m['warm_envelope']['verdict'] for m in datasets)}/{len(datasets)}.", "",
                *_beta_sections(summaries)]
    if options.other_warmup_answers:
        sections += _warmup_answer_section(results, options)
    if options.other_warmups:
        sections += [f"## Warm-up sensitivity (quality, cold, β={MAIN_BETA}, probes {options.probe_rate:.0%}): "
                     "policy.quality.warmup_probes", "",
                     "While a tier and task holds fewer than warmup_probes probes, every answer it keeps (or every "
                     "request that bypasses it) is probed; 0 is sampling at the probe rate only.", ""]
        for result in results:
            sections += [f"### {result['dataset']}", "", warmup_table(result, options.probe_rate, warmups), ""]
    sections += [f"## Probe-rate sensitivity (quality t={MAIN_TARGET}, β={MAIN_BETA}, "
                 f"warmup_probes {options.warmup})", ""]
    for result in results:
        sections += [f"### {result['dataset']}", "", sensitivity_table(result, rates), ""]
    return sections


def slim(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A quality summary for the JSON: the entries it compares are in `results` already."""
    keep = ("accuracy", "comm_vs_cloud", "share", "probe_calls")
    return {key: ({k: v for k, v in value.items() if k in keep} if isinstance(value, Mapping)
                  and "accuracy" in value else value) for key, value in summary.items()}
