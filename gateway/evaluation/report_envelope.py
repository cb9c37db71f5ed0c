"""The quality policy's curve against the RecServe + CasServe upper envelope: the envelope, the
verdict of a curve, and the three views the report judges (the target sweep at the main β, the β sweep
at the main target, and each target alone), with their tables and counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.evaluation.replay_quality import MAIN_BETA
from gateway.evaluation.report_common import (
    interpolate,
    quality_beta_curve,
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
    """The verdict of the quality policy's β sweep at the main target (the policy's curve: the policy at
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


def envelope_counts_text(summaries: Sequence[Mapping[str, Any]]) -> str:
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


def beta_sections(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
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
