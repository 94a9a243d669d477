"""The real registry and inference services over TLS with auth, on the real broker.

Every RPC of both services is called without credentials, with a token of every role the
policy refuses and with one of every role it allows; then mutual TLS, the audit actor,
probes, the SDK and tritonclient over TLS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton  # type: ignore[import-untyped]
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from inference import grpc_service_pb2
from services.inference import app as inference_app
from services.inference.settings import InferenceSettings
from services.ingestion import app as ingestion_app
from services.ingestion.settings import IngestionSettings
from services.registry.names import SERVICE as REGISTRY_SERVICE
from services.registry.settings import RegistrySettings
from shared.clients.registry import RegistryClient
from shared.errors import StreamlearnError
from shared.grpc.channel import channel_for
from shared.grpc.probe import check
from shared.grpc.probe import main as probe_main
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.onnx_models import INPUT, linear_model
from shared.security import pki, roles
from shared.security.pki import KeyPair
from shared.security.tokens import SigningKey, mint, new_signing_key, token_digest
from shared.settings import GrpcSecurity, KafkaSettings, TopicSettings
from streamlearn.client import InferenceClient
from streamlearn.v1 import ingest_pb2, registry_pb2
from tests.helpers import wait_until
from tests.integration.conftest import Running

FEATURES = 4
HOSTS = ["127.0.0.1", "localhost"]
STATIC_TOKEN = "static-reader-" + uuid.uuid4().hex
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# What an allowed call may not end with: refused, or a method the server does not have.
NOT_ALLOWED = REFUSED | {grpc.StatusCode.UNIMPLEMENTED}


@dataclass
class Pki:
    """A CA, a token signing key and the files a server reads, in one directory."""

    root: Path
    ca: KeyPair
    key: SigningKey

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def write(self, name: str, data: bytes) -> Path:
        return pki.write_private(self.root / name, data)

    def token(self, subject: str, *held: str) -> SecretStr:
        return SecretStr(mint(self.key.private, subject, held))

    def server(self, name: str, *held: str, token: SecretStr | None = None) -> GrpcSecurity:
        """A service's security: its certificate (server, and client with roles), auth on."""
        pair = pki.issue(self.ca, name, hosts=HOSTS, server=True, client=bool(held), roles=held)
        return GrpcSecurity(
            tls=True,
            auth=True,
            ca_file=self.ca_file,
            cert_file=self.write(f"{name}.pem", pair.cert),
            key_file=self.write(f"{name}.key", pair.key),
            token_public_key_file=self.root / "token.pub",
            static_tokens_file=self.root / "static.json",
            token=token,
        )

    def client(
        self,
        token: SecretStr | None = None,
        cert: tuple[Path, Path] | None = None,
        server_name: str | None = None,
    ) -> GrpcSecurity:
        """A client's security: trust the CA; a token, a certificate (cert, key) or neither."""
        cert_file, key_file = cert or (None, None)
        return GrpcSecurity(
            tls=True,
            ca_file=self.ca_file,
            token=token,
            cert_file=cert_file,
            key_file=key_file,
            server_name=server_name,
        )

    def certified(self, pair: KeyPair, name: str, server_name: str) -> GrpcSecurity:
        """A client presenting `pair` (mutual TLS), no token."""
        cert = (
            self.write(f"client-{name}.pem", pair.cert),
            self.write(f"client-{name}.key", pair.key),
        )
        return self.client(cert=cert, server_name=server_name)


@dataclass
class Secured:
    pki: Pki
    registry: Running
    inference: Running
    version: int
    ingestion: Running


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("secrets")
    made = Pki(root, pki.new_ca(), new_signing_key())
    made.write("ca.pem", made.ca.cert)
    made.write("token.pub", made.key.public)
    static = {token_digest(STATIC_TOKEN): {"principal": "dashboard", "roles": ["reader"]}}
    made.write("static.json", json.dumps(static).encode())
    return made


def fresh_topic(kafka_admin: AdminClient) -> str:
    name = f"test.grpc-security.events.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_admin, [TopicSpec(name, 1)])
    return name


