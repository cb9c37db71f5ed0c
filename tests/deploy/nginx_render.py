"""docker/nginx.conf made runnable on loopback without Docker: the same file, with only addresses and paths changed.

Every rewrite must match exactly as often as expected, so an edit to docker/nginx.conf that the
topology test would no longer exercise fails loudly instead of being silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

NGINX_CONF = Path(__file__).resolve().parents[2] / "docker" / "nginx.conf"
_UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)gateway-\d+:8000\b", re.MULTILINE)


def _sub(pattern: str, replacement: str, text: str, *, count: int, flags: int = re.MULTILINE) -> str:
    result, made = re.subn(pattern, lambda _: replacement, text, flags=flags)
    if made != count:
        raise ValueError(f"docker/nginx.conf: expected {count} match(es) of {pattern!r}, found {made}")
    return result


def render_nginx_conf(source: str, *, listen_port: int, upstreams: Sequence[str], workdir: Path) -> str:
    """`source` (docker/nginx.conf's text) listening on 127.0.0.1:`listen_port`, proxying to `upstreams`
    ("host:port", one per replica), with pid, logs and temp folders under `workdir`."""
    servers = _UPSTREAM_SERVER.findall(source)
    if len(servers) != len(upstreams):
        raise ValueError(f"docker/nginx.conf lists {len(servers)} upstream servers, the test runs {len(upstreams)}")
    replacements = iter(upstreams)
    text = _UPSTREAM_SERVER.sub(lambda match: match.group(1) + next(replacements), source)
    text = _sub(r"^(\s*)listen\s+8080;", f"    listen 127.0.0.1:{listen_port};", text, count=1)
    text = _sub(r"^pid\s+/tmp/nginx\.pid;", f"pid {workdir / 'nginx.pid'};", text, count=1)
    text = _sub(r"^error_log\s+/dev/stderr\b", f"error_log {workdir / 'error.log'}", text, count=1)
    text = _sub(r"access_log\s+/dev/stdout\b", f"access_log {workdir / 'access.log'}", text, count=1)
    text, temp_paths = re.subn(r"/tmp/(nginx-[a-z-]+);", lambda m: f"{workdir / m.group(1)};", text)
    if temp_paths != 5:
        raise ValueError(f"docker/nginx.conf: expected 5 *_temp_path directives under /tmp, found {temp_paths}")
    outside = text.replace(str(workdir), "")
    if "/tmp/" in outside or "/dev/std" in outside:
        raise ValueError("docker/nginx.conf: a path outside the test's folder is left after rendering")
    return text
