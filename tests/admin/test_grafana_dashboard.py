"""docker/grafana-dashboard.json is importable JSON whose every query names metrics the gateway exports, and
whose "communication saved" is the gateway's own figure (probes included)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ask
from tests.support.scripted_tier import ThreadedTier
from tests.test_quality_policy import probes_settle, prompt
from tests.test_quality_probes import scrape

from .conftest import FileGateway, FileGatewayStarter
from .test_windows_reset import QUALITY

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana-dashboard.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_every_dashboard_query_uses_exported_metrics(file_gateway: FileGateway) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "recserve-gateway"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    with file_gateway.sdk() as sdk:
        ask(sdk, "a [device:0.9]", max_tokens=16)
        ask(sdk, "b [device:0.1][edge:0.9]", max_tokens=16)
    exported = httpx.get(file_gateway.root + "/metrics").text
    families = set(re.findall(r"^# TYPE (\S+) ", exported, flags=re.MULTILINE))
    used = {name for expr in _queries(dashboard) for name in re.findall(r"\brecserve_[a-z_]+", expr)}
    assert len(used) >= 12
    for name in sorted(used):
        base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
        assert base in families or name in families, f"{name} is not exported"
    # "Communication saved" is one PromQL ratio of two exported counters.
    assert any("recserve_uplink_prompt_tokens_total" in e and "recserve_cloud_only_prompt_tokens_total" in e
               for e in _queries(dashboard))


def _saved_expr(dashboard: dict[str, Any]) -> str:
    panel = next(p for p in dashboard["panels"] if p["title"].startswith("Communication saved vs cloud-only (prompt"))
    expr: str = panel["targets"][0]["expr"]
    return expr


def _evaluate(expr: str, totals: dict[str, float]) -> float:
    """The ratio on counters that started at zero: each `sum(rate(m[...]))` becomes m's total over every
    label set (a rate over a range holding all the traffic divides out), `(x or vector(0))` is x or 0
    when m has no series yet; what is left must be plain arithmetic."""
    rate = r"sum\(rate\((recserve_[a-z_]+)\[\$__rate_interval\]\)\)"
    text = re.sub(r"\(" + rate + r" or vector\(0\)\)", lambda m: repr(totals.get(m.group(1), 0.0)), expr)
    text = re.sub(rate, lambda m: repr(totals[m.group(1)]), text)
    tree = ast.parse(text, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Div, ast.Mult)
    assert all(isinstance(node, allowed) for node in ast.walk(tree)), f"not plain arithmetic: {text}"
    value = eval(compile(tree, "<promql>", "eval"))
    assert isinstance(value, float)
    return value


def test_communication_saved_counts_probe_traffic_like_the_gateway(start_file_gateway: FileGatewayStarter,
                                                                   tiers: dict[str, ThreadedTier]) -> None:
    expr = _saved_expr(json.loads(DASHBOARD.read_text()))
    assert "recserve_probe_uplink_prompt_tokens_total" in expr
    gateway = start_file_gateway(QUALITY)
    with gateway.sdk() as sdk:
        for i in range(8):  # kept at the device and probed, until probes bypass it: then the edge answers
            ask(sdk, prompt(i, "no", 0.6), max_tokens=16)
            probes_settle(tiers)
    totals: dict[str, float] = {}
    for (name, _), value in scrape(gateway.root).items():
        totals[name] = totals.get(name, 0.0) + value
    assert totals["recserve_uplink_prompt_tokens_total"] > 0
    assert totals["recserve_probe_uplink_prompt_tokens_total"] > 0
    with gateway.admin() as http:
        communication = http.get("/admin/policy").json()["communication"]
    assert _evaluate(expr, totals) == pytest.approx(communication["saved"])
    # No series yet for a labelled counter (nothing went up): the panel still shows a number, not "No data".
    cold = {"recserve_cloud_only_prompt_tokens_total": totals["recserve_cloud_only_prompt_tokens_total"]}
    assert _evaluate(expr, cold) == 1.0
