"""The joiner on Kubernetes: each replica's Kafka transactional id is its pod's name, so it is
stable across restarts (a restarted replica fences its predecessor), unique across replicas
(two producers under one id would fence each other) and under the joiner's ACL."""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from services.joiner.settings import JoinerSettings
from shared.security.kafka_acl import Resource, acl_table
from shared.settings import TopicSettings
from tests.unit.test_k8s_manifests import OVERLAYS, Docs, effective, env_of, pod, render

SERVICE = "joiner"
SETTING = "JOINER_TRANSACTIONAL_ID"
# What Kubernetes expands in an env value: `$$` is a `$`, `$(NAME)` a variable defined before.
REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
# Pod fields that change with every incarnation of a pod, even under the same name.
PER_INCARNATION = {
    "metadata.uid",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "spec.nodeName",
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def expand(value: str, defined: dict[str, str]) -> str:
    """`value` as Kubernetes expands it: an undefined reference stays as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return REFERENCE.sub(replace, value)


def resolve(source: dict[str, Any], pod_name: str, namespace: str) -> str:
    """The value of a `valueFrom` in one incarnation of the pod `pod_name`."""
    field = source.get("fieldRef", {}).get("fieldPath")
    if field == "metadata.name":
        return pod_name
    if field == "metadata.namespace":
        return namespace
    if field in PER_INCARNATION:
        return uuid.uuid4().hex  # a new value each time the pod is created again
    # A Secret, ConfigMap key or resource: the same for every replica.
    return f"<{json.dumps(source, sort_keys=True)}>"


def transactional_id(docs: Docs, pod_name: str) -> str:
    """The id one incarnation of `pod_name` runs with: its env as the kubelet makes it."""
    container = pod(docs, SERVICE)["containers"][0]
    namespace = next(n for (kind, n) in docs if kind == "Namespace")
    defined: dict[str, str] = {}
    for source in container.get("envFrom", []):  # before `env`, so `env` may refer to them
        defined |= docs[("ConfigMap", source["configMapRef"]["name"])]["data"]
    for item in container.get("env", []):
        if "value" in item:
            defined[item["name"]] = expand(item["value"], defined)
        else:
            defined[item["name"]] = resolve(item["valueFrom"], pod_name, namespace)
    default: str = JoinerSettings.model_fields["transactional_id"].default
    return defined.get(SETTING, default)


def under_the_acl(transactional: str) -> bool:
    """Whether the joiner's principal may write under this transactional id."""
    return any(
        grant.resource == Resource.TRANSACTIONAL_ID
        and (
            transactional.startswith(grant.name) if grant.prefixed else transactional == grant.name
        )
        for grant in acl_table(TopicSettings())[SERVICE]
    )


def problems(docs: Docs) -> list[str]:
    """What would make replicas share a transactional id, change it on restart, or be refused."""
    kinds = sorted(kind for (kind, name) in docs if name == SERVICE and kind in WORKLOAD_KINDS)
    if kinds != ["StatefulSet"]:
        return [f"the joiner runs as {kinds}: only a StatefulSet's pod names are stable and unique"]
    replicas = docs[("StatefulSet", SERVICE)]["spec"].get("replicas", 1)
    found: list[str] = []
    ids: dict[str, str] = {}
    for ordinal in range(max(replicas, 2)):  # at least two: what a scale-up would run
        name = f"{SERVICE}-{ordinal}"  # a StatefulSet's pod names
        first, restarted = transactional_id(docs, name), transactional_id(docs, name)
        if first != restarted:
            found.append(f"{name}: its id changes when it restarts ({first}, then {restarted})")
        if "$(" in first:
            found.append(f"{name}: {first!r} refers to a variable not defined before it")
        if not under_the_acl(first):
            found.append(f"{name}: {first!r} is under no transactional-id ACL of the joiner")
        try:
            JoinerSettings(transactional_id=first)
        except ValidationError as exc:
            found.append(f"{name}: {first!r} is refused by the settings: {exc}")
        ids[name] = first
    if len(set(ids.values())) < len(ids):
        found.append(f"replicas share a transactional id: {ids}")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_replica_runs_under_its_own_stable_transactional_id(overlay: str) -> None:
    docs = render(overlay)
    assert problems(docs) == []
    # Its pod's name, exactly: `streamlearn-joiner-<ordinal>`.
    assert transactional_id(docs, "joiner-2") == "streamlearn-joiner-2"
    # A restarted instance also rejoins the group as the same static member.
    env = env_of(docs, SERVICE)
    assert "JOINER_CONSUMER_GROUP" not in env  # the ACL's group prefix, the default
    assert str(effective(SERVICE, env, "consumer_group")).startswith("streamlearn-joiner")


def planted(docs: Docs, env: list[dict[str, Any]], kind: str = "StatefulSet") -> Docs:
    """`docs` with the joiner's own env replaced (and its workload renamed to `kind`)."""
    changed = copy.deepcopy(docs)
    workload = changed.pop(("StatefulSet", SERVICE))
    workload["kind"] = kind
    workload["spec"]["template"]["spec"]["containers"][0]["env"] = env
    changed[(kind, SERVICE)] = workload
    return changed


def test_the_check_refuses_ids_that_replicas_would_share_or_lose() -> None:
    docs = render("local")
    password = [e for e in pod(docs, SERVICE)["containers"][0]["env"] if "PASSWORD" in e["name"]]
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    prefixed = {"name": SETTING, "value": "streamlearn-$(POD_NAME)"}
    namespace = {"name": SETTING, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    uid = {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}
    cases = [
        # The settings' default, a literal or the namespace: one id for every replica.
        ("share", [*password]),
        ("share", [*password, {"name": SETTING, "value": "streamlearn-joiner-0"}]),
        ("share", [*password, namespace]),
        # Defined after its use: Kubernetes leaves `$(POD_NAME)` as written.
        ("not defined before", [*password, prefixed, pod_name]),
        # Unique, but new at every restart: the predecessor is never fenced.
        ("changes when it restarts", [*password, uid, {**prefixed, "value": "sl-$(POD_UID)"}]),
        # The pod's name alone: `joiner-0` is outside the joiner's ACL.
        ("no transactional-id ACL", [*password, {**pod_name, "name": SETTING}]),
    ]
    for expected, env in cases:
        found = " | ".join(problems(planted(docs, env)))
        assert expected in found, (expected, found)
    # A Deployment (random pod names) is refused whatever its env.
    deployment = planted(docs, [*password, pod_name, prefixed], kind="Deployment")
    assert "only a StatefulSet" in " | ".join(problems(deployment))
    # ... and the rendered env itself passes (the cases above differ from it only as stated).
    assert problems(planted(docs, [*password, pod_name, prefixed])) == []


def test_production_runs_a_joiner_per_input_partition_at_most() -> None:
    docs = render("production")
    statefulset = docs[("StatefulSet", SERVICE)]["spec"]
    env = env_of(docs, SERVICE)
    partitions = int(effective(SERVICE, env, "topics__partitions"))
    # More than one, so the ids are told apart in production; no more than the inputs'
    # partitions, or replicas would hold none.
    assert 1 < statefulset["replicas"] <= partitions
    assert statefulset["podManagementPolicy"] == "Parallel"  # still one pod per ordinal
    budgets = [
        d["spec"]
        for (kind, _), d in docs.items()
        if kind == "PodDisruptionBudget"
        and d["spec"]["selector"]["matchLabels"].items()
        <= statefulset["template"]["metadata"]["labels"].items()
    ]
    assert budgets == [{"maxUnavailable": 1, "selector": statefulset["selector"]}]
