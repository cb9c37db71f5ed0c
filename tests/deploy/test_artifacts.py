"""The deploy files themselves: compose validated by Debian's docker-compose 1.29 (no engine needed),
Kubernetes manifests by PyPI kubernetes-validate (offline schemas), the Dockerfile's layering rules,
and every config they carry by the gateway's own config loader."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.loading import load_config

from .conftest import REPO

DOCKER = REPO / "docker"
K8S = REPO / "deploy" / "k8s"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a manifest with one is a bug."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_UniqueKeyLoader) if doc]


# --- compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose; make system-deps)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSERVE_")}
    done = subprocess.run([binary, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    print(f"\n{version.stdout.strip()}: docker/compose.yaml is valid "
          f"({len(yaml.safe_load(done.stdout)['services'])} services)")
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


def test_compose_has_redis_three_replicas_nginx_and_three_tiers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "gateway-1", "gateway-2", "gateway-3", "nginx",
                             "tier-device", "tier-edge", "tier-cloud"}
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    gateways = [services[f"gateway-{i}"] for i in (1, 2, 3)]
    mounts = {tuple(g["volumes"]) for g in gateways}
    assert len(mounts) == 1  # the same config file in every replica
    assert next(iter(mounts))[0].endswith("docker/config.compose.yaml:/etc/recserve/config.yaml:ro")
    for gateway in gateways:
        assert gateway["build"]["target"] == "gateway"
        assert {name: dep["condition"] for name, dep in gateway["depends_on"].items()} == {
            "redis": "service_healthy", "tier-device": "service_healthy", "tier-edge": "service_healthy",
            "tier-cloud": "service_healthy"}
        assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    nginx = services["nginx"]
    assert any(v.endswith("docker/nginx.conf:/etc/nginx/nginx.conf:ro") for v in nginx["volumes"])
    assert {dep["condition"] for dep in nginx["depends_on"].values()} == {"service_healthy"}
    assert set(nginx["depends_on"]) == {"gateway-1", "gateway-2", "gateway-3"}
    models = {name: services[name]["build"]["args"]["MODEL"] for name in ("tier-device", "tier-edge", "tier-cloud")}
    assert models == {"tier-device": "smollm2-135m", "tier-edge": "qwen2.5-coder-0.5b",
                      "tier-cloud": "qwen2.5-coder-1.5b"}
    for name in models:
        assert services[name]["build"]["target"] == "tier"
        assert "/health" in " ".join(services[name]["healthcheck"]["test"])


def test_compose_config_points_at_the_compose_services() -> None:
    config = load_config(DOCKER / "config.compose.yaml")
    assert config.windows.store == "redis" and config.windows.redis_url.startswith("redis://redis:")
    assert config.server.host == "0.0.0.0" and config.server.instance_id  # one id for all replicas
    assert [t.base_url for t in config.tiers] == [f"http://tier-{n}:8080/v1" for n in ("device", "edge", "cloud")]
    assert all(t.local is None for t in config.tiers)  # the tiers are compose services, not started by the gateway


def test_nginx_conf_passes_streams() -> None:
    text = (DOCKER / "nginx.conf").read_text()
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                      "proxy_read_timeout 300s;", "keepalive 32;"):
        assert directive in text
    assert re.findall(r"server (gateway-\d):8000", text) == ["gateway-1", "gateway-2", "gateway-3"]


def test_nginx_accepts_the_rendered_conf(nginx_binary: str, tmp_path: Path) -> None:
    from tests.support.processes import NginxProcess

    done = NginxProcess(nginx_binary, tmp_path, ["127.0.0.1:9", "127.0.0.1:10", "127.0.0.1:11"]).check()
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


# --- Dockerfile --------------------------------------------------------------------------------


def _stage(text: str, name: str) -> list[str]:
    """The instruction lines of one build stage (continuations joined)."""
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"FROM \S+ AS {name}$", line))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("FROM ")), len(lines))
    return [line for line in lines[start:end] if line and not line.startswith("#")]


def test_dockerfile_layers_user_healthcheck_entrypoint() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    deps = _stage(text, "deps")
    assert any(line.startswith("COPY pyproject.toml") for line in deps)
    assert not any(re.match(r"COPY (gateway|policies|\.)", line) for line in deps)  # no source in the deps layer
    assert any("pip install -r" in line for line in deps)
    gateway = _stage(text, "gateway")
    assert gateway[0] == "FROM deps AS gateway"  # source on top of the dependency layer
    assert text.rstrip().splitlines()[-1].startswith("CMD")  # the gateway is the last (default) stage
    user = [line for line in gateway if line.startswith("USER ")]
    assert user and user[-1] != "USER root" and not user[-1].startswith("USER 0")
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line and "urllib" in line for line in gateway)
    entrypoint = next(line for line in gateway if line.startswith("ENTRYPOINT"))
    assert entrypoint == 'ENTRYPOINT ["recserve", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    tier = _stage(text, "tier")
    assert any(line.startswith("USER ") and "root" not in line for line in tier)
    assert any(line.startswith("HEALTHCHECK") and "/health" in line for line in tier)


# --- Kubernetes --------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_offline() -> None:
    manifests = sorted(K8S.glob("*.yaml"))
    assert {p.name for p in manifests} == {"configmap.yaml", "deployment.yaml", "hpa.yaml", "secret.yaml",
                                           "service.yaml", "llama-tiers.yaml"}
    for path in manifests:
        _documents(path)  # duplicate keys would be silently merged by the validator
    validator = Path(sys.executable).parent / "kubernetes-validate"
    if not validator.exists():
        pytest.fail("kubernetes-validate is missing: pip install -e '.[dev]'")
    done = subprocess.run([str(validator), "--strict", *map(str, manifests)], capture_output=True, text=True,
                          timeout=120, check=False)
    print("\n" + done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    documents = sum(len(_documents(path)) for path in manifests)
    assert done.stdout.count(" passed ") == documents


def _by_kind() -> dict[str, dict[str, Any]]:
    """The gateway's own objects (llama-tiers.yaml holds the tiers' Deployments and Services)."""
    return {doc["kind"]: doc for path in K8S.glob("*.yaml") if path.name != "llama-tiers.yaml"
            for doc in _documents(path)}


def test_kubernetes_tiers_named_in_the_configmap_exist(tmp_path: Path) -> None:
    services = {doc["metadata"]["name"]: doc for doc in _documents(K8S / "llama-tiers.yaml")
                if doc["kind"] == "Service"}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_by_kind()["ConfigMap"]["data"]["config.yaml"])
    in_cluster = [t for t in load_config(config_file).tiers if ".svc.cluster.local" in t.base_url]
    assert [t.name for t in in_cluster] == ["device", "edge"]
    for tier in in_cluster:
        host, port = tier.base_url.split("//")[1].split("/")[0].split(":")
        assert int(port) == services[host.split(".")[0]]["spec"]["ports"][0]["port"]


def test_kubernetes_deployment_wiring(tmp_path: Path) -> None:
    kinds = _by_kind()
    deployment, configmap, secret = kinds["Deployment"], kinds["ConfigMap"], kinds["Secret"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert {ref["name"] for ref in secret_refs.values()} == {secret["metadata"]["name"]}
    assert set(secret_refs) <= set(secret["stringData"])
    assert all(v.startswith("replace-me") or all(p.startswith("replace-me") for p in v.split(","))
               for v in secret["stringData"].values())  # an example: placeholders only
    (config_volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    # The ConfigMap's config.yaml is a valid gateway config, on shared Redis, reading keys from the env
    # variables the Deployment fills from the Secret.
    config_file = tmp_path / "config.yaml"
    config_file.write_text(configmap["data"]["config.yaml"])
    config = load_config(config_file)
    assert config.windows.store == "redis"
    key_envs = {config.auth.api_keys_env, config.auth.admin_key_env} | {t.api_key_env for t in config.tiers}
    assert key_envs - {None} <= set(secret_refs)
    service, hpa = kinds["Service"], kinds["HorizontalPodAutoscaler"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_tier_image_models_are_pinned_in_the_catalog(compose: dict[str, Any]) -> None:
    """The tier build step (docker/fetch_tier.py) imports and the compose MODEL args are catalog keys."""
    import importlib.util

    from gateway.local.catalog import model_keys

    spec = importlib.util.spec_from_file_location("fetch_tier", DOCKER / "fetch_tier.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports only: building llama-server takes minutes
    assert callable(module.main)
    for name in ("tier-device", "tier-edge", "tier-cloud"):
        assert compose["services"][name]["build"]["args"]["MODEL"] in model_keys()
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    # Every file taken from the build context (COPY without --from) must survive the ignore file.
    copied = set(re.findall(r"^COPY (?:--chown=\S+ )?([^-\s]\S*)", (DOCKER / "Dockerfile").read_text(), re.MULTILINE))
    assert copied == {"pyproject.toml", "README.md", "gateway", "policies", "docker/fetch_tier.py", "config.yaml"}
    for source in copied:
        assert f"!{source.rstrip('/')}/" in ignored or f"!{source}" in ignored, source
