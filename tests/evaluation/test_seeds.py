"""`recserve eval seeds`: the quality floor at its defaults, over seeds, per dataset and on the mixed
stream keyed by task and by workload."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from gateway.evaluation.replay import Request, requests_from_rows
from gateway.evaluation.seeds import render, seed_table
from tests.evaluation.test_replay_quality import _row


def _stream(dataset: str, device: Callable[[random.Random], tuple[str, float]], seed: int) -> list[Request]:
    """The device as given, the edge always wrong (never worth keeping), the cloud right and sure."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for index in range(400):
        answer, confidence = device(rng)
        rows += [_row(index, "device", answer, confidence, dataset),
                 _row(index, "edge", "no", round(rng.uniform(0.3, 0.99), 3), dataset),
                 _row(index, "cloud", "yes", 0.99, dataset)]
    return requests_from_rows(rows)


def _right_when_sure(rng: random.Random) -> tuple[str, float]:
    confidence = round(rng.uniform(0.3, 0.99), 3)
    return ("yes" if confidence > 0.6 else "no"), confidence


def test_keyed_by_workload_a_competent_tier_keeps_its_own_workload() -> None:
    # "good": the device is right whenever it is sure; "bad": the device is always wrong. Keyed by task,
    # the bad workload's probes drag the shared curve down and the device keeps almost nothing of
    # either; keyed by workload it keeps the good workload's sure answers. The floor holds both ways.
    good = _stream("good", _right_when_sure, seed=1)
    bad = _stream("bad", lambda rng: ("no", round(rng.uniform(0.3, 0.99), 3)), seed=2)
    rows = {row["stream"]: row for row in seed_table({"good": good, "bad": bad}, seeds=(0, 1, 2))}
    by_task, by_workload = rows["mixed, keyed by task"], rows["mixed, keyed by workload"]
    assert by_workload["kept_below_top_by_workload"]["good"] > by_task["kept_below_top_by_workload"]["good"] + 0.2
    assert by_workload["kept_below_top_by_workload"]["bad"] < 0.1
    for row in rows.values():
        assert len(row["ratio_by_seed"]) == 3 and row["holds"], row["stream"]
        assert row["ratio_min"] >= 0.95
    table = render(list(rows.values()), seeds=(0, 1, 2))
    assert "| mixed, keyed by workload | 800 |" in table and "| good |" in table
