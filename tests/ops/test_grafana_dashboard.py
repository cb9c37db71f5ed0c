"""docker/grafana-dashboard.json is importable JSON whose every query names metrics the gateway exports, and
whose "communication saved" and savings figures are the gateway's own (probes included)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cascade.test_quality_policy import probes_settle, prompt
from tests.cascade.test_quality_probes import scrape
from tests.conftest import ask
from tests.support.scripted_tier import ThreadedTier

from .conftest import FileGateway, FileGatewayStarter
from .test_savings import savings_config, send_mix
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
    when m has no series yet; what is left must be plain arithmetic. The `$tenant` and `$workload`
    selectors are left to the caller, who sums only the chosen series into `totals`."""
    chosen = r"(?:\{tenant=~\"\$tenant\",workload=~\"\$workload\"\})?"
    rate = r"sum\(rate\((recserve_[a-z_]+)" + chosen + r"\[\$__rate_interval\]\)\)"
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


SAVINGS_STATS = {  # stat panel -> its figure in /admin/policy's savings.total
    "Requests that never reached the top tier": ("below_top", "requests_share"),
    "Prompt tokens that never reached the top tier": ("below_top", "prompt_tokens_share"),
    "Weighted communication vs top-tier-only": ("weighted_communication", "vs_top_tier_only"),
    "Spend vs top-tier-only": ("spend", "vs_top_tier_only"),
}


def test_savings_panels_are_the_gateways_own_figures(start_file_gateway: FileGatewayStarter,
                                                     tiers: dict[str, ThreadedTier]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    gateway = start_file_gateway(savings_config(tiers))
    with gateway.sdk() as sdk:
        send_mix(gateway.root, sdk)
    samples = scrape(gateway.root)
    with gateway.admin() as http:
        savings = http.get("/admin/policy").json()["savings"]
    # $workload = All, one workload, one tenant: the stat panels show the gateway's total, then their figures.
    for chosen, figures in ((None, savings["total"]), (("workload", "bot"), savings["workloads"]["bot"]),
                            (("tenant", "open"), savings["tenants"]["open"]["total"])):
        totals: dict[str, float] = {}
        for (name, labels), number in samples.items():
            if chosen is None or chosen in labels:
                totals[name] = totals.get(name, 0.0) + number
        for title, (section, key) in SAVINGS_STATS.items():
            expr = panels[title]["targets"][0]["expr"]
            assert '{tenant=~"$tenant",workload=~"$workload"}' in expr, title
            assert _evaluate(expr, totals) == pytest.approx(figures[section][key]), (chosen, title)
    assert savings["total"]["below_top"]["requests_share"] != savings["workloads"]["bot"]["below_top"]["requests_share"]
    for name in ("tenant", "workload"):
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == name)
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
    # Per workload: one series per workload, answering tier stacked.
    by_workload = [e for p in dashboard["panels"] for e in (t["expr"] for t in p.get("targets", []))
                   if "by (workload" in e]
    assert any("recserve_workload_requests_total" in e and "tier" in e for e in by_workload)
    assert any("recserve_workload_spend_usd_total" in e for e in by_workload)
    assert any("recserve_workload_weighted_uplink_tokens_total" in e for e in by_workload)
