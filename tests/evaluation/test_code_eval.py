"""The coding workload's replay and report on a hand-made HumanEval-shaped trace: line-ups take their
tiers from the right trace rows, sandbox verdicts are kept (not re-scored by the label checker), top-tier
traffic counts probes, the half-split tuner measures on the other half, and the report renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.evaluation.code_agreement import analyse, auc
from gateway.evaluation.code_eval import (
    LINEUPS,
    keep_curve,
    lineup_requests,
    replay_lineup,
    split_tuning,
    top_traffic,
)
from gateway.evaluation.code_report import write_code_report
from gateway.evaluation.commands import main
from gateway.evaluation.replay import Outcome

GOOD = "```python\ndef f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n```"
ALIKE = ("```python\ndef f(values):\n    # sum them\n    acc = 0\n    for v in values:\n        acc += v\n"
         "    return acc\n```")
BAD = "```python\ndef f(xs):\n    return len(xs)\n```"


def _row(index: int, tier: str, answer: str, correct: bool, confidence: float) -> dict[str, Any]:
    # "The answer is 7." would be right by GSM8K's checker for gold "7": the verdict must win.
    return {"dataset": "humaneval", "index": index, "tier": tier, "task": "generation", "labels": None,
            "gold": "7", "max_tokens": 512, "prompt": "p", "prompt_bytes": 100, "prompt_tokens": 40,
            "latency_s": 1.0, "answer": answer + " The answer is 7.", "correct": correct,
            "tests": "passed" if correct else "AssertionError", "confidence": confidence}


def _trace(n: int = 40) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        edge_right = i % 3 != 0  # wrong on both halves alike
        rows += [_row(i, "device", BAD, False, 0.99 - 0.01 * (i % 7)),
                 _row(i, "edge", ALIKE if edge_right else BAD, edge_right, 0.97 if edge_right else 0.9),
                 _row(i, "cloud", GOOD, True, 0.98)]
    return rows


def test_the_laptop_line_up_is_the_edge_and_cloud_rows_with_their_verdicts() -> None:
    requests = lineup_requests(_trace(8), LINEUPS["laptop"])
    assert [r.index for r in requests] == list(range(8))
    assert set(requests[0].answers) == {"laptop", "cloud"}
    assert [r.answers["laptop"].correct for r in requests] == [i % 3 != 0 for i in range(8)]
    assert not any(r.answers["laptop"].correct for r in lineup_requests(_trace(8), {"laptop": "device"}))


def test_a_failed_call_leaves_the_problem_out_of_that_line_up_only() -> None:
    rows = _trace(4)
    rows[0] = {**rows[0], "error": "APITimeoutError"}  # problem 0's device call
    del rows[0]["answer"]
    assert [r.index for r in lineup_requests(rows, LINEUPS["three-tier"])] == [1, 2, 3]
    assert [r.index for r in lineup_requests(rows, LINEUPS["laptop"])] == [0, 1, 2, 3]


def test_top_traffic_counts_paths_and_probes() -> None:
    outcomes = [Outcome("laptop", ["laptop"], kept=True), Outcome("cloud", ["laptop", "cloud"]),
                Outcome("laptop", ["laptop"], kept=True, probes=["cloud"])]
    assert top_traffic(outcomes, "cloud") == 2 / 3


def test_every_policy_is_replayed_and_the_pins_are_the_tiers() -> None:
    requests = lineup_requests(_trace(), LINEUPS["laptop"])
    entries = replay_lineup(requests, ("laptop", "cloud"))
    pins = {e["policy"]: e for e in entries if e["policy"].startswith("pinned/")}
    assert pins["pinned/cloud"]["pass_at_1"] == 1.0 and pins["pinned/cloud"]["top_traffic"] == 1.0
    assert pins["pinned/laptop"]["pass_at_1"] == 26 / 40 and pins["pinned/laptop"]["top_traffic"] == 0.0
    # The edge is surer when right: CasServe at 0.95 escalates exactly the wrong third.
    casserve = next(e for e in entries if e["policy"] == "casserve" and e["params"]["threshold"] == 0.95)
    assert casserve["pass_at_1"] == 1.0 and casserve["top_traffic"] == 14 / 40
    assert {e["params"]["agreement"] for e in entries if e["policy"] == "quality"} == {"token_f1", "code"}


def test_the_keep_curve_keeps_the_most_confident_first() -> None:
    requests = lineup_requests(_trace(), LINEUPS["laptop"])
    curve = keep_curve(requests, "laptop", "cloud", shares=(0.5, 0.9))
    # 26 right answers at 0.97 rank before the 14 wrong ones at 0.9.
    assert curve[0] == {"kept_share": 0.5, "kept_pass": 1.0, "top_on_kept": 1.0, "pass_at_1": 1.0, "of_top": 1.0,
                        "min_confidence_kept": 0.97}
    assert curve[1]["kept_share"] == 0.9 and curve[1]["pass_at_1"] == (26 + 4) / 40


def test_split_tuning_measures_on_the_other_half() -> None:
    requests = lineup_requests(_trace(), LINEUPS["laptop"])
    results = split_tuning(requests, ("laptop", "cloud"))
    assert {(r["family"], r["tuned_on"]) for r in results} == {
        (f, h) for f in ("recserve", "casserve", "quality (code agreement)") for h in ("even", "odd")}
    casserve = [r for r in results if r["family"] == "casserve"]
    assert all(r["n"] == 20 and r["held_on_tuning"] for r in casserve)
    # Any threshold between the wrong answers' 0.9 and the right ones' 0.97 splits them; the least
    # top-tier traffic on the tuning half is the first of them.
    assert all(r["setting"] == 0.92 and r["of_cloud"] == 1.0 and r["top_traffic"] == 7 / 20 for r in casserve)


def test_code_agreement_separates_alike_from_unlike_answers() -> None:
    analysis = analyse(_trace(), ["edge"], "cloud")
    assert analysis["pairs"] == 40
    code = analysis["measures"]["code bag-F1 (code_similarity)"]
    assert code["auc"] == 1.0 and code["on_odd"]["precision"] == 1.0
    assert auc([0.1, 0.2], [True, True]) != auc([0.1, 0.2], [True, True])  # nan: one class only


def test_the_report_writes_json_and_markdown(tmp_path: Path) -> None:
    trace = tmp_path / "humaneval.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in _trace()), encoding="utf-8")
    sections = write_code_report(trace, tmp_path)
    text = "\n".join(sections)
    assert "### laptop: laptop (edge) → cloud, 40 problems" in text
    assert "| pinned/cloud | — | 100.0 % | 100.0 % | 100.0 % | 0.0 % | 1.00 |" in text
    saved = json.loads((tmp_path / "humaneval.json").read_text(encoding="utf-8"))
    assert set(saved["lineups"]) == {"three-tier", "laptop"}
    assert len(saved["lineups"]["laptop"]["defaults"]["code"]) == 10


def test_recserve_eval_code_gzips_a_finished_recording_and_reports(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "humaneval.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in _trace(10)), encoding="utf-8")
    assert main(["code", "--trace", str(trace)]) == 0
    assert (tmp_path / "humaneval.jsonl.gz").is_file()
    assert (tmp_path / "humaneval.md").read_text(encoding="utf-8").startswith("## Coding workload (HumanEval)")
    assert "### three-tier: device → edge → cloud, 10 problems" in capsys.readouterr().out
