"""deploy/k8s runs secured: gRPC TLS and auth on every service with its credentials mounted
read-only from Secrets, Kafka over TLS with SCRAM and the ACLs of `shared.security.kafka_acl`
(production), only the architecture's flows open, and no secret value in any manifest."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.errors import ConfigError, Unauthenticated
from shared.grpc import probe
from shared.grpc.server import build_server
from shared.kafka.admin import standard_topics
from shared.kafka.local.secure import password_file
from shared.security import pki
from shared.security.identity import Principal, principal_from_certificate
from shared.security.kafka_acl import ADMIN, Grant, Operation, Resource, acl_table
from shared.security.tokens import StaticTokens, TokenVerifier
from shared.settings import GrpcSecurity, TopicSettings
from streamlearn.cli.settings import CliSettings
from tests.deploy import ROOT, SERVICES
from tests.unit.test_k8s_manifests import (
    OVERLAYS,
    WORKLOAD,
    Docs,
    effective,
    env_of,
    mounted_config_map,
    pod,
    properties,
    render,
    render_text,
)

CALLERS = ("trainer", "inference")  # the services that call the registry
USER_ROLES = ("producer", "reader", "promoter", "admin")
LOCAL_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "local"
AUTH_SECRET = "streamlearn-grpc-auth"
STRIMZI_CA = "streamlearn-cluster-ca-cert"
# Secrets made outside the render and outside deploy/k8s/grpc_secrets.py, each with its maker.
OTHER_SECRETS = {"streamlearn-registry-db": "the operator (README: External Secrets)"}
SECURITY_FILES = ("CA_FILE", "CERT_FILE", "KEY_FILE", "TOKEN_PUBLIC_KEY_FILE", "STATIC_TOKENS_FILE")
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
SECRET_NAME = re.compile(r"passw|secret|token|credential|private|jaas", re.IGNORECASE)


def load(path: Path) -> ModuleType:
    """A script of deploy/k8s (no package) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grpc_secrets() -> ModuleType:
    """deploy/k8s/grpc_secrets.py, the operator's generator of the gRPC Secrets."""
    return load(ROOT / "deploy" / "k8s" / "grpc_secrets.py")


def local_kafka() -> ModuleType:
    """deploy/k8s/local_kafka.py: the local broker's ConfigMap files and Secrets."""
    return load(ROOT / "deploy" / "k8s" / "local_kafka.py")


def kafka_provision() -> ModuleType:
    """The local overlay's provisioning Job's code."""
    return load(LOCAL_OVERLAY / "kafka_provision.py")


PLACEHOLDER = local_kafka().PASSWORD_PLACEHOLDER
# `password=value` or `password="value"` in a file (properties, JAAS, StorageTool syntax).
PASSWORD_VALUE = re.compile(r'password\s*=\s*"?([^"\s;,\]]+)', re.IGNORECASE)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, Docs]:
    return request.param, render(request.param)


def namespace_of(docs: Docs) -> str:
    (name,) = [n for (kind, n) in docs if kind == "Namespace"]
    return name


# --- no secret material in the manifests ------------------------------------------------


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, scalar) of every leaf of a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    else:
        yield path, node


def secret_findings(text: str, docs: list[dict[str, Any]]) -> list[str]:
    """Everything in a render that looks like a secret value rather than a reference to one."""
    found = []
    if PEM_PRIVATE_KEY.search(text):
        found.append("a PEM private key")
    found += [f"a JWT-looking string {m.group()[:12]}..." for m in JWT.finditer(text)]
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret" and (doc.get("data") or doc.get("stringData")):
            found.append(f"{where}: a Secret with its values in the manifest")
        if doc["kind"] == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                # A setting naming a file (…_FILE) holds a path, not the secret.
                if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                    found.append(f"{where}: {key}={str(value)[:4]}... in a ConfigMap")
                # A file's password, e.g. a JAAS line: only the placeholder replaced at start.
                for match in PASSWORD_VALUE.finditer(str(value)):
                    if match.group(1) != PLACEHOLDER:
                        found.append(f"{where}: {key} holds a password literal")
        for path, value in walk(doc):
            # `password` as the *key* of a Secret reference is fine; as a value it is not.
            reference = re.search(r"secretKeyRef|TargetRef|passwordSecret", path)
            if path.lower().endswith(".password") and isinstance(value, str) and not reference:
                found.append(f"{where}: password literal at {path}")
        found += env_literals(doc, where)
    return found


def env_literals(doc: dict[str, Any], where: str) -> Iterator[str]:
    """Container env entries carrying a secret-named variable as a literal `value`."""
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        for item in container.get("env", []):
            name = item["name"]
            if "value" in item and SECRET_NAME.search(name) and not name.endswith("_FILE"):
                yield f"{where}/{container['name']}: {name} has a literal value"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_in_any_rendered_manifest(overlay: str, tmp_path: Path) -> None:
    text = render_text(overlay)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert secret_findings(text, docs) == []
    # ... nor any of the credentials the operator generates for it.
    grpc_secrets().main([str(tmp_path / "made"), "--certificates"])
    local_kafka().main(["secrets", str(tmp_path / "made" / "kafka")])
    for made in (tmp_path / "made").rglob("*"):
        if made.is_file():
            for line in made.read_text().splitlines():
                if len(line) >= 16 and "-----" not in line:
                    assert line not in text, f"{made.name} found in the render"


