"""Tables (markdown), JSON and accuracy-vs-communication plots from replayed traces."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from gateway.evaluation.record import TIERS, compress
from gateway.evaluation.replay import QualityOptions, load_trace, replay_mixed, replay_trace_file

# The operating points of the main table: the config's CasServe θ and the authors' β / W; the quality
# policy at the target with the config's probe rate.
MAIN_THRESHOLD = 0.8
MAIN_BETA = 0.3
MAIN_WINDOW = 10000
MAIN_TARGET = 0.9
DEFAULT_PROBE_RATE = QualityOptions().probe_rate


def _label(entry: Mapping[str, Any]) -> str:
    params = entry["params"]
    if entry["policy"] == "casserve":
        return f"CasServe θ={params['threshold']}"
    if entry["policy"] == "recserve":
        return f"RecServe β={params['beta']} W={params['window']}"
    if entry["policy"] == "quality":
        return (f"Quality t={params['target']} β={params['beta']} probes {params['probe_rate']:.0%}"
                + (f" warm-up {params['warmup_probes']}" if "warmup_probes" in params else "")
                + (" (steady state)" if params.get("warm") else ""))
    return str(entry["policy"])


def quality_curve(result: Mapping[str, Any], probe_rate: float, warm: bool = False,
                  warmup: int | None = None) -> list[Mapping[str, Any]]:
    """The quality policy's target sweep at the main β, the given probe rate and warm-up length (default:
    the result's main `quality_warmup`), by target."""
    warmup = result.get("quality_warmup") if warmup is None else warmup
    return sorted((e for e in result["policies"] if e["policy"] == "quality" and e["params"]["beta"] == MAIN_BETA
                   and e["params"]["probe_rate"] == probe_rate and bool(e["params"].get("warm")) == warm
                   and (warmup is None or e["params"].get("warmup_probes") == warmup)),
                  key=lambda e: e["params"]["target"])


def quality_main(result: Mapping[str, Any], probe_rate: float, warm: bool = False,
                 warmup: int | None = None) -> Mapping[str, Any]:
    """The main quality point: the target nearest MAIN_TARGET (it is MAIN_TARGET unless --targets omits it)."""
    return min(quality_curve(result, probe_rate, warm, warmup), key=lambda e: abs(e["params"]["target"] - MAIN_TARGET))


def main_rows(result: Mapping[str, Any], probe_rate: float | None = None) -> list[Mapping[str, Any]]:
    """The policies the summary table shows for one dataset, in a fixed order (the quality policy at
    the main target and `probe_rate`, cold then warm, when given)."""
    picked: list[Mapping[str, Any]] = []
    for entry in result["policies"]:
        params = entry["params"]
        if (entry["policy"] in {f"{t}-only" for t in TIERS} | {"oracle"}
                or (entry["policy"] == "casserve" and params["threshold"] == MAIN_THRESHOLD)
                or (entry["policy"] == "recserve" and params["beta"] == MAIN_BETA
                    and params["window"] == MAIN_WINDOW)):
            picked.append(entry)
    if probe_rate is not None:
        picked += [quality_main(result, probe_rate), quality_main(result, probe_rate, warm=True)]
    order = ["device-only", "edge-only", "cloud-only", "casserve", "recserve", "quality", "oracle"]
    return sorted(picked, key=lambda e: order.index(e["policy"]))


def _row(dataset: str, entry: Mapping[str, Any]) -> str:
    share = entry["share"]
    return (f"| {dataset} | {_label(entry)} | {entry['accuracy']:.3f} | "
            + " / ".join(f"{share[t]:.2f}" for t in TIERS)
            + f" | {entry['uplink_tokens']} | {entry['comm_vs_cloud']:.2f} | {entry['bytes_vs_cloud']:.2f} | "
            f"{entry['mean_latency_s']:.2f} |")


_HEADER = ("| dataset | policy | accuracy | share device / edge / cloud | uplink tokens | comm vs cloud-only "
           "(tokens) | (bytes) | mean latency (s) |\n|---|---|---:|---|---:|---:|---:|---:|")


def policy_table(result: Mapping[str, Any], everything: bool = True) -> str:
    """One dataset's table: every policy (sweeps included) or only the main operating points."""
    entries = result["policies"] if everything else main_rows(result)
    return "\n".join([_HEADER] + [_row(result["dataset"], e) for e in entries])


