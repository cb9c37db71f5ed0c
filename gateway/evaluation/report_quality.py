"""The quality policy's part of the report: its main points against the baselines, its curve against
the RecServe + CasServe upper envelope, the warm-up and probe-rate sensitivity, the quality targets."""

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
    main_rows,
    panels,
    quality_curve,
    quality_main,
)
from gateway.evaluation.report_envelope import (
    beta_envelope,
    beta_sections,
    envelope_by_target,
    envelope_counts_text,
    envelope_points,
    envelope_table,
    envelope_verdict,
)


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
    """The quality targets, measured: the mixed stream's share of cloud-only accuracy, the envelope counts."""
    mixed = next((m for m in summaries if m["dataset"] == "mixed"), None)
    goal1 = (f"Share of cloud-only accuracy on the mixed stream at t={MAIN_TARGET} (target ≥ 95 %): "
             + (f"{mixed['of_cloud']:.1%} ({'met' if mixed['of_cloud'] >= 0.95 else 'missed'})." if mixed
                else "no mixed stream (one trace)."))
    goal2 = f"On or above the envelope (target: ≥ 6 of 8 datasets), {envelope_counts_text(summaries)}"
    return [goal1, "", goal2, ""]


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
                "(the policy at its default target, its β swept as RecServe's is); and, per target, its β sweep "
                f"there and its point at β={MAIN_BETA}. Steady state: after an unmeasured pre-pass of "
                "2·min_probes/probe_rate requests over the same stream (repeated), an optimistic view (judged on "
                "the examples it was probed on).", "",
                f"### Target sweep at β={MAIN_BETA}", "",
                envelope_table(summaries), "",
                f"Cold: on or above on {sum(m['envelope']['verdict'] for m in datasets)}/{len(datasets)} datasets; "
                f"steady state: {sum(m['warm_envelope']['verdict'] for m in datasets)}/{len(datasets)}.", "",
                *beta_sections(summaries)]
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
