"""Tables (markdown), JSON and accuracy-vs-communication plots from replayed traces."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from gateway.evaluation.record import TIERS, compress
from gateway.evaluation.replay import replay_trace_file

# The operating points of the main table: the config's CasServe θ and the authors' β / W.
MAIN_THRESHOLD = 0.8
MAIN_BETA = 0.3
MAIN_WINDOW = 10000


def _label(entry: Mapping[str, Any]) -> str:
    params = entry["params"]
    if entry["policy"] == "casserve":
        return f"CasServe θ={params['threshold']}"
    if entry["policy"] == "recserve":
        return f"RecServe β={params['beta']} W={params['window']}"
    return str(entry["policy"])


def main_rows(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The policies the summary table shows for one dataset, in a fixed order."""
    picked = []
    for entry in result["policies"]:
        params = entry["params"]
        if (entry["policy"] in {f"{t}-only" for t in TIERS} | {"oracle"}
                or (entry["policy"] == "casserve" and params["threshold"] == MAIN_THRESHOLD)
                or (entry["policy"] == "recserve" and params["beta"] == MAIN_BETA
                    and params["window"] == MAIN_WINDOW)):
            picked.append(entry)
    order = ["device-only", "edge-only", "cloud-only", "casserve", "recserve", "oracle"]
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


def plot(results: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Accuracy vs communication (fraction of cloud-only tokens), one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")  # no display here; files only
    import matplotlib.pyplot as plt

    cols = 3
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, result in zip(axes.flat, results, strict=False):
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
        ax.set_title(f"{result['dataset']} (n={result['n']})")
        ax.set_xlabel("communication / cloud-only (prompt tokens)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(traces: Path, out: Path) -> list[Path]:
    """Gzip every recorded `*.jsonl` trace in `traces` (the committed form), replay every `*.jsonl.gz`,
    write results.md, results.json and the plot."""
    for plain in sorted(traces.glob("*.jsonl")):
        compress(plain, plain.with_name(plain.name + ".gz"))
    files = sorted(traces.glob("*.jsonl.gz"))
    results = [replay_trace_file(f) for f in files]
    # Classification datasets first, generation last, each alphabetically: a stable table.
    results.sort(key=lambda r: (r["task"] != "classification", r["dataset"]))
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(json.dumps({"results": results, "comparison": [matched_comparison(r) for r in results]},
                                    indent=1) + "\n", encoding="utf-8")
    sections = ["# RecServe evaluation results", "",
                "Generated by `recserve eval report`; see README \"## Evaluation\" for how they were made.", "",
                "## RecServe (β=0.3, W=10000) vs CasServe at matched communication", "", claim_table(results), "",
                "## Main operating points", "",
                "\n".join([_HEADER] + [_row(r["dataset"], e) for r in results for e in main_rows(r)]), "",
                "## Every policy (sweeps)", ""]
    for result in results:
        sections += [f"### {result['dataset']}", "", policy_table(result), ""]
    md_path = out / "results.md"
    md_path.write_text("\n".join(sections), encoding="utf-8")
    png_path = out / "accuracy_vs_communication.png"
    plot(results, png_path)
    return [md_path, json_path, png_path]