@pytest.fixture(scope="module")
def secured(
    secrets: Pki,
    kafka: KafkaSettings,
    kafka_admin: AdminClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Secured]:
    topics = TopicSettings(model_events=fresh_topic(kafka_admin))
    registry = Running(
        RegistrySettings(
            state_dir=tmp_path_factory.mktemp("registry"),
            grpc_port=0,
            kafka=kafka,
            topics=topics,
            security=secrets.server("registry"),
        )
    )
    trainer = secrets.client(secrets.token("trainer-1", roles.TRAINER))
    promoter = secrets.client(secrets.token("pat", roles.PROMOTER))
    with RegistryClient(registry.address, security=trainer) as client:
        client.create_model("demo")
        version = client.register("demo", linear_model(np.ones(FEATURES), 0.0)).version
    with RegistryClient(registry.address, security=promoter) as client:
        client.set_alias("demo", "production", version)
    # Inference reaches the registry as `inference` (its token) and serves TLS + auth.
    security = secrets.server(
        "inference", roles.INFERENCE, token=secrets.token("inference", roles.INFERENCE)
    )
    inference = Running(
        InferenceSettings(
            grpc_port=0,
            metrics_port=0,
            registry_address=registry.address,
            kafka=kafka,
            topics=topics,
            model_names=["demo"],
            resync_s=600.0,
            drain_delay_s=0.05,
            security=security,
        ),
        inference_app.build,
        inference_app.run,
    )
    reader = secrets.client(secrets.token("rita", roles.READER))
    with InferenceClient(inference.address, security=reader) as sdk:
        wait_until(lambda: sdk.ready("demo"))  # downloaded from the registry, as `inference`
    suffix = uuid.uuid4().hex[:8]
    ingestion = Running(
        IngestionSettings(
            grpc_port=0,
            metrics_port=0,
            kafka=kafka,
            topics=TopicSettings(
                **{
                    n: f"test.grpc-security.{suffix}.{n}"
                    for n in ("raw", "train", "dlq", "streams")
                }
            ),
            consumer_group=f"grpc-security-{suffix}",
            security=secrets.server("ingestion"),
        ),
        lambda settings: ingestion_app.build(settings, threading.Event()),
        ingestion_app.run,
    )
    yield Secured(secrets, registry, inference, version, ingestion)
    ingestion.close()
    inference.close()
    registry.close()


def shapes() -> dict[str, tuple[bool, bool]]:
    """Full method name -> (client streaming, server streaming), from the contracts."""
    found = {}
    for service in (
        registry_pb2.DESCRIPTOR.services_by_name["ModelRegistry"],
        grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
        ingest_pb2.DESCRIPTOR.services_by_name["Ingestion"],
    ):
        for method in service.methods:
            found[f"/{service.full_name}/{method.name}"] = (
                method.client_streaming,
                method.server_streaming,
            )
    return found


def status_of(channel: grpc.Channel, method: str, shape: tuple[bool, bool]) -> grpc.StatusCode:
    """Call `method` with one empty message (raw bytes: no stubs needed); its status."""
    timeout = 3.0  # Watch streams until the deadline: DEADLINE_EXCEEDED counts as allowed
    try:
        if shape == (False, False):
            channel.unary_unary(method)(b"", timeout=timeout)
        elif shape == (False, True):
            list(channel.unary_stream(method)(b"", timeout=timeout))
        elif shape == (True, False):
            channel.stream_unary(method)(iter([b""]), timeout=timeout)
        else:
            list(channel.stream_stream(method)(iter([b""]), timeout=timeout))
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


SERVED = {
    "registry": "/streamlearn.v1.ModelRegistry/",
    "inference": "/inference.",
    "ingestion": "/streamlearn.v1.Ingestion/",
}


@pytest.mark.parametrize("service", sorted(SERVED))
def test_every_rpc_needs_credentials_and_the_right_role(secured: Secured, service: str) -> None:
    running = getattr(secured, service)
    prefix = SERVED[service]
    methods = {m: s for m, s in shapes().items() if m.startswith(prefix)}
    assert methods and set(methods) <= set(roles.POLICY)
    anonymous = channel_for(running.address, secured.pki.client())
    by_role = {
        role: channel_for(
            running.address, secured.pki.client(secured.pki.token(f"{role}-user", role))
        )
        for role in sorted(roles.ROLES)
    }
    wrong: list[str] = []
    for method, shape in sorted(methods.items()):
        allowed = roles.allowed_roles(method)
        got = status_of(anonymous, method, shape)
        if got != grpc.StatusCode.UNAUTHENTICATED:
            wrong.append(f"{method} without credentials: {got}")
        for role, channel in by_role.items():
            got = status_of(channel, method, shape)
            if role in allowed and got in NOT_ALLOWED:
                wrong.append(f"{method} as {role} (allowed): {got}")
            if role not in allowed and got != grpc.StatusCode.PERMISSION_DENIED:
                wrong.append(f"{method} as {role} (not allowed): {got}")
    for channel in (anonymous, *by_role.values()):
        channel.close()
    assert wrong == []


