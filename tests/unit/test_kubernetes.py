"""The Kubernetes manifests (deploy/kubernetes/) against the code they configure.

What breaks silently in YAML: a renamed setting (an unknown ``VLLAMA_*``
variable is ignored, so the gateway would run with its default), a config key
the gateway refuses, a port or a Secret key that no longer matches, a probe on
a route the app does not serve or that wants an API key. Each is checked here
against ``vllama.settings`` and the app's own routes, with no cluster needed.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from vllama.server.middleware.auth import ALWAYS_OPEN
from vllama.server.routes import ops
from vllama.settings import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
#: Read by ``load_settings`` itself, not a Settings field.
NOT_FIELDS = {"VLLAMA_CONFIG"}

Doc = dict[str, Any]


def manifests() -> dict[str, list[Doc]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(DEPLOY.glob("*.yaml"))
    }


def find(kind: str, name: str) -> Doc:
    for docs in manifests().values():
        for doc in docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in {DEPLOY}")


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: Doc = containers[0]
    return found


def port_number(spec: Doc, port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in spec["ports"] if p.get("name") == port]
    assert numbers, f"no container port named {port!r}"
    return int(numbers[0])


def secret_values() -> dict[str, str]:
    values: dict[str, str] = find("Secret", "vllama")["stringData"]
    return values


def environment(spec: Doc) -> dict[str, str]:
    """The container's environment, Secret references resolved from the example."""
    env = {}
    for item in spec["env"]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "vllama", item
        assert ref["key"] in secret_values(), f"{item['name']}: no key {ref['key']!r}"
        env[item["name"]] = secret_values()[ref["key"]]
    return env


def test_every_manifest_loads_and_kustomize_lists_them() -> None:
    found = manifests()
    assert {"vllm.yaml", "vllama.yaml", "vllama-config.yaml", "kustomization.yaml"} <= set(found)
    for name, docs in found.items():
        assert docs, name
        for doc in docs:
            assert {"apiVersion", "kind"} <= set(doc), name
    listed = found["kustomization.yaml"][0]["resources"]
    applied = set(found) - {"kustomization.yaml", "secret.example.yaml"}
    assert set(listed) == applied  # the Secret is the operator's, never applied from here


def test_gateway_settings_exist_and_validate(tmp_path: Path) -> None:
    spec = container(find("Deployment", "vllama"))
    env = environment(spec)
    for name in env:
        if name.startswith("VLLAMA_") and name not in NOT_FIELDS:
            field = name.removeprefix("VLLAMA_").lower()
            assert field in Settings.model_fields, f"{name}: no setting {field!r}"
    # The ConfigMap's TOML through the real loader (unknown keys are refused).
    config = find("ConfigMap", "vllama-config")["data"]
    mount = next(m for m in spec["volumeMounts"] if m["name"] == "config")
    path = Path(env["VLLAMA_CONFIG"])
    assert str(path.parent) == mount["mountPath"]
    assert path.name in config
    (tmp_path / path.name).write_text(config[path.name])
    settings = load_settings(environ={**env, "VLLAMA_CONFIG": str(tmp_path / path.name)})
    assert settings.host == "0.0.0.0"
    assert settings.auth == "on"  # API keys required
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value().startswith("postgresql://")
    assert settings.admin_key is not None
    assert [b.name for b in settings.backends] == ["engine"]
    volumes = find("Deployment", "vllama")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "vllama-config"}} in volumes


def test_ports_line_up() -> None:
    gateway, engine = find("Deployment", "vllama"), find("Deployment", "vllm")
    spec, vllm = container(gateway), container(engine)
    settings = load_settings(
        environ={k: v for k, v in environment(spec).items() if k not in NOT_FIELDS}
    )
    gateway_service, vllm_service = find("Service", "vllama"), find("Service", "vllm")
    # The gateway binds the port its pod and Service expose.
    assert port_number(spec, "http") == settings.port
    (exposed,) = gateway_service["spec"]["ports"]
    assert port_number(spec, exposed["targetPort"]) == settings.port
    # vLLM listens where its Service sends, and the gateway calls that Service.
    assert f"--port={port_number(vllm, 'http')}" in vllm["args"]
    (engine_port,) = vllm_service["spec"]["ports"]
    assert port_number(vllm, engine_port["targetPort"]) == port_number(vllm, "http")
    assert settings.engine_url is not None
    target = urllib.parse.urlsplit(settings.engine_url)
    assert (target.hostname, target.port) == ("vllm", engine_port["port"])
    # One key on both sides.
    keys = {
        item["name"]: item["valueFrom"]["secretKeyRef"]["key"]
        for item in spec["env"] + vllm["env"]
        if "valueFrom" in item
    }
    assert keys["VLLM_API_KEY"] == keys["VLLAMA_ENGINE_API_KEY"]


def test_selectors_match_their_pods() -> None:
    for name in ("vllama", "vllm"):
        deployment, service = find("Deployment", name), find("Service", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for selector in (
            deployment["spec"]["selector"]["matchLabels"],
            service["spec"]["selector"],
        ):
            assert selector.items() <= labels.items(), name
    assert find("Deployment", "vllama")["spec"]["replicas"] >= 2


@pytest.mark.parametrize(
    ("probe", "path"), [("readinessProbe", "/ready"), ("livenessProbe", "/health")]
)
def test_gateway_probes_hit_open_routes_it_serves(probe: str, path: str) -> None:
    spec = container(find("Deployment", "vllama"))
    check = spec[probe]["httpGet"]
    assert check["path"] == path
    served = {route.path for route in ops.routes}
    assert check["path"] in served
    assert check["path"] in ALWAYS_OPEN  # a probe carries no API key
    assert port_number(spec, check["port"]) == port_number(spec, "http")


def test_vllm_probes_and_resources() -> None:
    vllm = container(find("Deployment", "vllm"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health"  # vLLM's unauthenticated route
        assert port_number(vllm, vllm[probe]["httpGet"]["port"]) == 8000
    assert vllm["command"] == ["vllm", "serve"]
    assert int(vllm["resources"]["requests"]["nvidia.com/gpu"]) >= 1
    for name in ("vllm", "vllama"):
        requests = container(find("Deployment", name))["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), name