def matched_comparison(result: Mapping[str, Any]) -> dict[str, Any]:
    """RecServe at the main β/W against the CasServe threshold whose communication is closest."""
    rec = next(e for e in main_rows(result) if e["policy"] == "recserve")
    cas = [e for e in result["policies"] if e["policy"] == "casserve"]
    nearest = min(cas, key=lambda e: (abs(e["comm_vs_cloud"] - rec["comm_vs_cloud"]), -e["accuracy"]))
    cloud = next(e for e in result["policies"] if e["policy"] == "cloud-only")
    return {"casserve_interpolated_accuracy": interpolate(
                [(e["comm_vs_cloud"], e["accuracy"]) for e in cas], rec["comm_vs_cloud"]),
            "dataset": result["dataset"], "n": result["n"], "recserve_accuracy": rec["accuracy"],
            "recserve_comm": rec["comm_vs_cloud"], "casserve_threshold": nearest["params"]["threshold"],
            "casserve_accuracy": nearest["accuracy"], "casserve_comm": nearest["comm_vs_cloud"],
            "cloud_accuracy": cloud["accuracy"], "device_accuracy": main_rows(result)[0]["accuracy"]}


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Accuracy of a sweep's piecewise-linear curve at communication `x` (clamped at its ends)."""
    ordered = sorted(points)
    if x <= ordered[0][0]:
        return ordered[0][1]
    for (x0, y0), (x1, y1) in pairwise(ordered):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ordered[-1][1]


def claim_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Per dataset: RecServe (β=0.3) vs the CasServe point of nearest communication, and vs cloud-only."""
    lines = ["| dataset | n | device-only acc | cloud-only acc | RecServe acc | RecServe comm | "
             "CasServe θ (nearest comm) | its acc | its comm | CasServe acc at RecServe's comm (interpolated) | "
             "RecServe minus that | comm saved vs cloud-only |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        m = matched_comparison(result)
        lines.append(
            f"| {m['dataset']} | {m['n']} | {m['device_accuracy']:.3f} | {m['cloud_accuracy']:.3f} | "
            f"{m['recserve_accuracy']:.3f} | {m['recserve_comm']:.2f} | {m['casserve_threshold']} | "
            f"{m['casserve_accuracy']:.3f} | {m['casserve_comm']:.2f} | {m['casserve_interpolated_accuracy']:.3f} | "
            f"{m['recserve_accuracy'] - m['casserve_interpolated_accuracy']:+.3f} | {1 - m['recserve_comm']:.0%} |")
    return "\n".join(lines)


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


def envelope_verdict(result: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Whether a curve lies on or above the envelope. The envelope's accuracy at communication x is the
    linear interpolation between its neighbouring Pareto points (a random mix of the two policies
    reaches it), flat beyond its ends. A point is on or above iff its accuracy >= that value minus
    half an example (0.5 / n); the curve is iff every point is."""
    frontier = envelope_points(result)
    n = max(int(result["n"]), 1)
    margins = [e["accuracy"] - interpolate(frontier, e["comm_vs_cloud"]) for e in curve]
    on = [m >= -0.5 / n for m in margins]
    return {"dataset": result["dataset"], "n": result["n"], "points": len(curve), "on_or_above": sum(on),
            "verdict": bool(curve) and all(on), "worst_margin": min(margins, default=0.0),
            "worst_margin_examples": min(margins, default=0.0) * n,
            "margins": dict(zip([e["params"]["target"] for e in curve], margins, strict=True))}


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
            "warm_envelope": envelope_verdict(result, quality_curve(result, probe_rate, warm=True))}


def _ac(entry: Mapping[str, Any]) -> str:
    return f"{entry['accuracy']:.3f} / {entry['comm_vs_cloud']:.2f}"


