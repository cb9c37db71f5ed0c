"""`recserve eval bfcl report` on a hand-made trace of real BFCL items: tier accuracy, estimator AUROC,
the validity gate in replay, the a-priori choice and its report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from gateway.evaluation import bfcl
from gateway.evaluation.bfcl_record import trace_path
from gateway.evaluation.bfcl_replay import FLOOR, SEEDS, validity
from gateway.evaluation.bfcl_report import evaluate, write_report
from gateway.evaluation.record import open_text
from gateway.local.paths import default_layout

CATEGORIES = ("simple_python", "multiple", "live_simple")


@pytest.fixture(scope="module")
def items() -> dict[str, bfcl.Item]:
    root = bfcl.ensure_cached(default_layout())
    return {item.id: item for category in CATEGORIES for item in bfcl.load_items(root, category)[:12]}


def _right(item: bfcl.Item) -> dict[str, Any]:
    assert item.ground_truth is not None
    ((name, params),) = item.ground_truth[0].items()
    arguments = {k: v[0] for k, v in params.items() if v and v[0] != ""}
    return {"content": None, "tool_calls": [{"type": "function", "function": {
        "name": bfcl.tool_name(name), "arguments": json.dumps(arguments)}}]}


def _row(item: bfcl.Item, tier: str, correct: bool, value_p: float, message: dict[str, Any] | None = None,
         ) -> dict[str, Any]:
    # The form's tokens are forced (p 1); the one value token carries the tier's doubt.
    tokens = [['[{"name": "', 0.0], ["f", math.log(value_p)], ['", "arguments": {}}]', 0.0]]
    return {"id": item.id, "category": item.category, "tier": tier, "message": message or _right(item),
            "tokens": tokens, "correct": correct, "prompt_tokens": 100, "completion_tokens": 10, "latency_s": 1.0}


def _write(folder: Path, rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        with open_text(trace_path(folder, row["tier"]), "at") as fh:
            fh.write(json.dumps(row) + "\n")


def test_the_report_replays_every_line_up_and_chooses_on_the_tuning_categories(items: dict[str, bfcl.Item],
                                                                               tmp_path: Path) -> None:
    rows = []
    for k, item in enumerate(items.values()):
        edge_right = k % 4 != 0  # the edge is wrong on every fourth item, and unsure exactly there
        rows += [_row(item, "device", False, 0.3),
                 _row(item, "edge", edge_right, 0.95 if edge_right else 0.4),
                 _row(item, "cloud", True, 0.9)]
    broken = next(iter(items.values()))  # a confident device call of a tool that was never offered
    rows.append(_row(broken, "device", False, 0.99, {"content": None, "tool_calls": [
        {"type": "function", "function": {"name": "not_offered", "arguments": "{}"}}]}))
    _write(tmp_path, rows)

    assert not validity(items)(rows[-1]) and validity(items)(rows[1])
    results = evaluate(tmp_path, items)
    assert results["n"] == len(items)
    assert results["tiers"]["all"]["edge"] == pytest.approx(0.75) and results["tiers"]["all"]["cloud"] == 1.0
    # The value tokens alone rank the edge's right calls above its wrong ones; every token averaged, less so.
    assert results["auroc"]["structured_mean"]["edge/all"] == 1.0
    assert results["auroc"]["whole"]["edge/all"] == 1.0  # here the form is forced at p 1: same ranking
    three = results["lineups"]["three tiers"]
    chosen = three["chosen"]
    assert chosen is not None and chosen.split()[0] in ("recserve", "casserve", "quality")
    tuning = three["streams"]["tuning"]["policies"][chosen]
    assert tuning["holds"] and len(tuning["ratio"]) == len(SEEDS) and min(tuning["ratio"]) >= FLOOR
    mixed = three["streams"]["mixed"]["policies"]
    assert mixed["device-only"]["median_accuracy"] == 0.0 and mixed["cloud-only"]["below_top_min"] == 0.0
    assert mixed["edge-only"]["below_top_min"] == 1.0
    # The device's confident call of a tool never offered: served when pinned, never by a cascade.
    device_rows = {row["id"]: row for row in rows if row["tier"] == "device"}  # the last row of an item wins
    invalid_at_device = sum(not validity(items)(row) for row in device_rows.values())
    assert invalid_at_device >= 1 and mixed["device-only"]["invalid_served_max"] == invalid_at_device
    assert all(entry["invalid_served_max"] == 0 for policy, entry in mixed.items()
               if policy.split()[0] in ("recserve", "casserve", "quality"))
    assert set(results["lineups"]["edge → cloud"]["streams"]["mixed"]["policies"]) >= {"edge-only", "cloud-only"}

    written = write_report(tmp_path, tmp_path / "out", items)
    text = written[0].read_text(encoding="utf-8")
    assert f"**`{chosen}`**" in text and "| simple_python |" in text and "structured_joint (default)" in text
    assert "Invalid lower-tier answers served, most in any cascading setting and seed: 0." in text
    assert "items all of them answered" not in text  # every line-up replays the items of every tier
    assert written[2].stat().st_size > 10_000  # the plot
    assert json.loads(written[1].read_text(encoding="utf-8"))["lineups"]["three tiers"]["chosen"] == chosen


def test_the_forms_are_compared_on_the_items_every_form_answered(items: dict[str, bfcl.Item],
                                                                 tmp_path: Path) -> None:
    from gateway.evaluation.bfcl_forms import compare, render

    chosen = list(items.values())[:6]
    prose = {"content": "I would call a function.", "tool_calls": []}
    _write(tmp_path / "forms" / "native", [_row(item, "edge", False, 0.9, prose) for item in chosen])
    _write(tmp_path / "forms" / "list", [_row(item, "edge", k % 2 == 0, 0.9 if k % 2 == 0 else 0.5)
                                         for k, item in enumerate(chosen)])
    # call_or_list answered all but the last item: the comparison pairs the five every form answered.
    _write(tmp_path / "forms" / "call_or_list", [_row(item, "edge", True, 0.9) for item in chosen[:-1]])
    _write(tmp_path / "forms" / "list", [_row(item, "cloud", True, 0.9) for item in chosen])  # one form only
    compared = compare(tmp_path / "forms", items, ("device", "edge", "cloud"))
    assert list(compared) == ["edge"] and compared["edge"]["n"] == 5
    forms = compared["edge"]["forms"]
    assert (forms["native"]["accuracy"], forms["native"]["calls"]) == (0.0, 0.0)
    assert forms["list"]["accuracy"] == 3 / 5 and forms["list"]["auroc"] == 1.0  # sure exactly where right
    assert forms["call_or_list"]["accuracy"] == 1.0 and forms["call_or_list"]["auroc"] is None  # no wrong one
    lines = render(compared)
    assert "| edge | `list` | 5 | 60.0% |" in "\n".join(lines)
    assert render({}) == []


def test_a_line_up_recorded_further_than_every_tier_shows_its_tiers_on_its_own_items(
        items: dict[str, bfcl.Item], tmp_path: Path) -> None:
    chosen = list(items.values())
    rows = [_row(item, tier, tier == "cloud" or k % 2 == 0, 0.9) for k, item in enumerate(chosen)
            for tier in ("edge", "cloud")]
    rows += [_row(item, "device", False, 0.3) for item in chosen[:6]]  # the device answered only six
    _write(tmp_path, rows)
    results = evaluate(tmp_path, items)
    assert results["n"] == 6 and results["tiers"]["all"]["n"] == 6
    pair = results["lineups"]["edge → cloud"]
    assert pair["streams"]["mixed"]["n"] == len(chosen)
    assert pair["tier_accuracy"]["all"] == {"n": len(chosen), "edge": 0.5, "cloud": 1.0,
                                            "errors": {"edge": 0, "cloud": 0}}
    text = write_report(tmp_path, tmp_path / "out", items)[0].read_text(encoding="utf-8")
    assert text.count("items all of them answered") == 1  # the edge → cloud line-up's, not the three tiers'
    assert f"on the {len(chosen)} items all of them answered" in text
    assert f"| all | {len(chosen)} | 50.0% | 100.0% |" in text
