"""Prometheus metrics, one `CollectorRegistry` per app (never prometheus-client's global one, so
two gateways in one process — as in the tests — count apart). Label sets are bounded: tier names
come from the config, tasks, reasons and outcomes from fixed lists, status codes from HTTP, workloads
from the gateway's bounded set."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.telemetry.loop_watch import LOOP_BUCKETS, STALL_S
from gateway.telemetry.savings import RequestTally, SavingsLedger, share
from policies.stores.batched import BatchedWindowStore
from policies.structure import INVALID_REASONS

CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Why a tier passed a request up: the hop outcome/reason of the cascade folded into a fixed set (an
# answer whose structure was invalid counts under its reason: invalid_tool_call, invalid_json, ...).
ESCALATION_REASONS = ("low_confidence", "no_confidence", "fault", "busy", "budget", "warmup", *INVALID_REASONS)


_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


class Children(Generic[_Metric]):
    """A labelled metric's children, each looked up once per label values: `labels()` takes a lock
    and checks and converts its values on every call, on the request path several times a request.
    Holds no more entries than Prometheus does itself (the label values are bounded)."""

    __slots__ = ("_known", "_metric")

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._known: dict[tuple[str, ...], _Metric] = {}

    def __call__(self, *values: str) -> _Metric:
        child = self._known.get(values)
        if child is None:
            child = self._known[values] = self._metric.labels(*values)
        return child


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What the shared stores report at scrape time."""

    # Shared-store failures since the stores were built, each answered locally: per store (`windows`,
    # `probes`, `ratelimit`), by kind (policies.stores.faults.KINDS).
    faults: Mapping[str, Mapping[str, int]]
    degraded: bool  # deciding from local windows right now
    batched: BatchedWindowStore | None = None  # windows.sync: batched or auto, for its flush counters


@dataclass(slots=True)
class Traffic(RequestTally):
    """Plain running totals for the status page (Prometheus keeps its own; reading those back is private API)."""

    uplink_tokens: int = 0
    uplink_bytes: int = 0
    cloud_only_tokens: int = 0
    cloud_only_bytes: int = 0
    probe_uplink_tokens: int = 0  # quality-policy probes ship prompts up too

    def saved(self) -> float | None:
        """Share of uplink prompt tokens (requests and probes) saved against sending every request to the cloud."""
        shipped = share(self.uplink_tokens + self.probe_uplink_tokens, self.cloud_only_tokens)
        return None if shipped is None else 1.0 - shipped


class _Live(Collector):
    """Values read when Prometheus scrapes: window-store health and the config version."""

    def __init__(self, store: Callable[[], StoreHealth | None], version: Callable[[], int]) -> None:
        self._store = store
        self._version = version

    def collect(self) -> Iterator[Metric]:
        health = self._store()
        errors = CounterMetricFamily("recserve_window_store_errors",
                                     "Shared window store failures (each answered from local windows), "
                                     "by store (windows, probes, ratelimit) and kind", labels=["store", "kind"])
        for store, kinds in (health.faults if health else {}).items():
            for kind, count in sorted(kinds.items()):
                errors.add_metric([store, kind], float(count))
        yield errors
        degraded = GaugeMetricFamily("recserve_window_store_degraded",
                                     "1 while decisions come from local windows because the shared store is down")
        degraded.add_metric([], 1.0 if health and health.degraded else 0.0)
        yield degraded
        if health and health.batched:
            yield from _flush_metrics(health.batched)
        version = GaugeMetricFamily("recserve_config_version", "Config/policy version this replica runs")
        version.add_metric([], float(self._version()))
        yield version


def _flush_metrics(store: BatchedWindowStore) -> Iterator[Metric]:
    """`windows.sync: batched`: what the flushes cost Redis and how often a step went beyond its reach."""
    for name, help_text, value in (
            ("recserve_window_flushes", "Batched window flushes (one pipelined round trip each)", store.round_trips),
            ("recserve_window_flush_calls", "Flush script calls (one per flush; one per hash slot on a cluster)",
             store.calls),
            ("recserve_window_flush_windows", "Windows carried by the flushes", store.window_flushes),
            ("recserve_window_flush_values_sent", "Values the flushes appended to shared windows", store.values_sent),
            ("recserve_window_flush_values_read", "Scores the flushes read back (the ranks around each quantile "
             "and the oldest values)", store.values_returned),
            ("recserve_window_steps_beyond_reach", "Quantile lookups between flushes outside the known ranks "
             "(answered approximately; a burst or an outage)", store.clamped)):
        family = CounterMetricFamily(name, help_text)
        family.add_metric([], float(value))
        yield family