def test_the_scan_finds_secrets_planted_in_a_render() -> None:
    docs = [d for d in yaml.safe_load_all(render_text("local")) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    config["data"]["TRAINER_SECURITY__TOKEN"] = "abc"
    workload = next(d for d in docs if d["kind"] == "Deployment")
    env = workload["spec"]["template"]["spec"]["containers"][0].setdefault("env", [])
    env.append({"name": "INGESTION_KAFKA__SASL_PASSWORD", "value": "hunter2"})
    docs.append({"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}})
    docs.append({"kind": "X", "metadata": {"name": "x"}, "spec": {"password": "p"}})
    jaas = 'jaas.config=ScramLoginModule required username="admin" password="hunter2hunter2";'
    docs.append({"kind": "ConfigMap", "metadata": {"name": "k"}, "data": {"server": jaas}})
    planted = yaml.safe_dump_all(docs) + (
        "# -----BEGIN PRIVATE KEY-----\n# eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln\n"
    )
    found = " | ".join(secret_findings(planted, docs))
    for expected in (
        "TRAINER_SECURITY__TOKEN",
        "INGESTION_KAFKA__SASL_PASSWORD has a literal value",
        "Secret/s",
        "password literal",
        "PEM private key",
        "JWT-looking",
        "ConfigMap/k: server holds a password literal",
    ):
        assert expected in found, expected
    # The placeholder the broker's init container replaces is no finding.
    placeholder = {
        "kind": "ConfigMap",
        "metadata": {"name": "p"},
        "data": {"s": f"password={PLACEHOLDER}"},
    }
    assert secret_findings("", [placeholder]) == []


# --- gRPC: TLS and auth everywhere, credentials from read-only Secret mounts --------------


def secret_file(docs: Docs, service: str, path: str) -> tuple[str, str]:
    """(Secret, key) a file path of the container comes from; fails unless read-only."""
    spec = pod(docs, service)
    return secret_file_in(spec, spec["containers"][0], path)


def secret_file_in(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret, key) a file path of `container` of the pod `spec` comes from (read-only)."""
    name = container["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    file = PurePosixPath(path)
    for mount in container["volumeMounts"]:
        if file.parent == PurePosixPath(mount["mountPath"]):
            assert mount.get("readOnly") is True, f"{name}: {mount['name']} is writable"
            secret = volumes[mount["name"]]["secret"]
            assert secret["defaultMode"] & 0o007 == 0, f"{name}: others may read {path}"
            (key,) = [i["key"] for i in secret["items"] if i["path"] == file.name]
            return secret["secretName"], key
    raise AssertionError(f"{name}: {path} is on no mounted volume")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_serves_tls_and_checks_credentials(
    rendered: tuple[str, Docs], service: str
) -> None:
    _, docs = rendered
    env = env_of(docs, service)
    prefix = f"{service.upper()}_SECURITY__"
    assert env[prefix + "TLS"] == "true" and env[prefix + "AUTH"] == "true"
    sources = {name: secret_file(docs, service, env[prefix + name]) for name in SECURITY_FILES}
    assert sources == {
        "CA_FILE": (f"{service}-grpc-tls", "ca.crt"),
        "CERT_FILE": (f"{service}-grpc-tls", "tls.crt"),
        "KEY_FILE": (f"{service}-grpc-tls", "tls.key"),
        "TOKEN_PUBLIC_KEY_FILE": (AUTH_SECRET, "token.pub"),
        "STATIC_TOKENS_FILE": (AUTH_SECRET, "static-tokens.json"),
    }
    # A caller sends its own token, from the Secret, never as a literal.
    if service in CALLERS:
        token = {"secretKeyRef": {"name": AUTH_SECRET, "key": f"{service}.token"}}
        assert env[prefix + "TOKEN"] == token
    else:
        assert prefix + "TOKEN" not in env


# --- Kafka (production): TLS + SCRAM, one principal per service, the ACL table ----------


def test_production_kafka_listens_only_with_tls_and_scram() -> None:
    docs = render("production")
    kafka = docs[("Kafka", "streamlearn")]["spec"]["kafka"]
    assert kafka["listeners"], "no listener"
    for listener in kafka["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"] == {"type": "scram-sha-512"}, listener["name"]
    assert kafka["authorization"] == {"type": "simple", "superUsers": [ADMIN]}
    assert "userOperator" in docs[("Kafka", "streamlearn")]["spec"]["entityOperator"]


@pytest.mark.parametrize("service", SERVICES)
def test_services_reach_kafka_as_their_own_principal(
    rendered: tuple[str, Docs], service: str
) -> None:
    overlay, docs = rendered
    env = env_of(docs, service)
    prefix = f"{service.upper()}_KAFKA__"
    assert env[prefix + "SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env[prefix + "SASL_MECHANISM"] == "SCRAM-SHA-512"
    user = env[prefix + "SASL_USERNAME"]
    assert user == service
    # The password made for that user (Strimzi's, or the local generator's), by reference.
    assert env[prefix + "SASL_PASSWORD"] == {"secretKeyRef": {"name": user, "key": "password"}}
    assert secret_file(docs, service, env[prefix + "SSL_CA_LOCATION"]) == (STRIMZI_CA, "ca.crt")
    port = int(env[prefix + "BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    if overlay == "production":
        assert ("KafkaUser", user) in docs
        listeners = docs[("Kafka", "streamlearn")]["spec"]["kafka"]["listeners"]
        assert port in {listener["port"] for listener in listeners}
        return
    # Local: a principal the Job provisions, on the broker's SASL_SSL listener.
    assert user in provisioned(docs)
    server = broker_properties(docs)
    names = dict(item.split(":") for item in server["listener.security.protocol.map"].split(","))
    listeners = {int(a.rsplit(":", 1)[1]): a.split(":")[0] for a in server["listeners"].split(",")}
    assert names[listeners[port]] == "SASL_SSL"


def strimzi_grants(user: dict[str, Any]) -> frozenset[Grant]:
    """A KafkaUser's ACLs as `kafka_acl` Grants (raises on anything it cannot express)."""
    resources = {"topic": Resource.TOPIC, "group": Resource.GROUP}
    resources["transactionalId"] = Resource.TRANSACTIONAL_ID
    operations = {"Read": Operation.READ, "Write": Operation.WRITE}
    operations |= {"Describe": Operation.DESCRIBE, "Alter": Operation.ALTER}
    operations["DescribeConfigs"] = Operation.DESCRIBE_CONFIGS
    grants = set()
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*", acl
        resource = acl["resource"]
        pattern = resource.get("patternType", "literal")
        assert pattern in ("literal", "prefix"), acl
        for operation in acl["operations"]:
            grants.add(
                Grant(
                    resources[resource["type"]],
                    resource["name"],
                    operations[operation],
                    prefixed=pattern == "prefix",
                )
            )
    return frozenset(grants)


def test_production_kafka_users_have_exactly_the_acls_of_the_table() -> None:
    docs = render("production")
    users = {name: d for (kind, name), d in docs.items() if kind == "KafkaUser"}
    # The table is computed for the default names: the render must not rename any.
    config = {k for (kind, _), d in docs.items() if kind == "ConfigMap" for k in d["data"]}
    assert not [k for k in config if "_TOPICS__" in k and "REPLICATION" not in k]
    assert not [k for k in config if k.endswith(("CONSUMER_GROUP", "GROW_OUTPUTS"))]
    table = acl_table(TopicSettings())
    assert set(users) == {*table, ADMIN, "keda"}
    for user in users.values():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "streamlearn"
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    for principal, grants in table.items():
        assert strimzi_grants(users[principal]) == grants, principal
    assert "authorization" not in users[ADMIN]["spec"]  # the super user needs no ACL
    # KEDA reads ingestion's lag: the group and the raw topic, describe only.
    env = env_of(docs, "ingestion")
    assert strimzi_grants(users["keda"]) == {
        Grant(Resource.GROUP, effective("ingestion", env, "consumer_group"), Operation.DESCRIBE),
        Grant(Resource.TOPIC, effective("ingestion", env, "topics__raw"), Operation.DESCRIBE),
    }


def test_the_acl_comparison_notices_a_drift() -> None:
    users = {n: d for (k, n), d in render("production").items() if k == "KafkaUser"}
    producer = users["producer"]
    widened = json.loads(json.dumps(producer))
    widened["spec"]["authorization"]["acls"][0]["operations"].append(
        "Write"
    )  # write access to the catalog group: not in the table
    table = acl_table(TopicSettings())
    assert strimzi_grants(producer) == table["producer"]
    assert strimzi_grants(widened) != table["producer"]


def test_keda_reads_the_lag_as_its_own_principal_over_tls() -> None:
    docs = render("production")
    (trigger,) = docs[("ScaledObject", "ingestion")]["spec"]["triggers"]
    auth = docs[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]
    from_config = {r["parameter"]: (r["name"], r["key"]) for r in auth["configMapTargetRef"]}
    values = {p: docs[("ConfigMap", n)]["data"][k] for p, (n, k) in from_config.items()}
    assert values == {"sasl": "scram_sha512", "tls": "enable", "username": "keda"}
    from_secret = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
    assert from_secret == {"password": ("keda", "password"), "ca": (STRIMZI_CA, "ca.crt")}


def test_production_topics_exist_before_the_services_with_their_shape() -> None:
    docs = render("production")
    env = env_of(docs, "ingestion")
    replication = int(effective("ingestion", env, "topics__replication_factor"))
    expected = {
        t.name: (t.partitions, t.replication_factor, t.config)
        for t in standard_topics(TopicSettings(replication_factor=replication))
    }
    topics = {
        d["spec"]["topicName"]: (
            d["spec"]["partitions"],
            d["spec"]["replicas"],
            d["spec"]["config"],
        )
        for (kind, _), d in docs.items()
        if kind == "KafkaTopic"
    }
    assert topics == expected


# --- certificates ------------------------------------------------------------------------


def service_names(docs: Docs, service: str) -> set[str]:
    """The Services selecting `service`'s pods: the names its clients dial."""
    labels = docs[(WORKLOAD[service], service)]["spec"]["template"]["metadata"]["labels"]
    return {
        name
        for (kind, name), d in docs.items()
        if kind == "Service" and d["spec"]["selector"].items() <= labels.items()
    }


def test_production_certificates_name_each_service_and_use_the_configured_issuer() -> None:
    docs = render("production")
    namespace = namespace_of(docs)
    issuer_file = ROOT / "deploy" / "k8s" / "overlays" / "production" / "grpc-tls-issuer.yaml"
    issuer = yaml.safe_load(issuer_file.read_text())["data"]
    certificates = {
        d["spec"]["secretName"]: d["spec"] for (kind, _), d in docs.items() if kind == "Certificate"
    }
    for service in SERVICES:
        spec = certificates[f"{service}-grpc-tls"]
        names = set(spec["dnsNames"])
        for name in service_names(docs, service):
            domain = f"{name}.{namespace}"
            assert {name, domain, f"{domain}.svc", f"{domain}.svc.cluster.local"} <= names
        assert spec["issuerRef"]["name"] == issuer["name"]
        assert spec["issuerRef"]["kind"] == issuer["kind"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["privateKey"]["rotationPolicy"] == "Always"
    if issuer["kind"] == "Issuer":  # the default: the private CA of the overlay
        ca = docs[("Issuer", issuer["name"])]["spec"]["ca"]["secretName"]
        assert any(c.get("isCA") for name, c in certificates.items() if name == ca)


# --- the Secrets: who makes each, and the generator makes what is mounted --------------


def referenced_secrets(docs: Docs) -> dict[str, set[str]]:
    """Secret name -> the keys the workloads read from it (volumes and secretKeyRefs)."""
    found: dict[str, set[str]] = {}
    for (kind, _), doc in docs.items():
        if kind not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                keys = {i["key"] for i in volume["secret"]["items"]}
                found.setdefault(volume["secret"]["secretName"], set()).update(keys)
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    keys = {i["key"] for i in source["secret"]["items"]}
                    found.setdefault(source["secret"]["name"], set()).update(keys)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.setdefault(ref["name"], set()).add(ref["key"])
    return found


def test_every_secret_a_workload_reads_has_a_maker(
    rendered: tuple[str, Docs], tmp_path: Path
) -> None:
    overlay, docs = rendered
    made = tmp_path / "made"
    args = [str(made), "--namespace", namespace_of(docs)]
    grpc_secrets().main(args if overlay == "production" else [*args, "--certificates"])
    kafka = tmp_path / "kafka"  # the local broker's, as Strimzi would make them
    if overlay == "local":
        local_kafka().main(["secrets", str(kafka), "--namespace", namespace_of(docs)])
    certificates = {d["spec"]["secretName"] for (k, _), d in docs.items() if k == "Certificate"}
    users = {name for (kind, name) in docs if kind == "KafkaUser"}
    for secret, keys in referenced_secrets(docs).items():
        generated = [d / secret for d in (made, kafka) if (d / secret).is_dir()]
        if generated:  # the operator's generators
            assert keys <= {p.name for p in generated[0].iterdir()}, secret
        elif secret in certificates:  # cert-manager (a CA issuer adds ca.crt)
            assert keys == {"tls.crt", "tls.key", "ca.crt"}, secret
        elif secret in users:  # Strimzi's User Operator
            assert keys == {"password"}, secret
        elif secret == STRIMZI_CA and ("Kafka", "streamlearn") in docs:
            assert keys == {"ca.crt"}
        else:
            assert secret in OTHER_SECRETS, f"nothing makes the Secret {secret}"
    if overlay == "local":  # no cert-manager: the generator made every certificate
        assert all((made / f"{s}-grpc-tls").is_dir() for s in SERVICES)


def test_the_generator_makes_working_private_credentials(tmp_path: Path) -> None:
    docs = render("local")
    namespace = namespace_of(docs)
    made = tmp_path / "made"
    generator = grpc_secrets()
    assert generator.main([str(made), "--namespace", namespace, "--certificates"]) == 0
    for path in made.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    auth = made / AUTH_SECRET
    static = StaticTokens.from_file(auth / "static-tokens.json")
    tokens = {p.stem: p for p in [*auth.glob("*.token"), *(made / "users").glob("*.token")]}
    assert set(tokens) == {*CALLERS, "producer", "reader", "promoter", "admin"}
    for name, path in tokens.items():
        principal = static.lookup(path.read_text())
        assert (principal.name, principal.roles) == (name, frozenset({name}))
    TokenVerifier.from_file(auth / "token.pub")  # a valid Ed25519 public key
    ca = x509.load_pem_x509_certificate((made / "ca" / "ca.crt").read_bytes())
    for service in SERVICES:
        folder = made / f"{service}-grpc-tls"
        cert = x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = set(sans.value.get_values_for_type(x509.DNSName))
        for name in service_names(docs, service):
            assert {name, f"{name}.{namespace}.svc.cluster.local"} <= names
    # Credentials are never overwritten: a second run into the same directory is refused.
    with pytest.raises(SystemExit) as refused:
        generator.main([str(made)])
    assert refused.value.code == 2


# --- network policies ----------------------------------------------------------------


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions In/Exists) matches `labels`."""
    if selector is None:
        return False
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator not in ("In", "Exists"):
            raise AssertionError(f"selector operator {operator} not modelled")
    return True


Pod = tuple[dict[str, str], dict[str, str]]  # (pod labels, namespace labels)


def peer_matches(peer: dict[str, Any], source: Pod, namespace: str) -> bool:
    pod_labels, ns_labels = source
    same = ns_labels.get("kubernetes.io/metadata.name") == namespace
    if "ipBlock" in peer:
        return False
    in_namespace = (
        selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer else same
    )
    return in_namespace and ("podSelector" not in peer or selects(peer["podSelector"], pod_labels))


def port_matches(rule_ports: list[dict[str, Any]] | None, port: int, named: dict[str, int]) -> bool:
    if not rule_ports:
        return True
    return any(named.get(p["port"], p["port"]) == port for p in rule_ports)


def ingress_allowed(
    docs: Docs, service: str, port: str, source: Pod, kind: str | None = None
) -> bool:
    """Whether the policies of the render let `source` open `service`'s port `port`."""
    namespace = namespace_of(docs)
    template = docs[(kind or WORKLOAD[service], service)]["spec"]["template"]
    labels = template["metadata"]["labels"]
    named = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    policies = [
        d["spec"]
        for (kind, _), d in docs.items()
        if kind == "NetworkPolicy"
        and "Ingress" in d["spec"]["policyTypes"]
        and (d["spec"]["podSelector"] == {} or selects(d["spec"]["podSelector"], labels))
    ]
    assert policies, f"{service}: no ingress policy, everything is open"
    return any(
        port_matches(rule.get("ports"), named[port], named)
        and any(peer_matches(peer, source, namespace) for peer in rule.get("from", []))
        for spec in policies
        for rule in spec.get("ingress", [])
    )


def egress_ports(docs: Docs, service: str) -> set[int]:
    """The destination ports `service` may open at all (any egress rule)."""
    labels = docs[(WORKLOAD[service], service)]["spec"]["template"]["metadata"]["labels"]
    rules = [
        rule
        for (kind, _), d in docs.items()
        if kind == "NetworkPolicy"
        and "Egress" in d["spec"]["policyTypes"]
        and selects(d["spec"]["podSelector"], labels)
        for rule in d["spec"].get("egress", [])
    ]
    assert rules, f"{service}: no egress policy, every destination is open"
    assert all(rule.get("ports") for rule in rules), f"{service}: an egress rule with no port"
    return {p["port"] for rule in rules for p in rule["ports"]}


def namespace_pod(namespace: str, **labels: str) -> Pod:
    return labels, {"kubernetes.io/metadata.name": namespace}


def test_network_policies_open_only_the_flows_of_the_architecture(
    rendered: tuple[str, Docs],
) -> None:
    overlay, docs = rendered
    namespace = namespace_of(docs)
    app = "app.kubernetes.io/name"
    sources = {
        "trainer": namespace_pod(namespace, **{app: "trainer"}),
        "inference": namespace_pod(namespace, **{app: "inference"}),
        "ingestion": namespace_pod(namespace, **{app: "ingestion"}),
        "a pod of the namespace": namespace_pod(namespace, app="other"),
        "a client": namespace_pod("apps", **{"streamlearn.io/client": "true"}),
        "an operator": namespace_pod("ops", **{"streamlearn.io/operator": "true"}),
        "prometheus": namespace_pod("monitoring", app="prometheus"),
    }
    expected = {
        ("ingestion", "grpc"): {"a client"},
        ("inference", "grpc"): {"a client"},
        ("registry", "grpc"): {"trainer", "inference", "an operator"},
        ("trainer", "grpc"): set(),  # health only, read by the exec probes from inside
        ("joiner", "grpc"): set(),  # likewise
    } | {(service, "metrics"): {"prometheus"} for service in SERVICES}
    for (service, port), allowed in expected.items():
        for who, source in sources.items():
            verdict = ingress_allowed(docs, service, port, source)
            assert verdict == (who in allowed), f"{who} -> {service} {port}: {verdict}"
    # Egress: DNS, Kafka, the registry for its callers, PostgreSQL for the registry.
    bootstrap = {env_of(docs, s)[f"{s.upper()}_KAFKA__BOOTSTRAP_SERVERS"] for s in SERVICES}
    (kafka_port,) = {int(address.rsplit(":", 1)[1]) for address in bootstrap}
    for service in SERVICES:
        wanted = {53, kafka_port} | ({50052} if service in CALLERS else set())
        if service == "registry" and overlay == "production":
            wanted.add(5432)
        assert egress_ports(docs, service) == wanted, service


def test_kafka_takes_connections_from_the_services_and_clients_only(
    rendered: tuple[str, Docs],
) -> None:
    overlay, docs = rendered
    namespace = namespace_of(docs)
    services = [namespace_pod(namespace, **{"app.kubernetes.io/name": s}) for s in SERVICES]
    client = namespace_pod("apps", **{"streamlearn.io/client": "true"})
    stranger = namespace_pod(namespace, app="other")
    if overlay == "production":  # Strimzi makes the policy from the listener's peers
        (listener,) = docs[("Kafka", "streamlearn")]["spec"]["kafka"]["listeners"]
        peers = listener["networkPolicyPeers"]
        keda = namespace_pod("keda", app="keda-operator")
        for source in [*services, client, keda]:
            assert any(peer_matches(p, source, namespace) for p in peers), source
        assert not any(peer_matches(p, stranger, namespace) for p in peers)
        return
    for source in [*services, client]:
        assert ingress_allowed(docs, "kafka", "client", source, "StatefulSet"), source
    assert not ingress_allowed(docs, "kafka", "client", stranger, "StatefulSet")
    assert not ingress_allowed(docs, "kafka", "controller", services[0], "StatefulSet")


# --- the local overlay's broker: secured by the local broker's own code --------------------


def broker_pod(docs: Docs) -> dict[str, Any]:
    spec: dict[str, Any] = docs[("StatefulSet", "kafka")]["spec"]["template"]["spec"]
    return spec


def broker_properties(docs: Docs) -> dict[str, str]:
    """The local broker's server.properties, as its ConfigMap holds it."""
    return properties(mounted_config_map(docs, broker_pod(docs), "config")["server.properties"])


def job_pod(docs: Docs) -> dict[str, Any]:
    spec: dict[str, Any] = docs[("Job", "kafka-provision")]["spec"]["template"]["spec"]
    return spec


def provisioned(docs: Docs) -> dict[str, str]:
    """Principal -> the Secret its password comes from, as the Job's projected volume has it."""
    (volume,) = [v for v in job_pod(docs)["volumes"] if v["name"] == "passwords"]
    found: dict[str, str] = {}
    for source in volume["projected"]["sources"]:
        (item,) = source["secret"]["items"]
        assert item["key"] == "password", source
        name = item["path"].removeprefix("kafka-").removesuffix(".password")
        assert item["path"] == f"kafka-{name}.password", item
        found[name] = source["secret"]["name"]
    return found


def test_the_local_broker_config_is_the_local_brokers_own_code() -> None:
    docs = render("local")
    namespace = namespace_of(docs)
    files = mounted_config_map(docs, broker_pod(docs), "config")
    assert files == local_kafka().config_files(namespace)  # nothing drifts from the code
    server = properties(files["server.properties"])
    # What `streamlearn up --secure` runs: SASL_SSL for clients, mutual TLS for the
    # controller, the StandardAuthorizer with no access without an ACL, the admin super user.
    assert server["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert server["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert server["listener.name.controller.ssl.client.auth"] == "required"
    assert server["authorizer.class.name"].endswith(".StandardAuthorizer")
    assert server["allow.everyone.if.no.acl.found"] == "false"
    assert server["super.users"] == f"User:{ADMIN}"
    # Its keystore and CA from the broker's Secret, mounted read-only.
    spec = broker_pod(docs)
    (broker,) = spec["containers"]
    for setting, key in (
        ("ssl.keystore.location", "keystore.pem"),
        ("ssl.truststore.location", "ca.crt"),
    ):
        assert secret_file_in(spec, broker, server[setting]) == ("kafka-broker-tls", key)
    # It binds and advertises its pod's name under the headless Service, published unready.
    statefulset = docs[("StatefulSet", "kafka")]["spec"]
    headless = docs[("Service", statefulset["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    host = f"kafka-0.{statefulset['serviceName']}.{namespace}.svc"
    assert server["advertised.listeners"] == server["listeners"]
    ports = {p["port"] for p in docs[("Service", "kafka")]["spec"]["ports"]}
    assert server["listeners"].startswith(f"SASL_SSL://{host}:") and ports == {9092}
    assert f"SASL_SSL://{host}:9092" in server["listeners"]


def test_the_admin_password_reaches_the_broker_only_from_its_secret() -> None:
    docs = render("local")
    spec = broker_pod(docs)
    (init,) = spec["initContainers"]
    files = mounted_config_map(docs, spec, "config")
    jaas = properties(files["server.properties"])[
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"
    ]
    assert f'username="{ADMIN}" password="{PLACEHOLDER}"' in jaas
    assert files["add-scram"] == f"SCRAM-SHA-512=[name={ADMIN},password={PLACEHOLDER}]\n"
    script = init["command"][-1]
    (source,) = re.findall(r'password="\$\(cat (\S+)\)"', script)
    assert secret_file_in(spec, init, source) == (ADMIN, "password")
    assert f"placeholder={PLACEHOLDER}" in script
    assert script.count('"s/$placeholder/$password/g"') == 2  # server.properties, add-scram
    # Set at format time, for the one KRaft voter.
    assert "kafka-storage.sh format --standalone" in script and '--add-scram "$scram"' in script
    # The file holding it lives on memory, mounted by this pod only.
    (runtime,) = [v for v in spec["volumes"] if v["name"] == "runtime"]
    assert runtime["emptyDir"]["medium"] == "Memory"


def run_script(script: str, password: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The init container's password checks and substitution, run here with `sh`."""
    head = script.split("mkdir -p", 1)[0]  # before the Kafka tools
    for mounted in ("/etc/kafka/admin", "/etc/kafka/streamlearn", "/run/kafka"):
        head = head.replace(mounted, str(tmp_path / mounted.strip("/").replace("/", "-")))
    (tmp_path / "etc-kafka-admin").mkdir(exist_ok=True)
    (tmp_path / "etc-kafka-admin" / "password").write_text(password + "\n")
    config = tmp_path / "etc-kafka-streamlearn"
    config.mkdir(exist_ok=True)
    for name, text in local_kafka().config_files().items():
        (config / name).write_text(text)
    (tmp_path / "run-kafka").mkdir(exist_ok=True)
    return subprocess.run(["sh", "-ec", head], capture_output=True, text=True, timeout=30)


def test_the_init_container_substitutes_a_good_password_and_refuses_a_bad_one(
    tmp_path: Path,
) -> None:
    (init,) = broker_pod(render("local"))["initContainers"]
    script = init["command"][-1]
    good = "A" * 20 + "_-z9"
    result = run_script(script, good, tmp_path)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "run-kafka" / "server.properties").read_text()
    assert PLACEHOLDER not in written and f'password="{good}";' in written
    assert (tmp_path / "run-kafka" / "server.properties").stat().st_mode & 0o077 == 0
    for bad in ("short", "with/slash" + "x" * 16, 'quote"' + "x" * 16, "&" * 20):
        refused = run_script(script, bad, tmp_path)
        assert refused.returncode != 0 and "admin password" in refused.stderr, bad


def test_the_job_provisions_every_principal_of_the_table_as_the_admin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = render("local")
    spec = job_pod(docs)
    (container,) = spec["containers"]
    # Every principal of the ACL table, each password from the Secret named after it.
    table = acl_table(TopicSettings())
    assert provisioned(docs) == {name: name for name in table}
    # The code it runs is this repository's module, through its ConfigMap.
    code = mounted_config_map(docs, spec, "code")
    assert code == {"kafka_provision.py": (LOCAL_OVERLAY / "kafka_provision.py").read_text()}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "code"]
    assert container["command"][:2] == ["python", f"{mount['mountPath']}/kafka_provision.py"]
    (passwords,) = [m for m in container["volumeMounts"] if m["name"] == "passwords"]
    assert container["command"][2:] == [passwords["mountPath"]]
    # As the admin over TLS + SCRAM: what the module accepts, its password by reference.
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["STREAMLEARN_KAFKA_SASL_PASSWORD"] == {
        "secretKeyRef": {"name": ADMIN, "key": "password"}
    }
    ca = env["STREAMLEARN_KAFKA_SSL_CA_LOCATION"]
    assert secret_file_in(spec, container, ca) == (STRIMZI_CA, "ca.crt")
    for name, value in env.items():
        monkeypatch.setenv(name, value if isinstance(value, str) else "x" * 20)
    admin = kafka_provision().admin_settings(CliSettings())
    assert (admin.sasl_username, admin.security_protocol) == (ADMIN, "SASL_SSL")
    # The topics: the defaults the services use (the local ConfigMap renames none).
    config = {k for (kind, _), d in docs.items() if kind == "ConfigMap" for k in d["data"]}
    assert not [k for k in config if "_TOPICS__" in k or k.endswith("CONSUMER_GROUP")]


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("STREAMLEARN_KAFKA_BOOTSTRAP", "", "BOOTSTRAP is not set"),
        ("STREAMLEARN_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT", "connects as"),
        ("STREAMLEARN_KAFKA_SASL_USERNAME", "producer", "connects as"),
        ("STREAMLEARN_KAFKA_SASL_MECHANISM", "PLAIN", "connects as"),
        ("STREAMLEARN_KAFKA_SASL_PASSWORD", "", "PASSWORD"),
        ("STREAMLEARN_KAFKA_SSL_CA_LOCATION", None, "SSL_CA_LOCATION"),
    ],
)
def test_the_job_refuses_to_act_as_the_admin_unsafely(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str | None, reason: str
) -> None:
    good = {
        "STREAMLEARN_KAFKA_BOOTSTRAP": "kafka:9092",
        "STREAMLEARN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMLEARN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMLEARN_KAFKA_SASL_USERNAME": ADMIN,
        "STREAMLEARN_KAFKA_SASL_PASSWORD": "x" * 20,
        "STREAMLEARN_KAFKA_SSL_CA_LOCATION": "/ca.crt",
    }
    for name, text in good.items():
        monkeypatch.setenv(name, text)
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=reason):
        kafka_provision().admin_settings(CliSettings())


def test_the_job_copies_the_passwords_privately_and_names_missing_ones(tmp_path: Path) -> None:
    module = kafka_provision()
    source, target = tmp_path / "mounted", tmp_path / "private"
    source.mkdir()
    (source / "kafka-trainer.password").write_text("p" * 20)
    (source / "kafka-trainer.password").chmod(0o440)  # as a Secret in a pod with an fsGroup
    with pytest.raises(ConfigError, match="no password for producer, reader"):
        module.private_copies(source, ["trainer", "reader", "producer"], target)
    module.private_copies(source, ["trainer"], target)
    copy = target / "kafka-trainer.password"
    assert copy.stat().st_mode & 0o077 == 0
    assert password_file(copy).get_secret_value() == "p" * 20  # what provision then reads
    with pytest.raises(ConfigError, match="no directory"):
        module.check_passwords(tmp_path / "absent", ["trainer"])


def test_the_job_fails_with_a_line_not_a_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STREAMLEARN_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "STREAMLEARN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMLEARN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMLEARN_KAFKA_SASL_USERNAME": ADMIN,
        "STREAMLEARN_KAFKA_SASL_PASSWORD": "x" * 20,
        "STREAMLEARN_KAFKA_SSL_CA_LOCATION": str(tmp_path / "ca.crt"),
        "PYTHONPATH": str(ROOT),
    }
    script = LOCAL_OVERLAY / "kafka_provision.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "none")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("kafka-provision: ") and "Traceback" not in result.stderr


def test_the_kafka_generator_makes_the_brokers_and_every_principals_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = render("local")
    namespace = namespace_of(docs)
    made = tmp_path / "kafka"
    assert local_kafka().main(["secrets", str(made), "--namespace", namespace]) == 0
    printed = capsys.readouterr().out
    for path in made.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    # A password per principal: the admin and every one the Job provisions.
    names = {ADMIN, *acl_table(TopicSettings())}
    passwords = {n: password_file(made / n / "password").get_secret_value() for n in names}
    assert len(set(passwords.values())) == len(names)
    assert not [p for p in passwords.values() if p in printed]  # commands, no value
    assert f"create secret generic {ADMIN} --from-file=" in printed
    # The keystore: key, certificate, CA, for every name the clients dial.
    keystore = (made / "kafka-broker-tls" / "keystore.pem").read_bytes()
    ca = x509.load_pem_x509_certificate((made / STRIMZI_CA / "ca.crt").read_bytes())
    assert (made / "kafka-broker-tls" / "ca.crt").read_bytes() == ca.public_bytes(
        serialization.Encoding.PEM
    )
    assert keystore.startswith(b"-----BEGIN PRIVATE KEY-----")
    leaf, chain = x509.load_pem_x509_certificates(keystore)
    assert chain == ca
    leaf.verify_directly_issued_by(ca)
    sans = set(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))  # fmt: skip
    bootstrap = {env_of(docs, s)[f"{s.upper()}_KAFKA__BOOTSTRAP_SERVERS"] for s in SERVICES}
    advertised = broker_properties(docs)["advertised.listeners"]
    hosts = {a.rsplit(":", 1)[0] for a in bootstrap}
    hosts |= {a.split("//", 1)[1].rsplit(":", 1)[0] for a in advertised.split(",")}
    assert hosts <= sans
    # Its subject is the one the controller maps to the admin (mutual TLS there).
    rules = broker_properties(docs)["listener.name.controller.ssl.principal.mapping.rules"]
    (common_name,) = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert rules.startswith(f"RULE:^CN={common_name.value!s}$/{ADMIN}/")
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)


