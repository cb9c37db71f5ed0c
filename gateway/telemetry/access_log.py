"""Structured access log: one JSON object per line on the `recserve.access` logger.

Fields: ts, request_id, method, path, status, latency_ms, tier_ms, and for cascades tenant (its name,
never its key), workload, task, tier, tier path (an invalid answer's reason in it:
`device(invalid_json)>cloud`), confidence, threshold, degraded, window, uplink_tokens, and `invalid`
when the served answer's structure is not what the request asked (the top tier's answer, served as is).
The prompt appears only with `logging.include_prompts: true`; keys, headers and bodies never do.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Final

from gateway.telemetry.observer import CascadeSummary

LOGGER_NAME: Final = "recserve.access"
log = logging.getLogger(LOGGER_NAME)


def access_record(*, request_id: str | None, method: str, path: str, status: int, latency_s: float,
                  tier_s: float, summary: CascadeSummary | None) -> dict[str, Any]:
    """The access-log object for one finished request."""
    record: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "latency_ms": round(latency_s * 1e3, 2),
        "tier_ms": round(tier_s * 1e3, 2),
    }
    if summary is not None:
        record.update(tenant=summary.tenant, workload=summary.workload, task=summary.task, tier=summary.tier,
                      tier_path=summary.path, confidence=summary.confidence, threshold=summary.threshold,
                      degraded=summary.degraded, window="local" if summary.window_fallback else "shared",
                      uplink_tokens=summary.uplink_tokens)
        if summary.served_invalid is not None:
            record["invalid"] = summary.served_invalid
        if summary.prompt is not None:
            record["prompt"] = summary.prompt
    return record


def emit(record: dict[str, Any]) -> None:
    if log.isEnabledFor(logging.INFO):
        # default=str: a prompt part of an unexpected type must not cost the log line.
        log.info(json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str))


def configure_access_log(stream: IO[str] | None = None) -> None:
    """Send access lines as bare JSON (no level/time prefix) to stderr; for `recserve serve`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
