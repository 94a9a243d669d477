"""deploy/k8s runs secured: gRPC TLS and auth on every service with its credentials mounted
read-only from Secrets, Kafka over TLS with SCRAM and the ACLs of `shared.security.kafka_acl`
(production), only the architecture's flows open, and no secret value in any manifest."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml
from cryptography import x509

from shared.kafka.admin import standard_topics
from shared.security.kafka_acl import ADMIN, Grant, Operation, Resource, acl_table
from shared.security.tokens import StaticTokens, TokenVerifier
from shared.settings import TopicSettings
from tests.deploy import ROOT, SERVICES
from tests.unit.test_k8s_manifests import (
    OVERLAYS,
    WORKLOAD,
    Docs,
    effective,
    env_of,
    pod,
    render,
    render_text,
)

CALLERS = ("trainer", "inference")  # the services that call the registry
AUTH_SECRET = "streamlearn-grpc-auth"
STRIMZI_CA = "streamlearn-cluster-ca-cert"
# Secrets made outside the render and outside deploy/k8s/grpc_secrets.py, each with its maker.
OTHER_SECRETS = {"streamlearn-registry-db": "the operator (README: External Secrets)"}
SECURITY_FILES = ("CA_FILE", "CERT_FILE", "KEY_FILE", "TOKEN_PUBLIC_KEY_FILE", "STATIC_TOKENS_FILE")
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
SECRET_NAME = re.compile(r"passw|secret|token|credential|private|jaas", re.IGNORECASE)


def grpc_secrets() -> ModuleType:
    """deploy/k8s/grpc_secrets.py, the operator's generator of the gRPC Secrets."""
    path = ROOT / "deploy" / "k8s" / "grpc_secrets.py"
    spec = importlib.util.spec_from_file_location("grpc_secrets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    ):
        assert expected in found, expected


# --- gRPC: TLS and auth everywhere, credentials from read-only Secret mounts --------------


def secret_file(docs: Docs, service: str, path: str) -> tuple[str, str]:
    """(Secret, key) a file path of the container comes from; fails unless read-only."""
    container = pod(docs, service)["containers"][0]
    volumes = {v["name"]: v for v in pod(docs, service)["volumes"]}
    file = PurePosixPath(path)
    for mount in container["volumeMounts"]:
        if file.parent == PurePosixPath(mount["mountPath"]):
            assert mount.get("readOnly") is True, f"{service}: {mount['name']} is writable"
            secret = volumes[mount["name"]]["secret"]
            assert secret["defaultMode"] & 0o007 == 0, f"{service}: others may read {path}"
            (key,) = [i["key"] for i in secret["items"] if i["path"] == file.name]
            return secret["secretName"], key
    raise AssertionError(f"{service}: {path} is on no mounted volume")


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
def test_production_services_reach_kafka_as_their_own_principal(service: str) -> None:
    docs = render("production")
    env = env_of(docs, service)
    prefix = f"{service.upper()}_KAFKA__"
    assert env[prefix + "SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env[prefix + "SASL_MECHANISM"] == "SCRAM-SHA-512"
    user = env[prefix + "SASL_USERNAME"]
    assert user == service and ("KafkaUser", user) in docs
    # The password Strimzi generated for that user, by reference.
    assert env[prefix + "SASL_PASSWORD"] == {"secretKeyRef": {"name": user, "key": "password"}}
    assert secret_file(docs, service, env[prefix + "SSL_CA_LOCATION"]) == (STRIMZI_CA, "ca.crt")
    port = int(env[prefix + "BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    listeners = docs[("Kafka", "streamlearn")]["spec"]["kafka"]["listeners"]
    assert port in {listener["port"] for listener in listeners}


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
        if kind not in ("Deployment", "StatefulSet"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                keys = {i["key"] for i in volume["secret"]["items"]}
                found.setdefault(volume["secret"]["secretName"], set()).update(keys)
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
    certificates = {d["spec"]["secretName"] for (k, _), d in docs.items() if k == "Certificate"}
    users = {name for (kind, name) in docs if kind == "KafkaUser"}
    for secret, keys in referenced_secrets(docs).items():
        if (made / secret).is_dir():  # the operator's generator
            assert keys <= {p.name for p in (made / secret).iterdir()}, secret
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