# --- mutual TLS to the registry ------------------------------------------------------------


def registry_client(env: dict[str, Any], service: str) -> dict[str, Any]:
    """A caller's registry client settings, as `registry_client()` picks them."""
    own = f"{service.upper()}_REGISTRY_SECURITY__"
    chosen = own if any(k.startswith(own) for k in env) else f"{service.upper()}_SECURITY__"
    return {k.removeprefix(chosen): v for k, v in env.items() if k.startswith(chosen)}


def test_the_registry_requires_a_client_certificate_the_others_take_tokens(
    rendered: tuple[str, Docs],
) -> None:
    _, docs = rendered
    for service in SERVICES:
        env = env_of(docs, service)
        required = env.get(f"{service.upper()}_SECURITY__REQUIRE_CLIENT_CERTIFICATE")
        assert (required == "true") == (service == "registry"), service
    # The callers of the registry are exactly the services dialling its Service.
    callers = {
        s
        for s in SERVICES
        if env_of(docs, s).get(f"{s.upper()}_REGISTRY_ADDRESS", "").startswith("registry:")
    }
    assert callers == set(CALLERS)


@pytest.mark.parametrize("service", CALLERS)
def test_every_caller_of_the_registry_presents_a_certificate_of_its_role(
    rendered: tuple[str, Docs], service: str, tmp_path: Path
) -> None:
    overlay, docs = rendered
    client = registry_client(env_of(docs, service), service)
    assert client["TLS"] == "true"
    secret = f"{service}-grpc-tls"
    assert secret_file(docs, service, client["CERT_FILE"]) == (secret, "tls.crt")
    assert secret_file(docs, service, client["KEY_FILE"]) == (secret, "tls.key")
    assert secret_file(docs, service, client["CA_FILE"]) == (secret, "ca.crt")
    if overlay == "production":
        certificates = {
            d["spec"]["secretName"]: d["spec"] for (k, _), d in docs.items() if k == "Certificate"
        }
        spec = certificates[secret]
        assert spec["commonName"] == service
        assert spec["subject"]["organizationalUnits"] == [service]
        assert "client auth" in spec["usages"]
        assert spec["issuerRef"] == certificates["registry-grpc-tls"]["issuerRef"]  # one CA
        return
    made = tmp_path / "made"
    grpc_secrets().main([str(made), "--namespace", namespace_of(docs), "--certificates"])
    cert = (made / secret / "tls.crt").read_bytes()
    assert principal_from_certificate(cert) == Principal(service, frozenset({service}))
    registry_ca = x509.load_pem_x509_certificate(
        (made / "registry-grpc-tls" / "ca.crt").read_bytes()
    )
    x509.load_pem_x509_certificate(cert).verify_directly_issued_by(registry_ca)


