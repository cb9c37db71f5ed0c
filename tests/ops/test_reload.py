"""Hot reload of one gateway: the new file takes over, requests in flight finish on the config they
started with, an invalid file is refused with every error by key path, and a reload under load
fails no request."""

from __future__ import annotations

import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from gateway.cascade.workloads import OVERFLOW
from tests.conftest import ask

from .conftest import FileGateway


def _renamed_cloud(config: dict[str, Any], model: str) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    changed["tiers"][2]["model"] = model
    return changed


def test_reload_swaps_in_the_new_file(file_gateway: FileGateway) -> None:
    with file_gateway.sdk() as sdk:
        before, _ = ask(sdk, "hello", model="recserve/cloud")
        file_gateway.write(_renamed_cloud(file_gateway.config, "cloud-model-v2"))
        with file_gateway.admin() as http:
            response = http.post("/admin/reload")
            assert response.status_code == 200, response.text
            assert response.json()["version"] == 1
            assert response.json()["changed"] == ["tiers"]
            assert http.get("/admin/config").json()["config"]["tiers"][2]["model"] == "cloud-model-v2"
        after, _ = ask(sdk, "hello", model="recserve/cloud")
    assert before.model == "cloud-model"
    assert after.model == "cloud-model-v2"


def test_a_request_in_flight_finishes_on_the_config_it_started_with(file_gateway: FileGateway) -> None:
    results: dict[str, Any] = {}

    def slow_request() -> None:
        with file_gateway.sdk() as sdk:
            results["slow"], _ = ask(sdk, "[cloud:sleep=1.0]", model="recserve/cloud")

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.3)  # the request is now waiting on the cloud tier
    file_gateway.write(_renamed_cloud(file_gateway.config, "cloud-model-v2"))
    with file_gateway.admin() as http:
        assert http.post("/admin/reload").status_code == 200
    with file_gateway.sdk() as sdk:
        fresh, _ = ask(sdk, "quick", model="recserve/cloud")
    worker.join(timeout=10)
    assert results["slow"].model == "cloud-model"  # its tier client was not closed under it either
    assert fresh.model == "cloud-model-v2"


def test_an_invalid_file_is_refused_with_every_error_and_the_old_config_keeps_serving(
        file_gateway: FileGateway) -> None:
    broken = copy.deepcopy(file_gateway.config)
    broken["tiers"][0]["timeout_s"] = -1
    broken["policy"]["recserve"]["beta"] = 2
    broken["policy"]["default"] = "nowhere"
    broken["surprise"] = True
    file_gateway.write(broken)
    with file_gateway.admin() as http:
        response = http.post("/admin/reload")
        config = http.get("/admin/config").json()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    paths = {line.split(":", 1)[0] for line in error["errors"]}
    assert {"tiers.0.timeout_s", "policy.recserve.beta", "surprise"} <= paths
    assert "previous config keeps serving" in error["message"]
    assert config["version"] == 0
    with file_gateway.sdk() as sdk:
        _, headers = ask(sdk, "[device:0.9]", max_tokens=16)
    assert headers["x-recserve-tier"] == "device"
    file_gateway.write("tiers: [unclosed")
    with file_gateway.admin() as http:
        yaml_error = http.post("/admin/reload")
    assert yaml_error.status_code == 400
    assert "invalid YAML" in yaml_error.json()["error"]["errors"][0]


def test_reloads_under_concurrent_load_fail_no_request(file_gateway: FileGateway) -> None:
    total, threads = 200, 4
    versions = [_renamed_cloud(file_gateway.config, f"cloud-model-v{i}") for i in range(5)]
    failures: list[str] = []
    served_models: set[str] = set()
    done = threading.Event()

    def client(worker: int) -> None:
        with file_gateway.sdk(timeout=30) as sdk:
            for i in range(total // threads):
                prompt = f"w{worker} n{i} [device:{0.05 + (i * 37 % 90) / 100:.2f}][edge:0.5]"
                try:
                    answer, _ = ask(sdk, prompt, max_tokens=16)
                    served_models.add(answer.model)
                except openai.APIError as exc:
                    failures.append(f"{prompt}: {exc}")

    def reloader() -> None:
        with file_gateway.admin() as http:
            i = 0
            while not done.is_set():
                file_gateway.write(versions[i % len(versions)])
                response = http.post("/admin/reload")
                if response.status_code != 200:
                    failures.append(f"reload: {response.status_code} {response.text}")
                i += 1
                time.sleep(0.02)

    reloading = threading.Thread(target=reloader)
    reloading.start()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client, range(threads)))
    done.set()
    reloading.join(timeout=30)
    with file_gateway.admin() as http:
        version = http.get("/admin/config").json()["version"]
    assert failures == []
    assert version >= 3  # the reloads really happened during the load
    assert served_models  # answers came through


def test_the_workload_names_a_gateway_keeps_apart_outlive_a_reload(file_gateway: FileGateway) -> None:
    bounded = copy.deepcopy(file_gateway.config)
    bounded.setdefault("policy", {}).update(max_workloads=2, workload_idle_s=3600)

    def workload(sdk: openai.OpenAI, name: str) -> str:
        return ask(sdk, "hi", extra_body={"recserve": {"workload": name}})[1]["x-recserve-workload"]

    with file_gateway.sdk() as sdk, file_gateway.admin() as http:
        file_gateway.write(bounded)
        assert http.post("/admin/reload").status_code == 200
        assert [workload(sdk, name) for name in ("w0", "w1", "w2")] == ["w0", "w1", OVERFLOW]
        file_gateway.write(_renamed_cloud(bounded, "cloud-model-v2"))
        assert http.post("/admin/reload").status_code == 200
        # The names kept before the reload are still the ones kept: a third is still folded away.
        assert [workload(sdk, name) for name in ("w2", "w0")] == [OVERFLOW, "w0"]
