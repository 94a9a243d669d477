"""deploy/k8s renders with kustomize and agrees with the code: names, ports, probes, env."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from streamlearn.system.plan import HEALTH_NAMES
from tests.deploy import ROOT, SERVICES, setting_of, settings_class

OVERLAYS = ("local", "production")
WORKLOAD = {
    "inference": "Deployment",
    "ingestion": "Deployment",
    "registry": "StatefulSet",
    "trainer": "StatefulSet",
}
Docs = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, Docs]:
    kustomize = subprocess.run(
        [str(ROOT / "scripts" / "kustomize.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    out = subprocess.run(
        [kustomize, "build", str(ROOT / "deploy" / "k8s" / "overlays" / request.param)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    return request.param, docs


def env_of(docs: Docs, service: str) -> dict[str, Any]:
    """The container's environment: its ConfigMaps (envFrom) overlaid by its own env."""
    container = pod(docs, service)["containers"][0]
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env |= docs[("ConfigMap", source["configMapRef"]["name"])]["data"]
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def pod(docs: Docs, service: str) -> dict[str, Any]:
    spec: dict[str, Any] = docs[(WORKLOAD[service], service)]["spec"]["template"]["spec"]
    return spec


def effective(service: str, env: dict[str, Any], field: str) -> Any:
    name = f"{service.upper()}_{field.upper()}"
    return env.get(name, settings_class(service).model_fields[field].default)


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_is_a_setting_of_its_service(
    rendered: tuple[str, Docs], service: str
) -> None:
    _, docs = rendered
    for name in env_of(docs, service):
        setting_of(name)  # fails naming the variable when no settings field matches
    container = pod(docs, service)["containers"][0]
    assert container["command"] == ["python", "-m", f"services.{service}"]


@pytest.mark.parametrize("service", SERVICES)
def test_ports_probes_and_services_match_the_settings(
    rendered: tuple[str, Docs], service: str
) -> None:
    _, docs = rendered
    env = env_of(docs, service)
    container = pod(docs, service)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    grpc_port = int(effective(service, env, "grpc_port"))
    assert ports["grpc"] == grpc_port
    assert ports["metrics"] == int(effective(service, env, "metrics_port"))
    ready, live = container["readinessProbe"]["grpc"], container["livenessProbe"]["grpc"]
    assert ready == {"port": grpc_port, "service": HEALTH_NAMES[service]}
    assert live == {"port": grpc_port}  # the server as a whole: alive before it is ready
    svc = docs[("Service", service)]
    assert {p["port"] for p in svc["spec"]["ports"]} == {grpc_port}
    labels = docs[(WORKLOAD[service], service)]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("service", SERVICES)
def test_addresses_and_bootstrap_servers_point_at_services_that_exist(
    rendered: tuple[str, Docs], service: str
) -> None:
    _, docs = rendered
    for name, value in env_of(docs, service).items():
        if name.endswith("_ADDRESS"):
            host, port = value.split(":")
            assert int(port) in {p["port"] for p in docs[("Service", host)]["spec"]["ports"]}
        if name.endswith("_KAFKA__BOOTSTRAP_SERVERS"):
            host, port = value.split(":")
            assert int(port) in kafka_ports(docs, host), f"{name}={value}"


def kafka_ports(docs: Docs, host: str) -> set[int]:
    """Ports of a Service, or of a Strimzi cluster's `<name>-kafka-bootstrap` Service."""
    if ("Service", host) in docs:
        return {p["port"] for p in docs[("Service", host)]["spec"]["ports"]}
    cluster = host.removesuffix("-kafka-bootstrap")
    listeners = docs[("Kafka", cluster)]["spec"]["kafka"]["listeners"]
    return {listener["port"] for listener in listeners}


def test_scaling_and_state_fit_each_service(rendered: tuple[str, Docs]) -> None:
    _, docs = rendered
    for service in ("ingestion", "inference"):
        hpa = docs[("HorizontalPodAutoscaler", service)]["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": service,
        }
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"
        assert pod(docs, service)["containers"][0]["resources"]["requests"]["cpu"]
    for service, claim in (("trainer", "checkpoints"), ("registry", "data")):
        workload = docs[("StatefulSet", service)]["spec"]
        assert [t["metadata"]["name"] for t in workload["volumeClaimTemplates"]] == [claim]
        mounts = {
            m["name"]: m["mountPath"] for m in pod(docs, service)["containers"][0]["volumeMounts"]
        }
        assert mounts[claim] == env_of(docs, service)[f"{service.upper()}_STATE_DIR"]
    trainer_env = env_of(docs, "trainer")
    assert trainer_env["TRAINER_TRAINER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_production_trains_on_a_gpu_with_secrets_out_of_config_maps(
    rendered: tuple[str, Docs],
) -> None:
    overlay, docs = rendered
    trainer = pod(docs, "trainer")["containers"][0]
    env = env_of(docs, "trainer")
    config_keys = {k for (kind, _), d in docs.items() if kind == "ConfigMap" for k in d["data"]}
    assert not any("PASSWORD" in key for key in config_keys)
    if overlay == "local":
        assert "nvidia.com/gpu" not in trainer["resources"].get("limits", {})
        assert env["TRAINER_DEVICE"] == "cpu"
        assert ("StatefulSet", "kafka") in docs
        return
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert trainer["image"].endswith("-cuda") and env["TRAINER_DEVICE"] == "cuda"
    registry = env_of(docs, "registry")
    assert registry["REGISTRY_DB_URL"].startswith("postgresql://")
    assert registry["REGISTRY_DB_PASSWORD"] == {
        "secretKeyRef": {"name": "streamlearn-registry-db", "key": "password"}
    }
    assert ("StatefulSet", "kafka") not in docs and ("Kafka", "streamlearn") in docs
    assert all(
        d["metadata"].get("namespace", "streamlearn") == "streamlearn" for d in docs.values()
    )