def quality_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Per dataset: accuracy / communication (vs cloud-only tokens, probes included) at the main points."""
    lines = [f"| dataset | n | cloud-only | RecServe β={MAIN_BETA} | CasServe θ={MAIN_THRESHOLD} | "
             f"Quality t={MAIN_TARGET} | its share device / edge / cloud | probe calls | % of cloud-only acc | "
             "bypassed at end | Quality steady state | its share d / e / c | its % of cloud-only |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---|---:|"]
    for m in summaries:
        q, w = m["quality"], m["warm"]
        lines.append(
            f"| {m['dataset']} | {m['n']} | {_ac(m['cloud'])} | {_ac(m['recserve'])} | {_ac(m['casserve'])} | "
            f"{_ac(q)} | " + " / ".join(f"{q['share'][t]:.2f}" for t in TIERS)
            + f" | {q.get('probe_calls', 0)} | {m['of_cloud']:.0%} | {', '.join(m['bypassed_at_end']) or '-'} | "
            f"{_ac(w)} | " + " / ".join(f"{w['share'][t]:.2f}" for t in TIERS) + f" | {m['warm_of_cloud']:.0%} |")
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


def sensitivity_table(result: Mapping[str, Any], rates: Sequence[float]) -> str:
    """One stream: the quality policy at the main target for each probe rate, cold and in a steady state."""
    cloud = next(e for e in result["policies"] if e["policy"] == "cloud-only")["accuracy"]
    lines = ["| probe rate | cold acc / comm | probe calls | % of cloud-only | steady acc / comm | "
             "steady % of cloud-only |", "|---:|---:|---:|---:|---:|---:|"]
    for rate in rates:
        cold, warm = quality_main(result, rate), quality_main(result, rate, warm=True)
        lines.append(f"| {rate:.0%} | {_ac(cold)} | {cold.get('probe_calls', 0)} | {cold['accuracy'] / cloud:.0%} | "
                     f"{_ac(warm)} | {warm['accuracy'] / cloud:.0%} |")
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
        lines.append(f"| {warmup} | {_ac(main)} | {main['accuracy'] / cloud if cloud else 0.0:.0%} | "
                     + " / ".join(f"{main['share'][t]:.2f}" for t in TIERS)
                     + f" | {main.get('probe_calls', 0)} | {', '.join(bypassed) or '-'} | "
                     f"{verdict['on_or_above']}/{verdict['points']} | {verdict['worst_margin_examples']:+.1f} |")
    return "\n".join(lines)


def _panels(results: Sequence[Mapping[str, Any]], path: Path, draw: Callable[[Any, Mapping[str, Any]], None],
            legend_columns: int) -> None:
    """One accuracy-vs-communication panel per result (`draw` plots its lines), a shared legend, a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display here; files only
    import matplotlib.pyplot as plt

    cols = 3
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, result in zip(axes.flat, results, strict=False):
        draw(ax, result)
        ax.set_title(f"{result['dataset']} (n={result['n']})")
        ax.set_xlabel("communication / cloud-only (prompt tokens)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=legend_columns, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results: Sequence[Mapping[str, Any]], path: Path, probe_rate: float = DEFAULT_PROBE_RATE) -> None:
    """Accuracy vs communication (fraction of cloud-only tokens, probes included), one panel per dataset
    and one for the mixed stream."""

    def draw(ax: Any, result: Mapping[str, Any]) -> None:
        policies = result["policies"]
        for window, style in ((10000, "-o"), (10, ":x")):
            pts = [e for e in policies if e["policy"] == "recserve" and e["params"]["window"] == window]
            ax.plot([e["comm_vs_cloud"] for e in pts], [e["accuracy"] for e in pts], style, ms=4,
                    color="tab:blue", label=f"RecServe β 0.1-0.7, W={window}")
        cas = sorted((e for e in policies if e["policy"] == "casserve"), key=lambda e: e["params"]["threshold"])
        ax.plot([e["comm_vs_cloud"] for e in cas], [e["accuracy"] for e in cas], "-s", ms=4,
                color="tab:orange", label="CasServe θ 0.2-0.95")
        marks = {"device-only": ("v", "tab:green"), "edge-only": ("D", "tab:olive"),
                 "cloud-only": ("^", "tab:red"), "oracle": ("*", "black")}
        for entry in policies:
            if entry["policy"] in marks:
                marker, color = marks[entry["policy"]]
                ax.plot(entry["comm_vs_cloud"], entry["accuracy"], marker, color=color, ms=8,
                        label=entry["policy"])
        for warm, style in ((False, "-P"), (True, "--P")):
            curve = quality_curve(result, probe_rate, warm)
            ax.plot([e["comm_vs_cloud"] for e in curve], [e["accuracy"] for e in curve], style, ms=5,
                    color="tab:purple", label=f"Quality t 0.6-0.95 (β={MAIN_BETA}, probes {probe_rate:.0%}"
                    + (", steady state)" if warm else ")"))

    _panels(results, path, draw, legend_columns=4)


def _goal(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Issue #11's goals, measured: the mixed stream's share of cloud-only accuracy, the envelope count."""
    datasets = [m for m in summaries if m["dataset"] != "mixed"]
    mixed = next((m for m in summaries if m["dataset"] == "mixed"), None)
    lines = [f"Goal 1 (mixed stream at t={MAIN_TARGET}: ≥ 95 % of cloud-only accuracy): "
             + (f"{mixed['of_cloud']:.1%} ({'met' if mixed['of_cloud'] >= 0.95 else 'missed'})." if mixed
                else "no mixed stream (one trace).")]
    lines.append(f"Goal 2 (the cold curve on or above the envelope on ≥ 6 of 8 datasets): "
                 f"{sum(m['envelope']['verdict'] for m in datasets)} of {len(datasets)}.")
    return [" ".join(lines), ""]


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

    _panels(results, path, draw, legend_columns=3)


def write_report(traces: Path, out: Path, options: QualityOptions | None = None) -> list[Path]:
    """Gzip every recorded `*.jsonl` trace in `traces` (the committed form), replay every `*.jsonl.gz`
    and the mixed stream of them all, write results.md, results.json and the plot."""
    options = options or QualityOptions()
    for plain in sorted(traces.glob("*.jsonl")):
        compress(plain, plain.with_name(plain.name + ".gz"))
    files = sorted(traces.glob("*.jsonl.gz"))
    results = [replay_trace_file(f, options) for f in files]
    # Classification datasets first, generation last, each alphabetically: a stable table.
    results.sort(key=lambda r: (r["task"] != "classification", r["dataset"]))
    streams = {str(r["dataset"]): load_trace(Path(r["trace"]))[1] for r in results}
    if len(streams) > 1:
        results.append(replay_mixed(streams, options))
    rates = (options.probe_rate, *options.other_probe_rates)
    warmups = sorted({options.warmup, *options.other_warmups})
    summaries = [quality_summary(r, options.probe_rate) for r in results]
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(json.dumps({"results": results, "comparison": [matched_comparison(r) for r in results],
                                     "quality": [_slim(m) for m in summaries],
                                     "quality_options": {**asdict(options), "warmup_probes": options.warmup}},
                                    indent=1) + "\n", encoding="utf-8")
    datasets = [m for m in summaries if m["dataset"] != "mixed"]
    sections = ["# RecServe evaluation results", "",
                "Generated by `recserve eval report`; see README \"## Evaluation\" for how they were made. "
                "Communication is prompt tokens shipped above the device over cloud-only's, probes included; "
                "\"mixed\" is every dataset interleaved round robin in the order below, windows keyed by task "
                "as in the gateway.", "",
                f"## Quality floor (recserve/quality, t={MAIN_TARGET}, β={MAIN_BETA}, probes {options.probe_rate:.0%}, "
                f"min_probes {options.min_probes}, warmup_probes {options.warmup}, seed {options.seed}): "
                "accuracy / communication", "", quality_table(summaries), "", *_goal(summaries),
                "## Quality curve vs the RecServe + CasServe upper envelope", "",
                "The envelope: the Pareto-optimal points of every RecServe (β 0.1-0.7, W 10/100/10000) and "
                "CasServe (θ 0.2-0.95) run, linearly interpolated between them and flat beyond their ends. "
                f"A quality point (target sweep at β={MAIN_BETA}) is on or above it iff its accuracy is at "
                "least the envelope's at its communication minus half an example (0.5/n); a curve is iff all "
                "its points are. Steady state: after an unmeasured pre-pass of 2·min_probes/probe_rate requests "
                "over the same stream (repeated), an optimistic view (judged on the examples it was probed on).", "",
                envelope_table(summaries), "",
                f"Cold: on or above on {sum(m['envelope']['verdict'] for m in datasets)}/{len(datasets)} datasets; "
                f"steady state: {sum(m['warm_envelope']['verdict'] for m in datasets)}/{len(datasets)}.", ""]
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
    sections += ["## RecServe (β=0.3, W=10000) vs CasServe at matched communication", "", claim_table(results), "",
                 "## Main operating points", "",
                 "\n".join([_HEADER] + [_row(r["dataset"], e) for r in results
                                        for e in main_rows(r, options.probe_rate)]), "",
                 "## Every policy (sweeps)", ""]
    for result in results:
        sections += [f"### {result['dataset']}", "", policy_table(result), ""]
    md_path = out / "results.md"
    md_path.write_text("\n".join(sections), encoding="utf-8")
    png_path = out / "accuracy_vs_communication.png"
    plot(results, png_path, options.probe_rate)
    written = [md_path, json_path, png_path]
    if options.other_warmups:
        written.append(out / "quality_warmup.png")
        plot_warmups(results, written[-1], options.probe_rate, warmups)
    return written


def _slim(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A quality summary for the JSON: the entries it compares are in `results` already."""
    keep = ("accuracy", "comm_vs_cloud", "share", "probe_calls")
    return {key: ({k: v for k, v in value.items() if k in keep} if isinstance(value, Mapping)
                  and "accuracy" in value else value) for key, value in summary.items()}