def test_expired_forged_and_static_tokens_over_the_wire(secured: Secured) -> None:
    address, secrets = secured.registry.address, secured.pki
    expired = SecretStr(mint(secrets.key.private, "old", ["admin"], ttl_s=60, now=1_000_000))
    forged = SecretStr(mint(new_signing_key().private, "eve", ["admin"]))
    for token, fragment in ((expired, "expired"), (forged, "signature")):
        with channel_for(address, secrets.client(token)) as channel:
            stub = channel.unary_unary("/streamlearn.v1.ModelRegistry/ListModels")
            with pytest.raises(grpc.RpcError) as raised:
                stub(b"", timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert fragment in str(raised.value.details())
        assert token.get_secret_value() not in str(raised.value.details())
    with RegistryClient(address, security=secrets.client(SecretStr(STATIC_TOKEN))) as client:
        assert "demo" in [m.name for m in client.list_models()]


def test_the_audit_names_the_authenticated_principal_not_the_claimed_actor(
    secured: Secured,
) -> None:
    secrets, address = secured.pki, secured.registry.address
    trainer = secrets.client(secrets.token("trainer-1", roles.TRAINER))
    with RegistryClient(address, security=trainer) as client:
        client.create_model("audited")
        first = client.register("audited", linear_model(np.ones(FEATURES), 0.0)).version
        second = client.register("audited", linear_model(-np.ones(FEATURES), 0.0)).version
    promoter = secrets.client(secrets.token("pat", roles.PROMOTER))
    with RegistryClient(address, security=promoter) as client:
        client.set_alias("audited", "production", first, actor="mallory")
        client.set_alias("audited", "candidate", second, actor="mallory")
        client.promote("audited", actor="mallory")
        client.rollback("audited", actor="mallory")
        records = client.history("audited")
    assert len(records) == 4
    assert {r.actor for r in records} == {"pat"}
    admin = secrets.client(secrets.token("root", roles.ADMIN))
    with RegistryClient(address, security=admin) as client:
        stub = client._stub
        stub.DeleteAlias(
            registry_pb2.DeleteAliasRequest(model="audited", alias="candidate", actor="mallory"),
            timeout=5,
        )
        assert client.history("audited", limit=1)[0].actor == "root"


def test_plaintext_clients_cannot_talk_to_a_tls_port(secured: Secured) -> None:
    address = secured.registry.address
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raised:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not check(address)
    with pytest.raises(StreamlearnError):
        RegistryClient(address, timeout=5).list_models()


def test_health_is_readable_over_tls_without_credentials(secured: Secured) -> None:
    secrets = secured.pki
    assert check(secured.registry.address, REGISTRY_SERVICE, security=secrets.client())
    assert check(secured.inference.address, inference_app.SERVICE, security=secrets.client())
    assert probe_main([secured.registry.address, "--ca", str(secrets.ca_file)]) == 0
    assert probe_main([secured.registry.address]) == 1  # plaintext against TLS


def test_a_server_with_another_ca_is_not_trusted(secured: Secured, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pki.new_ca().cert)
    assert not check(secured.registry.address, security=GrpcSecurity(tls=True, ca_file=other))


def test_the_sdk_and_tritonclient_infer_over_tls_with_a_reader_token(secured: Secured) -> None:
    secrets, address = secured.pki, secured.inference.address
    token = secrets.token("rita", roles.READER)
    with InferenceClient(address, security=secrets.client(token)) as sdk:
        scores, version = sdk.predict("demo", np.ones((2, FEATURES), np.float32))
    assert scores.shape[0] == 2 and version == secured.version
    client = triton.InferenceServerClient(
        url=address, ssl=True, root_certificates=str(secrets.ca_file)
    )
    headers = {"authorization": f"Bearer {token.get_secret_value()}"}
    assert client.is_server_live(headers=headers) is True
    tensor = triton.InferInput(INPUT, [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(np.ones((1, FEATURES), np.float32))
    reply = client.infer("demo", [tensor], headers=headers)
    assert reply.get_response().model_version == str(secured.version)
    with pytest.raises(triton.InferenceServerException) as raised:
        client.is_server_live()
    assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
    producer_token = secrets.token("pam", roles.PRODUCER).get_secret_value()
    producer = {"authorization": f"Bearer {producer_token}"}
    with pytest.raises(triton.InferenceServerException) as raised:
        client.is_server_live(headers=producer)
    assert raised.value.status() == "StatusCode.PERMISSION_DENIED"


def test_mutual_tls_with_a_client_certificate_carrying_roles(
    secrets: Pki,
    kafka: KafkaSettings,
    kafka_admin: AdminClient,
    tmp_path: Path,
) -> None:
    """Certificates only (no token source): the server requires and verifies them."""
    pair = pki.issue(secrets.ca, "registry", hosts=["registry.internal"], server=True)
    security = GrpcSecurity(
        tls=True,
        auth=True,
        ca_file=secrets.ca_file,
        cert_file=secrets.write("mtls-registry.pem", pair.cert),
        key_file=secrets.write("mtls-registry.key", pair.key),
    )
    topics = TopicSettings(model_events=fresh_topic(kafka_admin))
    registry = Running(
        RegistrySettings(
            state_dir=tmp_path, grpc_port=0, kafka=kafka, topics=topics, security=security
        )
    )
    name = "registry.internal"  # the certificate names no address: clients override
    try:
        address = registry.address
        issue = pki.issue
        admin = secrets.certified(
            issue(secrets.ca, "ops", client=True, roles=["admin"]), "ops", name
        )
        with RegistryClient(address, timeout=5, security=admin) as client:
            client.create_model("mtls")
            assert [m.name for m in client.list_models()] == ["mtls"]
        trainer = secrets.certified(
            issue(secrets.ca, "trainer-2", client=True, roles=["trainer"]), "trainer-2", name
        )
        with channel_for(address, trainer) as channel:
            stub = channel.unary_unary("/streamlearn.v1.ModelRegistry/ListModels")
            with pytest.raises(grpc.RpcError) as raised:
                stub(b"", timeout=5)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "trainer-2" in str(raised.value.details())
        assert check(address, security=admin)
        # No certificate, or one from another CA: the handshake itself fails.
        assert not check(address, security=secrets.client(server_name=name))
        stranger = issue(pki.new_ca(), "eve", client=True, roles=["admin"])
        assert not check(address, security=secrets.certified(stranger, "eve", name))
        # A token alone is no credential on a certificate-only server.
        token_only = secrets.client(secrets.token("root", roles.ADMIN), server_name=name)
        with pytest.raises(StreamlearnError):
            RegistryClient(address, timeout=5, security=token_only).list_models()
    finally:
        registry.close()


def _cli(secured: Secured, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`streamlearn registry ...` in a subprocess whose settings come from `env` only."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    return subprocess.run(
        [sys.executable, "-c", "from streamlearn.cli.main import app; app()", "registry", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=kept
        | {"STREAMLEARN_REGISTRY_ADDRESS": secured.registry.address, "COLUMNS": "200"}
        | env,
        check=False,
    )


def test_the_cli_reaches_a_secured_registry_with_its_settings(secured: Secured) -> None:
    """STREAMLEARN_SECURITY__* configure the CLI; a refusal is one clear line, exit 1."""
    tls = {"STREAMLEARN_SECURITY__TLS": "true"}
    tls["STREAMLEARN_SECURITY__CA_FILE"] = str(secured.pki.ca_file)
    reader = secured.pki.token("rita", roles.READER).get_secret_value()
    listed = _cli(secured, tls | {"STREAMLEARN_SECURITY__TOKEN": reader}, "list", "demo")
    assert listed.returncode == 0, listed.stderr
    assert f"{secured.version}" in listed.stdout and "production" in listed.stdout
    plaintext = _cli(secured, {}, "list", "demo")  # forgot the role's settings
    assert plaintext.returncode == 1 and "probably secured" in plaintext.stderr
    anonymous = _cli(secured, tls, "list", "demo")
    assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
    assert "no credentials" in anonymous.stderr and len(anonymous.stderr.splitlines()) == 1
    refused = _cli(
        secured,
        tls | {"STREAMLEARN_SECURITY__TOKEN": reader},
        "alias",
        "demo",
        "candidate",
        str(secured.version),
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "may not call /streamlearn.v1.ModelRegistry/SetAlias" in refused.stderr
    assert reader not in listed.stdout + anonymous.stderr + refused.stderr  # never echoed
