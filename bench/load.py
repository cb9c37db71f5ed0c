"""Drive an HTTP endpoint with wrk (a separate process, C, so the load generator is not the
bottleneck) and read its latency percentiles back as numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# wrk's Lua hooks: a fixed POST body, and a JSON summary printed at the end for us to parse.
_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "socket_errors": %%d, '
    .. '"p50": %%d, "p90": %%d, "p99": %%d}\\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    failures: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, body: dict[str, object], *, connections: int, seconds: float, threads: int = 1) -> LoadResult:
    """`connections` concurrent keep-alive clients for `seconds` (bounded in time by wrk itself)."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        script.write_text(_SCRIPT % {"body": json.dumps(body)})
        completed = subprocess.run(
            ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
             "--timeout", "10s", "-s", str(script), url],
            capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT "))
    data = json.loads(line.removeprefix("RESULT "))
    return LoadResult(data["requests"], data["duration_us"] / 1e6, data["non2xx"] + data["socket_errors"],
                      data["p50"] / 1000, data["p90"] / 1000, data["p99"] / 1000)
