"""The rendered overlays pass the Kubernetes schemas and the Pod Security "restricted" rules
plus this project's hardening rules, with every exception written down in
deploy/k8s/POLICY-EXCEPTIONS.md; the custom resources (Strimzi, KEDA, Prometheus Operator),
which no schema covers here, are checked by structure (the security resources by
tests/unit/test_k8s_security.py)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import ROOT
from tests.unit.test_k8s_manifests import OVERLAYS, Docs, render, render_text

KUBERNETES_VERSION = "1.33.0"  # the oldest version the manifests are meant for
EXCEPTIONS = ROOT / "deploy" / "k8s" / "POLICY-EXCEPTIONS.md"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
# Custom resources: no schema in kubernetes-validate; checked below by structure.
CUSTOM = {
    "local": set(),
    "production": {
        ("Kafka", "kafka.strimzi.io/v1"),
        ("KafkaNodePool", "kafka.strimzi.io/v1"),
        ("ScaledObject", "keda.sh/v1alpha1"),
        ("ServiceMonitor", "monitoring.coreos.com/v1"),
        ("PodMonitor", "monitoring.coreos.com/v1"),
        ("KafkaUser", "kafka.strimzi.io/v1"),
        ("KafkaTopic", "kafka.strimzi.io/v1"),
        ("TriggerAuthentication", "keda.sh/v1alpha1"),
        ("Certificate", "cert-manager.io/v1"),
        ("Issuer", "cert-manager.io/v1"),
    },
}
# Pod Security Standards (Kubernetes 1.33), restricted profile and the baseline under it.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
RULES = {
    # Pod Security "baseline"
    "host-namespaces": "hostNetwork, hostPID and hostIPC stay off",
    "privileged": "no privileged container",
    "host-path": "no hostPath volume",
    "host-ports": "no hostPort",
    "proc-mount": "procMount Default",
    "sysctls": "only the safe sysctls",
    "apparmor": "AppArmor not Unconfined",
    "selinux": "SELinux: container types only, no user or role",
    # Pod Security "restricted"
    "volume-types": "only configMap, csi, downwardAPI, emptyDir, ephemeral, PVC, projected, secret",
    "privilege-escalation": "allowPrivilegeEscalation: false",
    "run-as-non-root": "runAsNonRoot: true (pod or container)",
    "run-as-user": "runAsUser is not 0",
    "seccomp": "seccompProfile RuntimeDefault or Localhost (pod or every container)",
    "capabilities": "capabilities drop ALL, add at most NET_BIND_SERVICE",
    # this project's hardening
    "read-only-root": "readOnlyRootFilesystem: true (writable paths are volumes)",
    "resources": "CPU request, memory request and memory limit >= request",
    "service-account-token": "automountServiceAccountToken: false (no pod calls the API)",
    "service-links": "enableServiceLinks: false (no KAFKA_PORT=tcp://... in the environment)",
    "priority-class": "a priorityClassName defined in the same render",
    "disruption-budget": "a PodDisruptionBudget selects the pods",
    "spread": "replicated pods spread over nodes (anti-affinity or topology spread)",
}

Finding = tuple[str, str]  # (rule, object: Kind/name or Kind/name/container)


# --- the checks -----------------------------------------------------------------------


def pod_specs(docs: Docs) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(Kind/name, workload, pod spec) of every workload."""
    for (kind, name), doc in sorted(docs.items()):
        if kind in WORKLOADS:
            yield f"{kind}/{name}", doc, doc["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"Pod/{name}", doc, doc["spec"]


def findings(docs: Docs) -> set[Finding]:
    """Every rule broken by every pod and container of a render."""
    found: set[Finding] = set()
    for where, workload, spec in pod_specs(docs):
        found |= {(rule, where) for rule in pod_rules(docs, workload, spec)}
        pod_sc = spec.get("securityContext", {})
        for container in spec.get("initContainers", []) + spec["containers"]:
            here = f"{where}/{container['name']}"
            found |= {(rule, here) for rule in container_rules(pod_sc, container)}
    return found


def pod_rules(docs: Docs, workload: dict[str, Any], spec: dict[str, Any]) -> Iterator[str]:
    sc = spec.get("securityContext", {})
    if any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        yield "host-namespaces"
    volumes = spec.get("volumes", [])
    if any("hostPath" in v for v in volumes):
        yield "host-path"
    if any(not set(v) - {"name"} <= RESTRICTED_VOLUMES for v in volumes):
        yield "volume-types"
    if any(s["name"] not in SAFE_SYSCTLS for s in sc.get("sysctls", [])):
        yield "sysctls"
    if spec.get("automountServiceAccountToken") is not False:
        yield "service-account-token"
    if spec.get("enableServiceLinks") is not False:
        yield "service-links"
    priority = spec.get("priorityClassName")
    if not priority or ("PriorityClass", priority) not in docs:
        yield "priority-class"
    labels = (
        workload["spec"]["template"]["metadata"]["labels"]
        if "template" in workload["spec"]
        else workload["metadata"].get("labels", {})
    )
    if not any(
        d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for (kind, _), d in docs.items()
        if kind == "PodDisruptionBudget"
    ):
        yield "disruption-budget"
    replicated = workload["spec"].get("replicas", 1) > 1 or any(
        d["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
        for (kind, _), d in docs.items()
        if kind in ("HorizontalPodAutoscaler", "ScaledObject")
    )
    if replicated and not spreads_over_nodes(spec, labels):
        yield "spread"


def spreads_over_nodes(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
        t["podAffinityTerm"]
        for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    ]
    terms += spec.get("topologySpreadConstraints", [])
    return any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and t["labelSelector"]["matchLabels"].items() <= labels.items()
        for t in terms
    )


def container_rules(pod_sc: dict[str, Any], container: dict[str, Any]) -> Iterator[str]:
    sc = container.get("securityContext", {})
    if sc.get("privileged"):
        yield "privileged"
    if any(p.get("hostPort") for p in container.get("ports", [])):
        yield "host-ports"
    if sc.get("procMount", "Default") != "Default":
        yield "proc-mount"
    for level in (pod_sc, sc):
        if level.get("appArmorProfile", {}).get("type") == "Unconfined":
            yield "apparmor"
        selinux = level.get("seLinuxOptions", {})
        if selinux.get("type", "") not in SELINUX_TYPES or {"user", "role"} & set(selinux):
            yield "selinux"
    if sc.get("allowPrivilegeEscalation") is not False:
        yield "privilege-escalation"
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        yield "run-as-non-root"
    if 0 in (sc.get("runAsUser"), pod_sc.get("runAsUser")):
        yield "run-as-user"
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        yield "seccomp"
    caps = sc.get("capabilities", {})
    if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
        yield "capabilities"
    if sc.get("readOnlyRootFilesystem") is not True:
        yield "read-only-root"
    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if (
        "cpu" not in requests
        or "memory" not in requests
        or "memory" not in limits
        or quantity(limits["memory"]) < quantity(requests["memory"])
    ):
        yield "resources"


def quantity(value: str | int) -> float:
    """A Kubernetes memory quantity in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    return float(text)


def written_exceptions() -> dict[tuple[str, str, str], str]:
    """(rule, overlay, object) -> reason, from the table in POLICY-EXCEPTIONS.md."""
    rows: dict[tuple[str, str, str], str] = {}
    for line in EXCEPTIONS.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("rule", "") or set(cells[0]) <= {"-"}:
            continue
        rule, overlays, obj, reason = cells
        for overlay in re.split(r",\s*", overlays):
            rows[(rule, overlay, obj)] = reason
    return rows


# --- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlays_pass_the_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render_text(overlay))
    result = validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = set(
        re.findall(
            r"find schema for kind (\S+) with api version (\S+)", result.stdout + result.stderr
        )
    )
    assert skipped == CUSTOM[overlay]  # exactly the custom resources checked below


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate (installed once by scripts/k8s-validate.sh), strict."""
    return subprocess.run(
        [str(ROOT / "scripts" / "k8s-validate.sh"), "--run", "-k", KUBERNETES_VERSION,
         "--strict", "--quiet", str(path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_schema_check_rejects_a_manifest_kubernetes_would_reject(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(render_text("local")))
    inference = next(d for d in docs if d and d["kind"] == "Deployment")
    inference["spec"]["replica"] = 2  # a typo the API server would refuse
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    result = validate(broken)
    assert result.returncode != 0 and "'replica' was unexpected" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_findings_are_exactly_the_written_exceptions(overlay: str) -> None:
    found = findings(render(overlay))
    excepted = {(rule, obj) for (rule, o, obj) in written_exceptions() if o == overlay}
    assert found - excepted == set(), "findings without a written exception"
    assert excepted - found == set(), "exceptions in POLICY-EXCEPTIONS.md that no longer apply"


def test_every_exception_names_a_rule_and_gives_its_reason() -> None:
    rows = written_exceptions()
    assert rows  # the table is read at all
    for (rule, overlay, obj), reason in rows.items():
        assert rule in RULES and overlay in OVERLAYS, (rule, overlay, obj)
        assert len(reason.split()) >= 8, f"{rule} {obj}: say why"


def test_every_rule_catches_a_pod_that_breaks_it() -> None:
    bad_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "labels": {"app": "bad"}},
        "spec": {
            "hostNetwork": True,
            "priorityClassName": "missing",
            "securityContext": {
                "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
                "seLinuxOptions": {"user": "root"},
            },
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [
                {
                    "name": "c",
                    "image": "x:1",
                    "ports": [{"containerPort": 80, "hostPort": 80}],
                    "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}},
                    "securityContext": {
                        "privileged": True,
                        "runAsUser": 0,
                        "procMount": "Unmasked",
                        "appArmorProfile": {"type": "Unconfined"},
                        "capabilities": {"add": ["SYS_ADMIN"]},
                        "seccompProfile": {"type": "Unconfined"},
                    },
                }
            ],
        },
    }
    bad_deployment = {
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "replicas": 3,
            "template": {"metadata": {"labels": {"app": "bad"}}, "spec": bad_pod["spec"]},
        },
    }
    rules = {rule for rule, _ in findings({("Pod", "bad"): bad_pod})}
    rules |= {rule for rule, _ in findings({("Deployment", "bad"): bad_deployment})}
    assert rules == set(RULES)
    # ... and a compliant pod breaks none of them.
    good = render("production")
    assert not {f for f in findings(good) if f[1].startswith("Deployment/inference")}


def test_the_strimzi_cluster_spreads_sized_brokers_over_zones() -> None:
    docs = render("production")
    kafka = docs[("Kafka", "streamlearn")]["spec"]["kafka"]
    (pool,) = [d for (kind, _), d in docs.items() if kind == "KafkaNodePool"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "streamlearn"
    spec = pool["spec"]
    assert set(spec["roles"]) == {"controller", "broker"} and spec["replicas"] >= 3
    # Kafka 4.1.x: served by Strimzi 0.49 - 1.0, the releases with the v1 API.
    assert re.fullmatch(r"4\.1\.\d+", kafka["version"])
    assert all(
        d["apiVersion"] == "kafka.strimzi.io/v1"
        for (k, _), d in docs.items()
        if k.startswith("Kafka")
    )
    assert "strimzi.io/kraft" not in docs[("Kafka", "streamlearn")]["metadata"].get(
        "annotations", {}
    )
    (volume,) = spec["storage"]["volumes"]
    assert spec["storage"]["type"] == "jbod" and volume["kraftMetadata"] == "shared"
    assert volume["type"] == "persistent-claim" and volume["deleteClaim"] is False
    # Sized: memory request = limit, the heap well under it (the rest is page cache).
    resources = spec["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert resources["requests"]["cpu"]
    heap = quantity(spec["jvmOptions"]["-Xmx"].upper().replace("G", "Gi").replace("M", "Mi"))
    assert heap <= quantity(resources["limits"]["memory"]) / 2
    # Rack awareness, one broker per node, spread over zones.
    assert kafka["rack"]["topologyKey"] == "topology.kubernetes.io/zone"
    pod = spec["template"]["pod"]
    pool_labels = {
        "strimzi.io/cluster": "streamlearn",
        "strimzi.io/pool-name": pool["metadata"]["name"],
    }
    (required,) = pod["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["topologyKey"] == "kubernetes.io/hostname"
    assert required["labelSelector"]["matchLabels"] == pool_labels
    (zones,) = pod["topologySpreadConstraints"]
    assert zones["topologyKey"] == "topology.kubernetes.io/zone"
    assert zones["labelSelector"]["matchLabels"] == pool_labels
    assert ("PriorityClass", pod["priorityClassName"]) in docs
    # Durable: three copies, two in sync, for the internal topics as well.
    config = kafka["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["auto.create.topics.enable"] is False


def test_every_metrics_port_is_scraped_once() -> None:
    docs = render("production")
    (monitor,) = [d for (kind, _), d in docs.items() if kind == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = [
        d
        for (kind, _), d in docs.items()
        if kind == "Service" and selector.items() <= d["metadata"].get("labels", {}).items()
    ]
    for _, workload, spec in pod_specs(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for container in spec["containers"]:
            if not any(p["name"] == "metrics" for p in container.get("ports", [])):
                continue
            services = [s for s in scraped if s["spec"]["selector"].items() <= labels.items()]
            assert len(services) == 1, f"{workload['metadata']['name']}: {len(services)} Services"
            assert ports & {p["name"] for p in services[0]["spec"]["ports"]}
    assert not any(s["metadata"]["name"] == "inference-headless" for s in scraped)


def test_the_strimzi_brokers_and_their_lag_exporter_are_scraped() -> None:
    docs = render("production")
    kafka = docs[("Kafka", "streamlearn")]["spec"]
    source = kafka["kafka"]["metricsConfig"]["valueFrom"]["configMapKeyRef"]
    rules = docs[("ConfigMap", "kafka-metrics")]
    assert rules["metadata"]["name"] == source["name"] and source["key"] in rules["data"]
    assert "rules:" in rules["data"][source["key"]]
    assert kafka["kafkaExporter"]["groupRegex"] == "streamlearn-.*"  # trainer and ingestion
    (monitor,) = [d for (kind, _), d in docs.items() if kind == "PodMonitor"]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["tcp-prometheus"]