def test_production_issues_operators_a_client_certificate_per_role() -> None:
    docs = render("production")
    certificates = {d["spec"]["secretName"]: d for (k, _), d in docs.items() if k == "Certificate"}
    service = certificates["registry-grpc-tls"]["spec"]
    for role in USER_ROLES:
        spec = certificates[f"{role}-grpc-client"]["spec"]
        assert spec["commonName"] == role and spec["subject"]["organizationalUnits"] == [role]
        assert "client auth" in spec["usages"] and "server auth" not in spec["usages"]
        assert spec["issuerRef"] == service["issuerRef"]
        assert spec["privateKey"]["rotationPolicy"] == "Always"
    registry = certificates["registry-grpc-tls"]["spec"]
    assert "client auth" in registry["usages"]  # what its probes present
    assert "subject" not in registry  # no role: health only


def test_the_generator_issues_operators_and_probes_client_certificates(tmp_path: Path) -> None:
    made = tmp_path / "made"
    grpc_secrets().main([str(made), "--certificates"])
    ca = x509.load_pem_x509_certificate((made / "ca" / "ca.crt").read_bytes())
    for role in USER_ROLES:
        cert = (made / "users" / f"{role}.crt").read_bytes()
        assert principal_from_certificate(cert) == Principal(role, frozenset({role}))
        parsed = x509.load_pem_x509_certificate(cert)
        parsed.verify_directly_issued_by(ca)
        usages = parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert (made / "users" / f"{role}.key").stat().st_mode & 0o077 == 0
    # The registry's own: a client certificate too (its probes), with no role at all.
    registry = (made / "registry-grpc-tls" / "tls.crt").read_bytes()
    extensions = x509.load_pem_x509_certificate(registry).extensions
    registry_usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in list(registry_usages)
    with pytest.raises(Unauthenticated, match="no role"):
        principal_from_certificate(registry)


