"""The compose topology without Docker: real redis-server, three `recserve serve` replicas on one
config, and real nginx running docker/nginx.conf in front. 300 requests (50 streamed) through nginx."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import yaml

from tests.support.processes import GatewayProcess, NginxProcess
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import free_port

REQUESTS = 300
STREAMS = 50
CONCURRENCY = 8
ADMIN_ENV = "RECSERVE_DEPLOY_TEST_ADMIN_KEY"
ADMIN_KEY = "deploy-test-admin-key"
INSTANCE_ID = "recserve-topology"


def _config(tiers: dict[str, ThreadedTier], redis_url: str) -> dict[str, Any]:
    """docker/config.compose.yaml with the addresses of this machine's processes."""
    config: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker/config.compose.yaml")
                                            .read_text())
    config["server"]["host"] = "127.0.0.1"
    config["server"]["instance_id"] = INSTANCE_ID
    config["auth"] = {"api_keys_env": "RECSERVE_DEPLOY_TEST_KEYS_NEVER_SET", "admin_key_env": ADMIN_ENV}
    for tier in config["tiers"]:
        scripted = tiers[tier["name"]]
        tier.update(base_url=scripted.base_url, model=scripted.model, timeout_s=10)
    config["windows"] = {"store": "redis", "redis_url": redis_url, "namespace": "topology"}
    return config


@dataclass
class Topology:
    replicas: list[GatewayProcess]
    nginx: NginxProcess


