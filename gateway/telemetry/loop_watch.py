"""How long the event loop is held: while one callback runs, every other request waits.

A timer set every `PERIOD_S` is checked for lateness; each tick's lateness is observed in
`recserve_event_loop_lag_seconds`. A tick more than `STALL_S` late is a stall, and the CPU time the
loop's thread used meanwhile goes to `recserve_event_loop_stall_cpu_seconds`: about as long as the
stall when the gateway's own work held the loop, near zero when the process waited for a CPU (a busy
host, a container's CPU limit).
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram

PERIOD_S = 0.025
STALL_S = 0.05
LOOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)


async def watch_event_loop(lag: Histogram, stall_cpu: Histogram, period_s: float = PERIOD_S) -> None:
    """Observe the loop until cancelled (the app's lifespan runs it)."""
    while True:
        started, cpu = time.monotonic(), time.thread_time()
        await asyncio.sleep(period_s)
        late = time.monotonic() - started - period_s
        lag.observe(max(late, 0.0))
        if late > STALL_S:
            stall_cpu.observe(time.thread_time() - cpu)
