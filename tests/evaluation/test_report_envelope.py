"""The envelope verdict's three views on hand-made results: the target sweep at β 0.3, the β sweep at the
main target (0.9), and per target; cold and in the steady state (run at β 0.3 only)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.evaluation.report_envelope import (
    beta_envelope,
    beta_envelope_table,
    envelope_by_target,
    envelope_counts,
    target_envelope_table,
)
from gateway.evaluation.report_quality import goal_lines, quality_summary, slim

N = 100  # half an example of slack: 0.005


def _entry(policy: str, comm: float, accuracy: float, **params: Any) -> dict[str, Any]:
    return {"policy": policy, "params": params, "comm_vs_cloud": comm, "accuracy": accuracy}


def _quality(target: float, beta: float, margin: float, *, comm: float = 0.5, warm: bool = False,
             probe_rate: float = 0.05, warmup: int = 20) -> dict[str, Any]:
    """A quality run `margin` above the envelope (0.3 + 0.4 x here) at communication `comm`."""
    return _entry("quality", comm, 0.3 + 0.4 * comm + margin, target=target, beta=beta, probe_rate=probe_rate,
                  warm=warm, warmup_probes=warmup, warmup_answer="top")


def _result(dataset: str, quality: list[dict[str, Any]]) -> dict[str, Any]:
    # Envelope: (0, 0.3), (0.5, 0.5), (1, 0.7), i.e. 0.3 + 0.4 x up to x = 1, flat 0.7 beyond.
    return {"dataset": dataset, "n": N, "quality_warmup": 20, "quality_warmup_answer": "top", "policies": [
        _entry("cloud-only", 1.0, 0.8), _entry("casserve", 0.0, 0.3, threshold=0.2),
        _entry("casserve", 1.0, 0.7, threshold=0.8), _entry("recserve", 0.5, 0.5, beta=0.3, window=10000),
        *quality]}


def _toy() -> dict[str, Any]:
    """On or above at t=0.9 for every β; at t=0.6 its β 0.3 point is 10 examples below. Steady state at
    β 0.3 only, on or above. Runs that are not the main view's (another probe rate, another warm-up
    length) are far below and must not count."""
    cold = [_quality(0.9, beta, 0.05, comm=0.2 * i) for i, beta in enumerate((0.1, 0.3, 0.5))]
    cold += [_quality(0.6, 0.1, 0.02), _quality(0.6, 0.3, -0.1), _quality(0.6, 0.5, 0.0)]
    warm = [_quality(t, 0.3, 0.01, warm=True) for t in (0.6, 0.9)]
    others = [_quality(0.9, 0.3, -0.3, probe_rate=0.02), _quality(0.9, 0.3, -0.3, warmup=0)]
    return _result("toy", cold + warm + others)


def _other() -> dict[str, Any]:
    """Below at t=0.6 for every β; at t=0.9 only its β 0.1 point is below (2 examples)."""
    cold = [_quality(0.6, beta, -0.05) for beta in (0.1, 0.3, 0.5)]
    cold += [_quality(0.9, 0.1, -0.02), _quality(0.9, 0.3, 0.004), _quality(0.9, 0.5, 0.1)]
    warm = [_quality(t, 0.3, -0.02, warm=True) for t in (0.6, 0.9)]
    return _result("other", cold + warm)


def test_on_across_beta_at_the_main_target_but_below_at_a_low_target() -> None:
    summary = quality_summary(_toy(), 0.05)
    # (a) the target sweep at β 0.3: its t=0.6 point is 10 examples below.
    assert summary["envelope"]["verdict"] is False and summary["envelope"]["on_or_above"] == 1
    assert summary["envelope"]["below"] == [0.6] and summary["envelope"]["worst_margin_examples"] == pytest.approx(-10)
    # (b) the β sweep at t=0.9: every β on or above, 5 examples up.
    beta = summary["envelope_beta"]
    assert beta["verdict"] is True and (beta["on_or_above"], beta["points"]) == (3, 3)
    assert beta["target"] == 0.9 and beta["sweep"] == "beta" and list(beta["margins"]) == [0.1, 0.3, 0.5]
    assert beta["worst_margin_examples"] == pytest.approx(5) and beta["below"] == []
    # The steady state ran at β 0.3 only: no β sweep there; its target sweep is on or above.
    assert summary["warm_envelope_beta"] is None and summary["warm_envelope"]["verdict"] is True
    # (c) per target: the β sweep and the β 0.3 point.
    by_target = {v["target"]: v for v in summary["envelope_by_target"]}
    assert by_target[0.6]["beta_sweep"]["verdict"] is False and by_target[0.6]["beta_sweep"]["below"] == [0.3]
    assert by_target[0.6]["main_beta"]["verdict"] is False and by_target[0.9]["main_beta"]["verdict"] is True
    assert by_target[0.9]["beta_sweep"]["on_or_above"] == 3
    assert [(v["target"], v["beta_sweep"], v["main_beta"]["verdict"]) for v in summary["warm_envelope_by_target"]] \
        == [(0.6, None, True), (0.9, None, True)]
    assert slim(summary)["envelope_beta"] == beta  # kept whole in results.json


def test_a_single_beta_has_no_beta_sweep() -> None:
    result = _result("one", [_quality(t, 0.3, 0.0) for t in (0.6, 0.9)])
    assert beta_envelope(result, 0.05) is None
    assert [v["beta_sweep"] for v in envelope_by_target(result, 0.05)] == [None, None]


def test_per_target_counts_and_the_goal_line() -> None:
    mixed = {**_other(), "dataset": "mixed"}  # the mixed stream is not a dataset: never counted
    summaries = [quality_summary(r, 0.05) for r in (_toy(), _other(), mixed)]
    counts = envelope_counts(summaries)
    cold, warm = counts["cold"], counts["steady state"]
    assert cold["target_sweep"] == {"on_or_above": 0, "of": 2, "below": ["toy", "other"]}
    assert cold["beta_sweep"] == {"on_or_above": 1, "of": 2, "below": ["other"]}
    assert cold["by_target"] == [
        {"target": 0.6, "beta_sweep": {"on_or_above": 0, "of": 2, "below": ["toy", "other"]},
         "main_beta": {"on_or_above": 0, "of": 2, "below": ["toy", "other"]}},
        {"target": 0.9, "beta_sweep": {"on_or_above": 1, "of": 2, "below": ["other"]},
         "main_beta": {"on_or_above": 2, "of": 2, "below": []}}]
    assert warm["beta_sweep"] is None and warm["target_sweep"] == {"on_or_above": 1, "of": 2, "below": ["other"]}
    assert [(row["target"], row["beta_sweep"], row["main_beta"]["on_or_above"]) for row in warm["by_target"]] \
        == [(0.6, None, 1), (0.9, None, 1)]

    goal2 = goal_lines(summaries)[2]
    assert goal2.startswith("On or above the envelope (target: ≥ 6 of 8 datasets), cold: ")
    assert "β sweep 0.1-0.5 at t=0.9: 1 of 2; target sweep 0.6-0.9 at β=0.3: 0 of 2; " in goal2
    assert "at each target, its β sweep: t=0.6 0/2, t=0.9 1/2; at each target, its β=0.3 point: t=0.6 0/2, " \
           "t=0.9 2/2." in goal2
    assert "Steady state: no β sweep (run at β=0.3 only); target sweep 0.6-0.9 at β=0.3: 1 of 2; at each " \
           "target, its β=0.3 point: t=0.6 1/2, t=0.9 1/2." in goal2

    table = target_envelope_table(counts).splitlines()
    assert table[0] == ("| target | cold: β sweep on/above | below | cold: β=0.3 point on/above | below | "
                        "steady state: β=0.3 point on/above | below |")  # no steady-state β sweep: no column
    assert table[2:] == ["| 0.6 | 0/2 | toy, other | 0/2 | toy, other | 1/2 | other |",
                         "| 0.9 | 1/2 | other | 2/2 | - | 1/2 | other |"]
    beta_table = beta_envelope_table(summaries).splitlines()
    assert beta_table[0] == "| dataset | n | cold: points on/above | worst margin (examples) | below at β | verdict |"
    assert beta_table[2:] == ["| toy | 100 | 3/3 | +5.0 | - | on/above |",
                              "| other | 100 | 2/3 | -2.0 | 0.1 | below |",
                              "| mixed | 100 | 2/3 | -2.0 | 0.1 | below |"]