@pytest.fixture(scope="module")
def topology(tiers: dict[str, ThreadedTier], redis_server: RedisServer, nginx_binary: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    workdir = tmp_path_factory.mktemp("topology")
    config = _config(tiers, redis_server.url)
    shared_config = workdir / "config.yaml"  # one file for all three, as compose mounts one
    shared_config.write_text(yaml.safe_dump(config, sort_keys=False))
    replicas: list[GatewayProcess] = []
    nginx: NginxProcess | None = None
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv(ADMIN_ENV, ADMIN_KEY)  # inherited by the gateway processes only
            for name in ("gateway-1", "gateway-2", "gateway-3"):
                replica = GatewayProcess(name, config, workdir)
                replica.config_path = shared_config  # all three start from the same file
                replicas.append(replica.start())
        nginx = NginxProcess(nginx_binary, workdir, [f"127.0.0.1:{r.port}" for r in replicas])
        checked = nginx.check()
        assert checked.returncode == 0, checked.stderr
        nginx.start()
        yield Topology(replicas, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()


@dataclass(frozen=True)
class Answer:
    index: int
    stream: bool
    request_id: str
    tier: str
    path: str
    threshold: str | None
    window: str | None
    text: str
    content_type: str


def _prompt(index: int, rng: random.Random) -> str:
    return (f"q{index} [device:{rng.uniform(0.05, 0.95):.3f}][edge:{rng.uniform(0.05, 0.95):.3f}]"
            "[cloud:0.9]")


def _ask(client: openai.OpenAI, index: int, prompt: str, stream: bool) -> Answer:
    messages: list[Any] = [{"role": "user", "content": prompt}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model="recserve", messages=messages, max_tokens=16, stream=True) as response:
            headers = response.headers
            text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(model="recserve", messages=messages, max_tokens=16)
        headers = raw.headers
        text = raw.parse().choices[0].message.content or ""
    return Answer(index, stream, headers["x-request-id"], headers["x-recserve-tier"], headers["x-recserve-path"],
                  headers.get("x-recserve-threshold"), headers.get("x-recserve-window"), text,
                  headers.get("content-type", ""))


def _access_records(replica: GatewayProcess) -> list[dict[str, Any]]:
    records = []
    for line in replica.log().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("path") == "/v1/chat/completions":
                records.append(record)
    return records


def test_300_requests_through_nginx_reach_all_replicas_on_shared_windows(topology: Topology) -> None:
    rng = random.Random(8)
    prompts = [_prompt(i, rng) for i in range(REQUESTS)]
    streamed = set(rng.sample(range(REQUESTS), STREAMS))
    local = threading.local()
    clients: list[openai.OpenAI] = []
    lock = threading.Lock()

    def client() -> openai.OpenAI:
        if not hasattr(local, "client"):  # one keep-alive connection pool per worker thread
            local.client = openai.OpenAI(base_url=topology.nginx.url, api_key="unused", max_retries=0, timeout=30)
            with lock:
                clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    failures: list[str] = []

    def one(index: int) -> Answer | None:
        try:
            return _ask(client(), index, prompts[index], index in streamed)
        except Exception as exc:  # count every failure, whatever its kind
            with lock:
                failures.append(f"{index}: {exc!r}")
            return None

    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(one, range(REQUESTS)))
    finally:
        for each in clients:
            each.close()
    answers = [a for a in results if a is not None]

    # Which replica served each request: its access log has the request id the client saw.
    served_by = {r["request_id"]: replica.name for replica in topology.replicas for r in _access_records(replica)}
    per_replica = Counter(served_by[a.request_id] for a in answers if a.request_id in served_by)
    nginx_upstreams = Counter(line.split("upstream=")[1].split()[0] for line in topology.nginx.access_lines()
                              if "/v1/chat/completions" in line)
    tiers = Counter(a.tier for a in answers)
    reached_edge = sum(1 for a in answers if "edge" in a.path)

    # Every replica's own view of the windows (GET /admin/policy, straight to the replica).
    views = []
    for replica in topology.replicas:
        response = httpx.get(f"http://127.0.0.1:{replica.port}/admin/policy",
                             headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        assert response.status_code == 200, response.text
        by_tier = {t["name"]: t for t in response.json()["tiers"]}
        views.append({name: by_tier[name]["recserve"]["tasks"]["generation"] for name in ("device", "edge")})

    print(f"\nrequests {REQUESTS} (streams {STREAMS}), concurrency {CONCURRENCY}: answered {len(answers)}, "
          f"failures {len(failures)}")
    print(f"per replica (gateway access logs): {dict(sorted(per_replica.items()))}")
    print(f"per upstream (nginx access log):   {dict(sorted(nginx_upstreams.items()))}")
    print(f"answered at: {dict(tiers)}; reached edge: {reached_edge}")
    for replica, view in zip(topology.replicas, views, strict=True):
        print(f"{replica.name}: device window {view['device']['window_length']} threshold "
              f"{view['device']['threshold']:.6f} | edge window {view['edge']['window_length']} threshold "
              f"{view['edge']['threshold']:.6f}")

    assert failures == [], failures[:5]
    assert len(answers) == REQUESTS
    assert sum(1 for a in answers if a.stream) == STREAMS
    assert all(a.text for a in answers)  # a real answer each time, streamed ones included
    # Streams came through nginx as server-sent events, not as one buffered JSON body.
    assert all(a.content_type.startswith("text/event-stream") == a.stream for a in answers)
    assert all(a.window is None for a in answers)  # shared windows throughout, never the local fallback
    # nginx spread the load: every replica served some, and all 300 are accounted for.
    assert set(per_replica) == {r.name for r in topology.replicas}
    assert sum(per_replica.values()) == REQUESTS
    assert all(count >= REQUESTS // 10 for count in per_replica.values()), per_replica
    assert len(nginx_upstreams) == 3 and sum(nginx_upstreams.values()) == REQUESTS
    assert set(tiers) == {"device", "edge", "cloud"}
    # One window for all: each replica sees every request's device confidence and every edge visit,
    # not just its own third, and all three compute the same thresholds.
    for view in views:
        assert view["device"]["window_length"] == REQUESTS
        assert view["edge"]["window_length"] == reached_edge
    assert len({(v["device"]["threshold"], v["edge"]["threshold"]) for v in views}) == 1
    # Whatever the interleaving, the final windows hold exactly these confidences (W = 10000 > 300), so
    # the thresholds every replica reports are the β-quantiles of the scripted values.
    scripted = [dict(re.findall(r"\[(device|edge):([0-9.]+)\]", prompt)) for prompt in prompts]
    device_values = [float(s["device"]) for s in scripted]
    edge_values = [float(scripted[a.index]["edge"]) for a in answers if "edge" in a.path]
    beta = yaml.safe_load(topology.replicas[0].config_path.read_text())["policy"]["recserve"]["beta"]
    assert views[0]["device"]["threshold"] == pytest.approx(float(np.quantile(device_values, beta)), abs=1e-9)
    assert views[0]["edge"]["threshold"] == pytest.approx(float(np.quantile(edge_values, beta)), abs=1e-9)
    # The replicas all carry this deployment's one instance id (chained loops are caught at any of them).
    assert all(INSTANCE_ID in replica.config_path.read_text() for replica in topology.replicas)


def _healthcheck_command(port: int) -> list[str]:
    """The gateway image's HEALTHCHECK (exec form) from docker/Dockerfile, aimed at `port`."""
    text = re.sub(r"\\\n\s*", " ", (Path(__file__).resolve().parents[2] / "docker/Dockerfile").read_text())
    gateway_stage = text[text.index("AS gateway"):]
    command: list[str] = json.loads(re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", gateway_stage, re.MULTILINE)[1])
    assert command[0] == "python"
    return [sys.executable, *[part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in command[1:]]]


def test_the_image_healthcheck_passes_on_a_live_replica_and_fails_on_a_dead_port(topology: Topology) -> None:
    live = subprocess.run(_healthcheck_command(topology.replicas[0].port), capture_output=True, timeout=30,
                          check=False)
    assert live.returncode == 0, live.stderr
    dead = subprocess.run(_healthcheck_command(free_port()), capture_output=True, timeout=30, check=False)
    assert dead.returncode != 0


def test_the_deps_layer_installs_exactly_the_project_dependencies(tmp_path: Path) -> None:
    """The Dockerfile's requirements one-liner, run on the real pyproject.toml."""
    import tomllib

    text = (Path(__file__).resolve().parents[2] / "docker/Dockerfile").read_text()
    one_liner = re.search(r'RUN python -c "(.*?)" \\', text)
    assert one_liner is not None
    done = subprocess.run([sys.executable, "-c", one_liner[1]], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=30, check=True)
    with (Path(__file__).resolve().parents[2] / "pyproject.toml").open("rb") as file:
        expected = tomllib.load(file)["project"]["dependencies"]
    assert done.stdout.split() == expected