class Metrics:
    """Every metric of one gateway app. Built in `create_app`; outlives reloads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.traffic = Traffic()
        r = self.registry
        self.requests = Counter("recserve_requests", "Requests by route, serving tier, task and HTTP status",
                                ["route", "tier", "task", "status"], registry=r)
        self.escalations = Counter("recserve_escalations", "Requests a tier passed up, by reason",
                                   ["tier", "reason"], registry=r)
        self.confidence = Histogram("recserve_confidence", "Confidence of tier answers",
                                    ["tier", "task"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.threshold = Gauge("recserve_threshold", "Threshold of the last decision at a tier",
                               ["policy", "tier", "task"], registry=r)
        self.tier_latency = Histogram("recserve_tier_latency_seconds", "Time inside one tier call",
                                      ["tier", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.request_latency = Histogram("recserve_request_latency_seconds", "End-to-end request latency",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("recserve_gateway_overhead_seconds",
                                  "End-to-end latency minus the time spent inside tiers",
                                  ["route"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.uplink_tokens = Counter("recserve_uplink_prompt_tokens",
                                     "Prompt tokens shipped to a tier above the first, by tier", ["tier"], registry=r)
        self.uplink_bytes = Counter("recserve_uplink_bytes",
                                    "Request bytes shipped to a tier above the first, by tier", ["tier"], registry=r)
        self.cloud_only_tokens = Counter("recserve_cloud_only_prompt_tokens",
                                         "Prompt tokens that would have gone up had every request gone to the cloud",
                                         registry=r)
        self.cloud_only_bytes = Counter("recserve_cloud_only_bytes",
                                        "Request bytes that would have gone up had every request gone to the cloud",
                                        registry=r)
        self.probes = Counter("recserve_probe_requests",
                              "Quality-policy probes of a lower tier's answer against the top tier, by probed "
                              "tier, task and outcome (agreed, disagreed, failed)", ["tier", "task", "outcome"],
                              registry=r)
        self.probe_uplink_tokens = Counter("recserve_probe_uplink_prompt_tokens",
                                           "Prompt tokens probes shipped to a tier above the first, by tier",
                                           ["tier"], registry=r)
        self.invalid_served = Counter("recserve_invalid_answers_served",
                                      "Answers served although their structure is not what the request asked "
                                      "(the top tier's answer is served as is), by tier and reason",
                                      ["tier", "reason"], registry=r)
        self.reloads = Counter("recserve_reloads", "Config reloads and policy changes applied, by result",
                               ["kind", "result"], registry=r)
        self.savings = SavingsLedger(r)  # per workload: below the top tier, weighted communication, spend
        self.loop_lag = Histogram("recserve_event_loop_lag_seconds",
                                  "How late the event loop ran a timer: how long any request could have waited "
                                  "for the loop", buckets=LOOP_BUCKETS, registry=r)
        self.loop_stall_cpu = Histogram("recserve_event_loop_stall_cpu_seconds",
                                        f"CPU time the event loop's thread used during each stall over "
                                        f"{STALL_S * 1000:.0f} ms: the stall's length when the gateway's own work "
                                        "held the loop, near 0 when the process waited for a CPU",
                                        buckets=LOOP_BUCKETS, registry=r)
        # The children the request path updates, by label values.
        self.confidence_at = Children(self.confidence)
        self.threshold_at = Children(self.threshold)
        self.escalations_at = Children(self.escalations)
        self.invalid_served_at = Children(self.invalid_served)
        self.uplink_tokens_at = Children(self.uplink_tokens)
        self.uplink_bytes_at = Children(self.uplink_bytes)
        self._finished: dict[tuple[str, str, str, int], tuple[Counter, Histogram, Histogram]] = {}

    def request_finished(self, route: str, tier: str, task: str, status: int, elapsed: float,
                         overhead: float) -> None:
        """One answered request: counted, and its latency and the gateway's share of it observed."""
        key = (route, tier, task, status)
        children = self._finished.get(key)
        if children is None:
            children = self._finished[key] = (self.requests.labels(route, tier, task, str(status)),
                                              self.request_latency.labels(route), self.overhead.labels(route))
        count, latency, own = children
        count.inc()
        latency.observe(elapsed)
        own.observe(overhead)

    def probe_sent(self, tier: str, tokens: int) -> None:
        """A probe shipped `tokens` prompt tokens to `tier` (a tier above the first)."""
        self.probe_uplink_tokens.labels(tier).inc(tokens)
        self.traffic.probe_uplink_tokens += tokens

    def watch(self, store: Callable[[], StoreHealth | None], version: Callable[[], int]) -> None:
        """Register the scrape-time readings (called once the runtime exists)."""
        self.registry.register(_Live(store, version))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