def test_the_generated_certificates_pass_the_registrys_mutual_tls(tmp_path: Path) -> None:
    """A server configured as the registry is: its probe's, a caller's and an operator's
    certificates get through, no certificate or another CA's do not."""
    made = tmp_path / "made"
    grpc_secrets().main([str(made), "--certificates"])
    docs = render("local")
    env = env_of(docs, "registry")
    mounted = {"/etc/streamlearn/grpc-tls": made / "registry-grpc-tls",
               "/etc/streamlearn/grpc-auth": made / AUTH_SECRET}  # fmt: skip

    def local(path: str) -> Path:
        folder, _, name = path.rpartition("/")
        return mounted[folder] / name

    settings = {k.removeprefix("REGISTRY_SECURITY__").lower(): v for k, v in env.items()
                if k.startswith("REGISTRY_SECURITY__")}  # fmt: skip
    settings = {k: local(v) if k.endswith("_file") else v for k, v in settings.items()}
    server, _, port = build_server("127.0.0.1:0", [], security=GrpcSecurity(**settings))
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        ca = made / "ca" / "ca.crt"

        def reaches(cert: Path | None, key: Path | None) -> bool:
            security = GrpcSecurity(
                tls=True, ca_file=ca, cert_file=cert, key_file=key, server_name="registry"
            )
            return probe.check(address, security=security, timeout=5)

        pairs = {
            "probe": made / "registry-grpc-tls" / "tls",
            "trainer": made / "trainer-grpc-tls" / "tls",
            "inference": made / "inference-grpc-tls" / "tls",
            "admin": made / "users" / "admin",
        }
        for who, stem in pairs.items():
            assert reaches(stem.with_suffix(".crt"), stem.with_suffix(".key")), who
        assert not reaches(None, None)
        other = pki.issue(pki.new_ca("another CA"), "registry", client=True, roles=["admin"])
        cert = pki.write_private(tmp_path / "other.crt", other.cert)
        assert not reaches(cert, pki.write_private(tmp_path / "other.key", other.key))
    finally:
        server.stop(None)
