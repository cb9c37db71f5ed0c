"""GET /metrics moves as scripted requests go through the cascade; label sets stay bounded."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ask

from .conftest import FileGateway, FileGatewayStarter

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(root: str) -> Samples:
    response = httpx.get(root + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_counters_follow_the_cascade(file_gateway: FileGateway) -> None:
    with file_gateway.sdk() as sdk:
        ask(sdk, "a [device:0.9]", max_tokens=16)                  # cold window: answered at the device
        ask(sdk, "b [device:0.1][edge:0.9]", max_tokens=16)        # below the quantile: escalates to edge
        ask(sdk, "c [device:status=500][edge:0.9]", max_tokens=16)  # fault at the device
        ask(sdk, "d [device:nologprobs][edge:0.9]", max_tokens=16)  # no confidence
    with httpx.Client(base_url=file_gateway.root) as http:
        assert http.post("/v1/chat/completions", content=b"{not json",
                         headers={"content-type": "application/json"}).status_code == 400
    m = scrape(file_gateway.root)
    route = "chat/completions"
    assert value(m, "recserve_requests_total", route=route, tier="device", task="generation", status="200") == 1
    assert value(m, "recserve_requests_total", route=route, tier="edge", task="generation", status="200") == 3
    assert value(m, "recserve_requests_total", route=route, tier="none", task="none", status="400") == 1
    assert value(m, "recserve_escalations_total", tier="device", reason="low_confidence") == 1
    assert value(m, "recserve_escalations_total", tier="device", reason="fault") == 1
    assert value(m, "recserve_escalations_total", tier="device", reason="no_confidence") == 1
    assert value(m, "recserve_confidence_count", tier="device", task="generation") == 2
    assert value(m, "recserve_confidence_count", tier="edge", task="generation") == 3
    assert value(m, "recserve_threshold", policy="recserve", tier="device", task="generation") > 0
    assert value(m, "recserve_request_latency_seconds_count", route=route) == 5
    assert value(m, "recserve_gateway_overhead_seconds_count", route=route) == 5
    assert value(m, "recserve_tier_latency_seconds_count", tier="device", outcome="ok") == 3
    assert value(m, "recserve_tier_latency_seconds_count", tier="device", outcome="fault") == 1
    assert value(m, "recserve_tier_latency_seconds_count", tier="edge", outcome="ok") == 3
    # Communication: three prompts went up to the edge; all four would have gone up cloud-only.
    cloud_only = value(m, "recserve_cloud_only_prompt_tokens_total")
    uplink = total(m, "recserve_uplink_prompt_tokens_total")
    assert uplink == value(m, "recserve_uplink_prompt_tokens_total", tier="edge") > 0
    assert 0 < uplink < cloud_only
    assert 0 < total(m, "recserve_uplink_bytes_total") < value(m, "recserve_cloud_only_bytes_total")
    assert value(m, "recserve_window_store_errors_total") == 0
    assert value(m, "recserve_config_version") == 0


def test_labels_stay_bounded_whatever_the_requests(file_gateway: FileGateway) -> None:
    with file_gateway.sdk() as sdk:
        for i in range(20):
            ask(sdk, f"distinct prompt {i} [device:0.{i % 9 + 1}][edge:0.9]", max_tokens=16,
                extra_headers={"x-request-id": f"req-{i}"})
    with httpx.Client(base_url=file_gateway.root) as http:
        http.get("/v1/nowhere/at/all")
    m = scrape(file_gateway.root)
    label_values = {v for (_, labels) in m for _, v in labels}
    assert not any(v.startswith("req-") or "prompt" in v for v in label_values)
    routes = {dict(labels).get("route") for (name, labels) in m if name == "recserve_requests_total"}
    assert routes == {"chat/completions", "other"}


def test_reload_and_policy_changes_are_counted(file_gateway: FileGateway) -> None:
    with file_gateway.admin() as http:
        assert http.patch("/admin/policy", json={"recserve": {"beta": 0.4}}).status_code == 200
        assert http.post("/admin/reload").status_code == 200
        file_gateway.write("tiers: 7")
        assert http.post("/admin/reload").status_code == 400
    m = scrape(file_gateway.root)
    assert value(m, "recserve_reloads_total", kind="policy", result="applied") == 1
    assert value(m, "recserve_reloads_total", kind="reload", result="applied") == 1
    assert value(m, "recserve_reloads_total", kind="reload", result="rejected") == 1
    assert value(m, "recserve_config_version") == 2


def test_two_gateways_in_one_process_count_apart(start_file_gateway: FileGatewayStarter) -> None:
    first = start_file_gateway()
    second = start_file_gateway()
    with first.sdk() as sdk:
        ask(sdk, "[device:0.9]", max_tokens=16)
    assert total(scrape(first.root), "recserve_requests_total") == 1
    assert total(scrape(second.root), "recserve_requests_total") == 0
