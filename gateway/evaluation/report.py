"""Tables (markdown), JSON and accuracy-vs-communication plots from replayed traces: the report as a
whole and the baselines' part of it (the quality policy's part is in `report_quality`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.evaluation.headline import headline
from gateway.evaluation.record import TIERS, compress
from gateway.evaluation.replay_quality import MAIN_BETA, WARMUP_ANSWERS, QualityOptions
from gateway.evaluation.report_common import (
    DEFAULT_PROBE_RATE,
    interpolate,
    main_rows,
    panels,
    quality_beta_curve,
    quality_curve,
)
from gateway.evaluation.report_envelope import envelope_counts
from gateway.evaluation.report_quality import (
    plot_warmups,
    quality_sections,
    quality_summary,
    slim,
    warmup_answer_comparison,
)
from gateway.evaluation.report_savings import DEFAULT_RATES, TierRates, annotate, cell
from gateway.evaluation.seeds import write_seed_table
from gateway.evaluation.sweeps import load_trace, replay_mixed, replay_trace_file


def _label(entry: Mapping[str, Any]) -> str:
    params = entry["params"]
    if entry["policy"] == "casserve":
        return f"CasServe θ={params['threshold']}"
    if entry["policy"] == "recserve":
        return f"RecServe β={params['beta']} W={params['window']}"
    if entry["policy"] == "quality":
        return (f"Quality t={params['target']} β={params['beta']} probes {params['probe_rate']:.0%}"
                + (f" warm-up {params['warmup_probes']}" if "warmup_probes" in params else "")
                + (f" answering {params['warmup_answer']}" if "warmup_answer" in params else "")
                + (" (steady state)" if params.get("warm") else ""))
    return str(entry["policy"])


def _row(dataset: str, entry: Mapping[str, Any]) -> str:
    share = entry["share"]
    return (f"| {dataset} | {_label(entry)} | {entry['accuracy']:.3f} | "
            + " / ".join(f"{share[t]:.2f}" for t in TIERS)
            + f" | {entry['uplink_tokens']} | {entry['comm_vs_cloud']:.2f} | {entry['bytes_vs_cloud']:.2f} | "
            f"{entry['mean_latency_s']:.2f} | {cell(entry.get('weighted_vs_top'))} | "
            f"{cell(entry.get('spend_vs_top'))} |")


_HEADER = ("| dataset | policy | accuracy | share device / edge / cloud | uplink tokens | comm vs cloud-only "
           "(tokens) | (bytes) | mean latency (s) | weighted comm vs cloud-only | spend vs cloud-only |\n"
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|")


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
        main = result.get("quality_warmup_answer")
        for warm, style in ((False, "-P"), (True, "--P")):
            curve = quality_curve(result, probe_rate, warm)
            ax.plot([e["comm_vs_cloud"] for e in curve], [e["accuracy"] for e in curve], style, ms=5,
                    color="tab:purple", label=f"Quality t 0.6-0.95 (β={MAIN_BETA}, probes {probe_rate:.0%}"
                    + (f", warm-up answer {main}" if main else "") + (", steady state)" if warm else ")"))
        sweep = quality_beta_curve(result, probe_rate)
        if len(sweep) > 1:
            ax.plot([e["comm_vs_cloud"] for e in sweep], [e["accuracy"] for e in sweep], "-.d", ms=5,
                    color="tab:brown", label=f"Quality β {sweep[0]['params']['beta']}-{sweep[-1]['params']['beta']} "
                    f"(t={sweep[0]['params']['target']}, probes {probe_rate:.0%})")
        for answer in (a for a in WARMUP_ANSWERS if main and a != main):
            curve = quality_curve(result, probe_rate, answer=answer)
            if curve:
                ax.plot([e["comm_vs_cloud"] for e in curve], [e["accuracy"] for e in curve], ":P", ms=5,
                        color="tab:pink", label=f"Quality, warm-up answer {answer}")

    panels(results, path, draw, legend_columns=4)


def write_report(traces: Path, out: Path, options: QualityOptions | None = None,
                 rates: Mapping[str, TierRates] = DEFAULT_RATES) -> list[Path]:
    """Gzip every recorded `*.jsonl` trace in `traces` (the committed form), replay every `*.jsonl.gz`
    and the mixed stream of them all, write results.md, results.json and the plot. Spend and weighted
    communication use each tier's `rates` (gateway/evaluation/report_savings.py)."""
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
    annotate(results, rates)
    summaries = [quality_summary(r, options.probe_rate) for r in results]
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(json.dumps({"results": results, "comparison": [matched_comparison(r) for r in results],
                                     "quality": [slim(m) for m in summaries],
                                     "quality_envelope_counts": envelope_counts(summaries),
                                     "warmup_answer": [warmup_answer_comparison(r, options.probe_rate)
                                                       for r in results] if options.other_warmup_answers else [],
                                     "quality_options": {**asdict(options), "warmup_probes": options.warmup}},
                                    indent=1) + "\n", encoding="utf-8")
    seed_rows = write_seed_table(files, out)
    code_json = out / "code" / "humaneval.json"
    code = json.loads(code_json.read_text(encoding="utf-8")) if code_json.exists() else None
    sections = ["# RecServe evaluation results", "",
                "Generated by `recserve eval report`; the documentation's Evaluation page says how they are made.",
                "", "## Headline: what the default `recserve/quality` keeps and saves", "",
                "Each dataset is a workload; the mixed stream interleaves them, each under its own name (the "
                "gateway's default keying). Quality is accuracy (pass@1 for HumanEval) as a share of cloud-only's, "
                "worst of seeds 0-9; traffic and spend are medians over the seeds, spend at the example prices "
                "of the Evaluation page. Per seed: `eval/results/seeds.md`; HumanEval: "
                "`eval/results/code/humaneval.md`.", "", headline(seed_rows, code), "",
                "Below, communication is prompt tokens shipped above the device over cloud-only's, probes "
                "included; weighted communication and spend use each tier's uplink weight and price against the "
                "same prompts and answers at the cloud's; \"mixed\" is every dataset interleaved round robin in "
                "the order below, windows keyed by task (the paper's keying, `policy.key: task`).", "",
                *quality_sections(results, summaries, options)]
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
        plot_warmups(results, written[-1], options.probe_rate, sorted({options.warmup, *options.other_warmups}))
    return written
