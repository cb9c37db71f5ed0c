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
    # The envelope verdict's three views: the target sweep at β 0.3, the β sweep at t=0.9, per target.
    assert "### Target sweep at β=0.3" in text and "### β sweep (0.1-0.7) at t=0.9" in text
    assert "### Per target: datasets on or above the envelope" in text
    assert "On or above the envelope (target: ≥ 6 of 8 datasets), cold: β sweep 0.1-0.7 at t=0.9: " in text
    data = json.loads(js.read_text(encoding="utf-8"))
    quality = data["quality"][0]
    assert quality["envelope_beta"]["points"] == 7 and quality["envelope_beta"]["target"] == 0.9
    assert quality["warm_envelope_beta"] is None  # the steady state is run at β 0.3 only
    assert [v["target"] for v in quality["envelope_by_target"]] == [0.6, 0.7, 0.8, 0.85, 0.9, 0.95]
    counts = data["quality_envelope_counts"]
    assert counts["cold"]["beta_sweep"]["of"] == 1 and counts["steady state"]["beta_sweep"] is None


def test_interpolate_clamps_and_interpolates() -> None:
    curve = [(0.0, 0.4), (1.0, 0.8), (2.0, 0.9)]
    assert abs(interpolate(curve, 0.5) - 0.6) < 1e-12
    assert interpolate(curve, -1) == 0.4 and interpolate(curve, 5) == 0.9
