"""The report: gzipped traces, the markdown table, the JSON and the plot from a tiny trace folder."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.evaluation.record import read_trace
from gateway.evaluation.report import write_report
from gateway.evaluation.report_common import interpolate
from tests.evaluation.test_replay_metrics import _rows


def test_write_report(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "toy.jsonl").write_text("".join(json.dumps(row) + "\n" for row in _rows()), encoding="utf-8")
    written = write_report(traces, tmp_path / "out")
    assert read_trace(traces / "toy.jsonl.gz") == _rows()  # the committed, compressed form
    md, js, png = written
    text = md.read_text(encoding="utf-8")
    assert "| toy | cloud-only | 0.667 |" in text and "RecServe β=0.3 W=10000" in text
    result = json.loads(js.read_text(encoding="utf-8"))["results"][0]
    assert result["n"] == 3 and {p["policy"] for p in result["policies"]} >= {"oracle", "casserve", "recserve"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interpolate_clamps_and_interpolates() -> None:
    curve = [(0.0, 0.4), (1.0, 0.8), (2.0, 0.9)]
    assert abs(interpolate(curve, 0.5) - 0.6) < 1e-12
    assert interpolate(curve, -1) == 0.4 and interpolate(curve, 5) == 0.9
