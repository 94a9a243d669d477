"""deploy/k8s renders with kustomize and agrees with the code: names, ports, probes, env,
scaling, images, and the production settings (cadence, retention, policy)."""

from __future__ import annotations

import shlex
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from streamlearn.system.plan import HEALTH_NAMES
from tests.deploy import ROOT, SERVICES, setting_of, settings_class

OVERLAYS = ("local", "production")
WORKLOAD = {
    "inference": "Deployment",
    "ingestion": "Deployment",
    "joiner": "StatefulSet",
    "registry": "StatefulSet",
    "trainer": "StatefulSet",
}
# Variables a container may set that are no streamlearn setting, each with why.
PROCESS_VARIABLES = {
    "NUMBA_CACHE_DIR": "numba's cache of compiled functions: the sources are read-only",
}
# Variables set only to be expanded (`$(NAME)`) into a later setting's value, each with why.
EXPANDED_VARIABLES = {
    "POD_NAME": "the pod's name, prefixed into JOINER_TRANSACTIONAL_ID (a fieldRef has no prefix)",
}
Docs = dict[tuple[str, str], dict[str, Any]]


@cache
def kustomize() -> str:
    return subprocess.run(
        [str(ROOT / "scripts" / "kustomize.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()


@cache
def render_text(overlay: str) -> str:
    """`kustomize build` of deploy/k8s/overlays/<overlay>."""
    return subprocess.run(
        [kustomize(), "build", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def render(overlay: str) -> Docs:
    return {
        (d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(render_text(overlay)) if d
    }


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, Docs]:
    return request.param, render(request.param)


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
    """A setting's value in the container: its variable, else the settings class default."""
    name = f"{service.upper()}_{field.upper()}"
    if name in env:
        return env[name]
    head, _, rest = field.partition("__")
    default = settings_class(service).model_fields[head].default
    return getattr(default, rest) if rest else default


def mounts(docs: Docs, service: str) -> dict[str, str]:
    container = pod(docs, service)["containers"][0]
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_is_a_setting_of_its_service(
    rendered: tuple[str, Docs], service: str
) -> None:
    _, docs = rendered
    for name, value in env_of(docs, service).items():
        if name in PROCESS_VARIABLES:
            assert value in mounts(docs, service), f"{name}={value} is no mounted volume"
            continue
        if name in EXPANDED_VARIABLES:
            assert expanded_into_settings(docs, service, name), f"{name} is expanded nowhere"
            continue
        setting_of(name)  # fails naming the variable when no settings field matches
    container = pod(docs, service)["containers"][0]
    assert container["command"] == ["python", "-m", f"services.{service}"]


def expanded_into_settings(docs: Docs, service: str, name: str) -> list[str]:
    """The settings whose value expands `$(name)`, defined after it (Kubernetes expands
    only references to variables defined earlier in the list)."""
    env = pod(docs, service)["containers"][0].get("env", [])
    names = [item["name"] for item in env]
    after = env[names.index(name) + 1 :] if name in names else []
    found = [i["name"] for i in after if f"$({name})" in str(i.get("value", ""))]
    for setting in found:
        setting_of(setting)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_ports_probes_and_services_match_the_settings(
    rendered: tuple[str, Docs], service: str
) -> None:
    _, docs = rendered
    env = env_of(docs, service)
    container = pod(docs, service)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    grpc_port = int(effective(service, env, "grpc_port"))
    metrics_port = int(effective(service, env, "metrics_port"))
    assert ports == {"grpc": grpc_port, "metrics": metrics_port}
    ready = probe_target(env, container["readinessProbe"], service)
    assert ready == (grpc_port, HEALTH_NAMES[service])
    # the server as a whole: alive before it is ready
    assert probe_target(env, container["livenessProbe"], service) == (grpc_port, "")
    # Liveness waits for the start-up probe: a slow start (torch, a restore) is not killed.
    assert probe_target(env, container["startupProbe"], service) == (grpc_port, "")
    svc = docs[("Service", service)]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "grpc": grpc_port,
        "metrics": metrics_port,
    }
    labels = docs[(WORKLOAD[service], service)]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()


def probe_target(env: dict[str, Any], probe: dict[str, Any], service: str) -> tuple[int, str]:
    """(port, health service name) an exec probe of `shared.grpc.probe` checks.

    gRPC is TLS only, which Kubernetes' native gRPC probe cannot speak: the probe must trust
    the CA the server is configured with, expect the name in the service's certificate and
    present the pod's own certificate (a server requiring mutual TLS takes no call without).
    """
    assert "grpc" not in probe, "a native gRPC probe cannot speak TLS"
    command = probe["exec"]["command"]
    assert command[:3] == ["python", "-m", "shared.grpc.probe"], command
    options = dict(zip(command[-8::2], command[-7::2], strict=True))
    prefix = f"{service.upper()}_SECURITY__"
    assert options == {
        "--ca": env[prefix + "CA_FILE"],
        "--cert": env[prefix + "CERT_FILE"],
        "--key": env[prefix + "KEY_FILE"],
        "--server-name": service,
    }, command
    host, port = command[3].rsplit(":", 1)
    assert host == "127.0.0.1", command
    health = command[4] if len(command) == 13 else ""
    assert len(command) in (12, 13), command
    return int(port), health


def test_every_probe_gives_slow_starts_and_slow_answers_time(rendered: tuple[str, Docs]) -> None:
    _, docs = rendered
    for (kind, name), doc in docs.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            where = f"{kind}/{name}/{container['name']}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{where} has no {probe}"
                assert container[probe].get("timeoutSeconds", 1) >= 5, f"{where} {probe}"
            startup = container["startupProbe"]
            budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
            assert budget >= 120, f"{where}: {budget} s to start"
    trainer = pod(docs, "trainer")["containers"][0]["startupProbe"]
    assert trainer["periodSeconds"] * trainer["failureThreshold"] >= 300


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


def autoscaled(docs: Docs) -> dict[str, dict[str, Any]]:
    """Deployment/StatefulSet name -> what scales it (an HPA or a KEDA ScaledObject)."""
    found: dict[str, dict[str, Any]] = {}
    for (kind, _), doc in docs.items():
        if kind == "HorizontalPodAutoscaler":
            found[doc["spec"]["scaleTargetRef"]["name"]] = doc
        if kind == "ScaledObject":
            found[doc["spec"]["scaleTargetRef"]["name"]] = doc
    return found


def test_what_scales_scales_on_what_fits_and_what_learns_stays_single(
    rendered: tuple[str, Docs],
) -> None:
    overlay, docs = rendered
    scalers = autoscaled(docs)
    for target, scaler in scalers.items():
        workload = next(d for (k, n), d in docs.items() if n == target and k in WORKLOAD.values())
        # An apply would reset the autoscaler's count to a replica count in the manifest.
        assert "replicas" not in workload["spec"], f"{target} is autoscaled and has replicas"
        assert scaler["spec"]["scaleTargetRef"].get("kind", "Deployment") == workload["kind"]
    # Inference: CPU (each call is CPU work, nothing rebalances).
    hpa = scalers["inference"]
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert pod(docs, "inference")["containers"][0]["resources"]["requests"]["cpu"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # Ingestion: never on CPU (each rebalance re-reads the de-dup window, CPU that would
    # scale again); on its consumer lag in production.
    ingestion = scalers.get("ingestion")
    if overlay == "local":
        assert ingestion is None
    else:
        assert ingestion is not None and ingestion["kind"] == "ScaledObject"
        check_lag_scaler(docs, ingestion)
    # Learners and the registry: one replica, never autoscaled.
    for service in ("trainer", "registry"):
        assert docs[("StatefulSet", service)]["spec"]["replicas"] == 1
        assert service not in scalers
    for service, claim in (("trainer", "checkpoints"), ("registry", "data")):
        workload = docs[("StatefulSet", service)]["spec"]
        assert [t["metadata"]["name"] for t in workload["volumeClaimTemplates"]] == [claim]
        state_dir = env_of(docs, service)[f"{service.upper()}_STATE_DIR"]
        assert mounts(docs, service)[state_dir] == claim
    trainer_env = env_of(docs, "trainer")
    assert trainer_env["TRAINER_TRAINER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def check_lag_scaler(docs: Docs, scaled: dict[str, Any]) -> None:
    """KEDA's Kafka trigger watches ingestion's own group, topic and cluster, slowly."""
    spec = scaled["spec"]
    env = env_of(docs, "ingestion")
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == effective("ingestion", env, "consumer_group")
    assert meta["topic"] == effective("ingestion", env, "topics__raw")
    assert meta["bootstrapServers"] == env["INGESTION_KAFKA__BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    partitions = int(effective("ingestion", env, "topics__partitions"))
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] >= 60
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    for direction in ("scaleUp", "scaleDown"):
        assert behavior[direction]["policies"] == [
            {
                "type": "Pods",
                "value": 1,
                "periodSeconds": behavior[direction]["policies"][0]["periodSeconds"],
            }
        ]


def test_grpc_clients_can_balance_over_every_inference_pod(rendered: tuple[str, Docs]) -> None:
    _, docs = rendered
    headless = docs[("Service", "inference-headless")]["spec"]
    assert headless["clusterIP"] == "None" and not headless.get("publishNotReadyAddresses")
    assert headless["selector"] == docs[("Service", "inference")]["spec"]["selector"]
    grpc_port = int(effective("inference", env_of(docs, "inference"), "grpc_port"))
    assert [p["port"] for p in headless["ports"]] == [grpc_port]
    assert docs[("Service", "inference")]["spec"].get("clusterIP") != "None"


def test_inference_drains_before_it_stops(rendered: tuple[str, Docs]) -> None:
    _, docs = rendered
    spec = pod(docs, "inference")
    delay = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    env = env_of(docs, "inference")
    drain = float(effective("inference", env, "drain_grace_s"))
    drain += float(effective("inference", env, "drain_delay_s"))  # NOT_SERVING, still answering
    assert delay >= 5  # endpoints and DNS forget the pod before SIGTERM
    assert spec["terminationGracePeriodSeconds"] >= delay + drain + 10
    for service in SERVICES:
        env = env_of(docs, service)
        if "drain_grace_s" in settings_class(service).model_fields:
            grace = pod(docs, service)["terminationGracePeriodSeconds"]
            assert grace > float(effective(service, env, "drain_grace_s")), service


def test_images_come_from_a_registry_and_pull_as_they_should(rendered: tuple[str, Docs]) -> None:
    overlay, docs = rendered
    images: dict[str, str] = {}
    for (kind, name), doc in docs.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"{kind}/{name}: {image} has no tag"
            # `latest` defaults to Always: a locally loaded image would be pulled and fail.
            assert container["imagePullPolicy"] == "IfNotPresent", f"{kind}/{name}"
            images[name] = image
    if overlay == "production":
        for name, image in images.items():
            host = image.split("/")[0]
            assert "." in host or ":" in host, f"{name}: {image} names no registry"
            assert not image.endswith(":latest"), name
        assert images["trainer"].endswith("-cuda")
    else:
        assert images["trainer"] == "streamlearn:latest"  # what `docker compose build` tags
        slim = ("inference", "ingestion", "joiner", "registry")
        assert {images[s] for s in slim} == {"streamlearn:slim"}


def mounted_config_map(docs: Docs, spec: dict[str, Any], volume: str) -> dict[str, str]:
    """The files of the ConfigMap a pod mounts as `volume` (its data)."""
    (source,) = [v["configMap"]["name"] for v in spec["volumes"] if v["name"] == volume]
    data: dict[str, str] = docs[("ConfigMap", source)]["data"]
    return data


def properties(text: str) -> dict[str, str]:
    """A Java properties file of `key=value` lines."""
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_the_local_broker_keeps_its_log_off_the_volume_root_with_its_own_cluster_id() -> None:
    docs = render("local")
    spec = docs[("StatefulSet", "kafka")]["spec"]["template"]["spec"]
    (broker,) = spec["containers"]
    (init,) = spec["initContainers"]
    server = properties(mounted_config_map(docs, spec, "config")["server.properties"])
    (data_mount,) = [m["mountPath"] for m in broker["volumeMounts"] if m["name"] == "data"]
    log_dirs = server["log.dirs"].split(",")
    assert all(d.startswith(data_mount + "/") for d in log_dirs), log_dirs  # not the root
    assert "CLUSTER_ID" not in {e["name"] for e in broker.get("env", [])}
    script = init["command"][-1]
    assert "random-uuid" in script and "mkdir -p " + log_dirs[0] in script
    id_file = shlex.split(script.split("f=", 1)[1].split("\n", 1)[0])[0]
    assert id_file.startswith(data_mount + "/")
    assert '--cluster-id "$(cat "$f")"' in script  # the format takes that id
    # The broker runs the server.properties the init container wrote, on a volume both mount.
    assert broker["command"][0] == "/opt/kafka/bin/kafka-server-start.sh"
    (rendered,) = broker["command"][1:]
    assert f"> {rendered}" in script and f"--config {rendered}" in script
    folder = rendered.rsplit("/", 1)[0]
    for container in (init, broker):
        (name,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == folder]
        assert name == "runtime"


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
    assert trainer["image"].endswith("-cuda") and env["TRAINER_DEVICE"] == "auto"
    registry = env_of(docs, "registry")
    assert registry["REGISTRY_DB_URL"].startswith("postgresql://")
    assert registry["REGISTRY_DB_PASSWORD"] == {
        "secretKeyRef": {"name": "streamlearn-registry-db", "key": "password"}
    }
    assert ("StatefulSet", "kafka") not in docs and ("Kafka", "streamlearn") in docs
    cluster_scoped = {"Namespace", "PriorityClass"}
    assert all(
        d["metadata"].get("namespace") == "streamlearn"
        for (kind, _), d in docs.items()
        if kind not in cluster_scoped
    )


def test_production_publishes_at_a_production_cadence_and_keeps_a_day_of_versions() -> None:
    docs = render("production")
    trainer, registry = env_of(docs, "trainer"), env_of(docs, "registry")
    every_s = float(effective("trainer", trainer, "version_every_s"))
    every_events = int(effective("trainer", trainer, "version_every_events"))
    assert every_s >= 30 and every_events >= 100_000  # not the demo's every second
    keep = int(effective("registry", registry, "keep_last_versions"))
    assert keep * every_s >= 24 * 3600  # at the fastest cadence, still a day back
    assert effective("registry", registry, "policy_metric")
    assert float(effective("registry", registry, "policy_min_improvement")) > 0
    local = env_of(render("local"), "trainer")
    assert float(effective("trainer", local, "version_every_s")) == 1  # the demo's
