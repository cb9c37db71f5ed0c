"""What the report's tables and plots share: the main operating points, the quality curve's points,
the interpolation of a sweep's curve, and the panel layout of the plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from gateway.evaluation.record import TIERS
from gateway.evaluation.replay_quality import DEFAULT_OPTIONS, MAIN_BETA

# The operating points of the main table: the config's CasServe θ and the authors' β / W; the quality
# policy at its default target with the config's probe rate.
MAIN_THRESHOLD = 0.8
MAIN_WINDOW = 10000
MAIN_TARGET = 0.9
DEFAULT_PROBE_RATE = DEFAULT_OPTIONS.probe_rate


def _quality_runs(result: Mapping[str, Any], probe_rate: float, warm: bool, warmup: int | None,
                  answer: str | None) -> list[Mapping[str, Any]]:
    """The quality policy's runs at a probe rate, cold or warm, warm-up length and warm-up answer (defaults:
    the result's main `quality_warmup` and `quality_warmup_answer`): every target x β that was run."""
    warmup = result.get("quality_warmup") if warmup is None else warmup
    answer = result.get("quality_warmup_answer") if answer is None else answer
    return [e for e in result["policies"] if e["policy"] == "quality"
            and e["params"]["probe_rate"] == probe_rate and bool(e["params"].get("warm")) == warm
            and (warmup is None or e["params"].get("warmup_probes") == warmup)
            and (answer is None or e["params"].get("warmup_answer") == answer)]


def quality_curve(result: Mapping[str, Any], probe_rate: float, warm: bool = False,
                  warmup: int | None = None, answer: str | None = None) -> list[Mapping[str, Any]]:
    """The quality policy's target sweep at the main β, the given probe rate, warm-up length and warm-up
    answer (defaults: the result's main `quality_warmup` and `quality_warmup_answer`), by target."""
    return sorted((e for e in _quality_runs(result, probe_rate, warm, warmup, answer)
                   if e["params"]["beta"] == MAIN_BETA), key=lambda e: e["params"]["target"])


def quality_targets(result: Mapping[str, Any], probe_rate: float, warm: bool = False) -> list[float]:
    """The targets the quality policy ran at (any β), ascending."""
    return sorted({e["params"]["target"] for e in _quality_runs(result, probe_rate, warm, None, None)})


def quality_beta_curve(result: Mapping[str, Any], probe_rate: float, target: float = MAIN_TARGET,
                       warm: bool = False) -> list[Mapping[str, Any]]:
    """The quality policy's β sweep at the target nearest `target` (the main warm-up length and answer,
    the given probe rate), by β: every β it ran at there (only β 0.3 where only that was run)."""
    runs = _quality_runs(result, probe_rate, warm, None, None)
    if not runs:
        return []
    nearest = min({e["params"]["target"] for e in runs}, key=lambda t: abs(t - target))
    return sorted((e for e in runs if e["params"]["target"] == nearest), key=lambda e: e["params"]["beta"])


def quality_main(result: Mapping[str, Any], probe_rate: float, warm: bool = False,
                 warmup: int | None = None, answer: str | None = None) -> Mapping[str, Any]:
    """The main quality point: the target nearest MAIN_TARGET (it is MAIN_TARGET unless --targets omits it)."""
    return min(quality_curve(result, probe_rate, warm, warmup, answer),
               key=lambda e: abs(e["params"]["target"] - MAIN_TARGET))


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


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Accuracy of a sweep's piecewise-linear curve at communication `x` (clamped at its ends)."""
    ordered = sorted(points)
    if x <= ordered[0][0]:
        return ordered[0][1]
    for (x0, y0), (x1, y1) in pairwise(ordered):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ordered[-1][1]


def acc_comm(entry: Mapping[str, Any]) -> str:
    """A table cell: accuracy / communication vs cloud-only."""
    return f"{entry['accuracy']:.3f} / {entry['comm_vs_cloud']:.2f}"


def panels(results: Sequence[Mapping[str, Any]], path: Path, draw: Callable[[Any, Mapping[str, Any]], None],
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
