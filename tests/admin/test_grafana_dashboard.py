"""docker/grafana-dashboard.json is importable JSON whose every query names metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ask

from .conftest import FileGateway

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
