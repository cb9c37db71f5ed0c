"""The running totals and the cached label children the request path updates."""

from __future__ import annotations

from prometheus_client import generate_latest

from gateway.telemetry.metrics import Metrics, Traffic
from gateway.telemetry.savings import RequestCost, WorkloadSavings, share


def test_share_is_none_without_a_baseline() -> None:
    assert share(1, 4) == 0.25
    assert share(3, 0) is None and share(0, -1) is None


def test_traffic_tallies_answered_requests_and_saved_share() -> None:
    traffic = Traffic()
    assert traffic.saved() is None
    traffic.count_request("device")
    traffic.count_request(None)  # a failed cascade: counted, no tier tallied
    traffic.cloud_only_tokens, traffic.uplink_tokens, traffic.probe_uplink_tokens = 100, 20, 5
    assert traffic.requests == 2 and dict(traffic.served) == {"device": 1}
    assert traffic.saved() == 0.75


def test_workload_savings_tally_failed_requests_under_none() -> None:
    savings = WorkloadSavings()
    savings.count(RequestCost(prompt_tokens=10, reached_top=True, uplink_tokens=10), "cloud")
    savings.count(RequestCost(prompt_tokens=4), None)
    assert savings.requests == 2 and dict(savings.served) == {"cloud": 1, "none": 1}
    shown = savings.to_json()
    assert shown["below_top"] == {"requests": 1, "requests_share": 0.5, "prompt_tokens": 4,
                                  "prompt_tokens_share": 4 / 14}
    assert shown["communication"]["vs_top_tier_only"] == 10 / 14
    assert shown["spend"]["vs_top_tier_only"] is None  # no prices: no baseline


def test_cached_children_count_as_labels_does() -> None:
    cached, plain = Metrics(), Metrics()
    for _ in range(3):
        cached.request_finished("chat/completions", "device", "generation", 200, 0.002, 0.0004)
        cached.confidence_at("device", "generation").observe(0.7)
        cached.escalations_at("device", "fault").inc()
        plain.requests.labels("chat/completions", "device", "generation", "200").inc()
        plain.request_latency.labels("chat/completions").observe(0.002)
        plain.overhead.labels("chat/completions").observe(0.0004)
        plain.confidence.labels("device", "generation").observe(0.7)
        plain.escalations.labels("device", "fault").inc()
    assert cached.confidence_at("device", "generation") is cached.confidence.labels("device", "generation")
    assert _samples(cached) == _samples(plain)


def _samples(metrics: Metrics) -> list[bytes]:
    # Everything but the `_created` timestamps, which differ between any two registries.
    return [line for line in generate_latest(metrics.registry).splitlines() if b"_created" not in line]
