"""The policy (every mounted RPC has an entry, least privilege), identities from client
certificates, the interceptor's decisions, and the configurations a secured server refuses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from inference import grpc_service_pb2_grpc
from services.inference.servicer import InferenceServicer
from services.ingestion.servicer import IngestionServicer
from services.registry.servicer import RegistryServicer
from shared.errors import ConfigError
from shared.grpc.channel import channel_for
from shared.grpc.server import build_server
from shared.security import pki, roles
from shared.security.identity import (
    Principal,
    Unauthenticated,
    current_principal,
    principal_from_certificate,
)
from shared.security.interceptor import Authenticator, AuthInterceptor, bearer_token
from shared.security.tokens import StaticTokens, TokenVerifier, mint, new_signing_key, token_digest
from shared.settings import GrpcSecurity
from streamlearn.v1 import ingest_pb2_grpc, registry_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


class RecordingServer:
    """Takes what a generated `add_XServicer_to_server` registers: the full method names."""

    def __init__(self) -> None:
        self.methods: set[str] = set()

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        for handler in handlers:  # keyed by full method name
            self.methods |= set(handler._method_handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.methods |= {f"/{service}/{name}" for name in handlers}


def mounted_methods() -> set[str]:
    """Every method of every service streamlearn mounts, as the generated code registers it."""
    server = RecordingServer()
    for add, servicer in (
        (registry_pb2_grpc.add_ModelRegistryServicer_to_server, RegistryServicer),
        (ingest_pb2_grpc.add_IngestionServicer_to_server, IngestionServicer),
        (
            grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer,
        ),
    ):
        add(servicer.__new__(servicer), server)  # type: ignore[no-untyped-call]
    return server.methods


def test_every_mounted_method_has_a_policy_entry_and_no_entry_is_stale() -> None:
    methods = mounted_methods()
    assert len(methods) == 27  # 15 registry + 2 ingestion + 10 inference
    assert roles.unmapped(methods) == []
    assert set(roles.POLICY) == methods | {roles.HEALTH_WATCH}


def test_a_method_without_an_entry_is_refused_to_every_role() -> None:
    for method in ("/streamlearn.v1.ModelRegistry/DropEverything", "/x.Y/Z", "", "garbage"):
        assert roles.allowed_roles(method) == frozenset()
        assert not roles.permits(roles.ROLES, method)
    assert roles.unmapped(["/streamlearn.v1.ModelRegistry/DropEverything"]) == [
        "/streamlearn.v1.ModelRegistry/DropEverything"
    ]


def test_health_checks_and_reflection_are_open_to_anybody() -> None:
    for method in (
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ):
        assert roles.is_open(method) and roles.permits(set(), method)
    assert not roles.is_open("/grpc.health.v1.HealthX/Check")


def test_health_watch_streams_need_a_principal() -> None:
    """Each open stream holds a server thread: anonymous watchers could starve the rest."""
    assert not roles.is_open(roles.HEALTH_WATCH)
    assert not roles.permits(set(), roles.HEALTH_WATCH)
    assert all(roles.permits({role}, roles.HEALTH_WATCH) for role in roles.ROLES)


def granted(role: str) -> set[str]:
    return {m for m, allowed in roles.POLICY.items() if role in allowed}


def registry(*names: str) -> set[str]:
    return {f"/streamlearn.v1.ModelRegistry/{n}" for n in names}


def test_each_role_holds_exactly_its_rights() -> None:
    inference_rpcs = {m for m in roles.POLICY if m.startswith("/inference.")}
    reads = registry(
        "GetModel", "ListModels", "GetVersion", "ListVersions", "DownloadArtifact", "History"
    ) | registry("Watch")
    watch = {roles.HEALTH_WATCH}
    assert granted(roles.ADMIN) == set(roles.POLICY)
    assert granted(roles.PRODUCER) == watch | {
        "/streamlearn.v1.Ingestion/Ingest",
        "/streamlearn.v1.Ingestion/IngestStream",
    }
    assert granted(roles.READER) == watch | inference_rpcs | reads
    assert granted(roles.PROMOTER) == granted(roles.READER) | registry(
        "SetAlias", "Promote", "Rollback", "SetTags", "ReportLiveMetric"
    )
    # DownloadArtifact: the teacher a distilled model learns from
    assert granted(roles.TRAINER) == watch | registry(
        "CreateModel", "RegisterVersion", "DownloadArtifact"
    )
    assert granted(roles.INFERENCE) == watch | registry("GetVersion", "DownloadArtifact")
    assert granted(roles.INGESTION) == watch
    only_admin = {m for m, allowed in roles.POLICY.items() if allowed == {roles.ADMIN}}
    assert only_admin == registry("DeleteAlias")


# What each RegistryClient method calls, to read the service roles off the services' code.
CLIENT_RPCS = {
    "create_model": "CreateModel",
    "register": "RegisterVersion",
    "get_version": "GetVersion",
    "list_versions": "ListVersions",
    "download": "DownloadArtifact",
    "set_alias": "SetAlias",
    "promote": "Promote",
    "rollback": "Rollback",
    "history": "History",
    "report_live_metric": "ReportLiveMetric",
    "list_models": "ListModels",
    "watch": "Watch",
}


def rpcs_called_by(service: str) -> set[str]:
    called = set()
    for path in (ROOT / "services" / service).glob("*.py"):
        for name in re.findall(r"registry\.(\w+)\(", path.read_text()):
            if name in CLIENT_RPCS:
                called.add(f"/streamlearn.v1.ModelRegistry/{CLIENT_RPCS[name]}")
    return called


def test_service_roles_hold_exactly_what_their_service_calls() -> None:
    def rights(role: str) -> set[str]:
        return granted(role) - {roles.HEALTH_WATCH}

    assert rpcs_called_by("trainer") == rights(roles.TRAINER)  # exactly, nothing more
    assert rpcs_called_by("inference") == rights(roles.INFERENCE)
    assert rpcs_called_by("inference")  # the scan does find the calls
    assert rpcs_called_by("ingestion") == rights(roles.INGESTION) == set()


# --- identities from client certificates ------------------------------------------------------

CA = pki.new_ca()


def test_a_client_certificate_carries_its_principal_and_roles() -> None:
    pair = pki.issue(CA, "trainer-1", client=True, roles=["trainer", "reader"])
    assert principal_from_certificate(pair.cert) == Principal(
        "trainer-1", frozenset({"trainer", "reader"})
    )
    both = pki.issue(
        CA, "inference", hosts=["127.0.0.1"], server=True, client=True, roles=["inference"]
    )
    assert principal_from_certificate(both.cert).roles == {"inference"}


def test_certificates_without_a_usable_identity_are_refused() -> None:
    with pytest.raises(Unauthenticated, match="carries no role"):
        principal_from_certificate(pki.issue(CA, "nobody", client=True).cert)
    server_only = pki.issue(CA, "registry", hosts=["localhost"], server=True)
    with pytest.raises(Unauthenticated, match="not for client authentication"):
        principal_from_certificate(server_only.cert)
    with pytest.raises(Unauthenticated, match="cannot be parsed"):
        principal_from_certificate(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
    for reserved in ("policy", "policy (reported by x)"):  # the registry's own audit actor
        with pytest.raises(Unauthenticated, match="reserved"):
            principal_from_certificate(pki.issue(CA, reserved, client=True, roles=["admin"]).cert)


def test_pki_refuses_roles_it_cannot_vouch_for() -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        pki.issue(CA, "x", client=True, roles=["root"])
    with pytest.raises(ValueError, match="client certificate"):
        pki.issue(CA, "x", hosts=["h"], server=True, roles=["reader"])


# --- the interceptor --------------------------------------------------------------------------


class Aborted(Exception):
    pass


class FakeContext:
    """The parts of a ServicerContext the interceptor reads; abort raises like grpc's."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), cert: bytes | None = None):
        self.metadata = metadata
        self.auth = {"x509_pem_cert": [cert]} if cert else {}
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted(details)


KEY = new_signing_key()
STATIC_TOKEN = "s3cr3t-static-token-value"
AUTHENTICATOR = Authenticator(
    TokenVerifier(KEY.public),
    StaticTokens.parse(
        json.dumps({token_digest(STATIC_TOKEN): {"principal": "ci", "roles": ["promoter"]}})
    ),
)
INTERCEPTOR = AuthInterceptor(AUTHENTICATOR)
SET_ALIAS = "/streamlearn.v1.ModelRegistry/SetAlias"
WATCH = "/streamlearn.v1.ModelRegistry/Watch"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def guarded(method: str, stream: bool = False) -> Any:
    """The interceptor's handler around a behaviour that reports the bound principal."""

    def unary(request: Any, context: Any) -> Any:
        return current_principal()

    def streaming(request: Any, context: Any) -> Iterator[Any]:
        yield current_principal()
        yield current_principal()

    handler = (
        grpc.unary_stream_rpc_method_handler(streaming)
        if stream
        else grpc.unary_unary_rpc_method_handler(unary)
    )
    wrapped = INTERCEPTOR.intercept_service(lambda _: handler, SimpleNamespace(method=method))
    assert wrapped is not None
    return wrapped.unary_stream if stream else wrapped.unary_unary


def test_the_principal_is_bound_for_the_call_only() -> None:
    token = mint(KEY.private, "pat", ["promoter"])
    assert guarded(SET_ALIAS)(None, FakeContext(bearer(token))) == Principal(
        "pat", frozenset({"promoter"})
    )
    assert (
        list(guarded(WATCH, stream=True)(None, FakeContext(bearer(STATIC_TOKEN))))
        == [Principal("ci", frozenset({"promoter"}))] * 2
    )
    assert current_principal() is None


def test_a_client_certificate_authenticates_without_a_token() -> None:
    cert = pki.issue(CA, "svc-inference", client=True, roles=["inference"]).cert
    read = "/streamlearn.v1.ModelRegistry/GetVersion"
    assert guarded(read)(None, FakeContext(cert=cert)).name == "svc-inference"
    context = FakeContext(cert=cert)
    with pytest.raises(Aborted):
        guarded(SET_ALIAS)(None, context)
    assert context.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "no credentials"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "not `Bearer <token>`"),
        (bearer("wrong-static-token"), "not a known token"),
        (bearer(STATIC_TOKEN) + bearer(STATIC_TOKEN), "more than one"),
        (bearer(""), "empty"),
        (bearer("a.b.c"), "malformed"),
    ],
)
def test_missing_or_invalid_credentials_are_unauthenticated(
    metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    for call in (guarded(SET_ALIAS), lambda r, c: list(guarded(WATCH, stream=True)(r, c))):
        context = FakeContext(metadata)
        with pytest.raises(Aborted):
            call(None, context)
        assert context.code == grpc.StatusCode.UNAUTHENTICATED
        assert reason in context.details
        assert "wrong-static-token" not in context.details


def test_a_wrong_role_or_an_unknown_method_is_permission_denied() -> None:
    reader = mint(KEY.private, "rita", ["reader"])
    context = FakeContext(bearer(reader))
    with pytest.raises(Aborted):
        guarded(SET_ALIAS)(None, context)
    assert context.code == grpc.StatusCode.PERMISSION_DENIED
    assert "'rita'" in context.details and SET_ALIAS in context.details
    admin = mint(KEY.private, "root", sorted(roles.ROLES))
    context = FakeContext(bearer(admin))
    with pytest.raises(Aborted):
        guarded("/streamlearn.v1.ModelRegistry/NotInThePolicy")(None, context)
    assert context.code == grpc.StatusCode.PERMISSION_DENIED


def test_health_passes_the_interceptor_untouched() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda r, c: "ok")
    details = SimpleNamespace(method="/grpc.health.v1.Health/Check")
    assert INTERCEPTOR.intercept_service(lambda _: handler, details) is handler


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token((("authorization", "bearer abc"),)) == "abc"
    assert bearer_token((("Authorization", "BEARER abc "),)) == "abc"
    assert bearer_token((("x-other", "Bearer abc"),)) is None


# --- configurations a secured server or client refuses ----------------------------------------


def test_auth_needs_tls_and_something_to_authenticate_with(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs TLS"):
        build_server("127.0.0.1:0", [], security=GrpcSecurity(auth=True))
    with pytest.raises(ConfigError, match="nothing can authenticate"):
        Authenticator.from_security(GrpcSecurity(tls=True, auth=True))
    with pytest.raises(ConfigError, match="cert_file and key_file"):
        build_server("127.0.0.1:0", [], security=GrpcSecurity(tls=True))
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match="cannot read"):
        build_server(
            "127.0.0.1:0", [], security=GrpcSecurity(tls=True, cert_file=missing, key_file=missing)
        )
    bad = tmp_path / "tokens.json"
    bad.write_text("[]")
    pair = pki.issue(CA, "localhost", hosts=["localhost"], server=True)
    (tmp_path / "c.pem").write_bytes(pair.cert)
    (tmp_path / "k.pem").write_bytes(pair.key)
    with pytest.raises(ConfigError, match="static tokens file"):
        build_server(
            "127.0.0.1:0",
            [],
            security=GrpcSecurity(
                tls=True,
                auth=True,
                cert_file=tmp_path / "c.pem",
                key_file=tmp_path / "k.pem",
                static_tokens_file=bad,
            ),
        )


def test_unusable_certificate_files_are_named_at_startup(tmp_path: Path) -> None:
    pair = pki.issue(CA, "localhost", hosts=["localhost"], server=True)
    other = pki.issue(CA, "other", hosts=["other"], server=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    files = {}
    for name, data in (("c", pair.cert), ("k", pair.key), ("o", other.key), ("ca", CA.cert)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(data)
    cases = [
        ({"cert_file": garbage, "key_file": files["k"]}, "holds no PEM certificate"),
        ({"cert_file": files["c"], "key_file": garbage}, "holds no unencrypted PEM private key"),
        ({"cert_file": files["c"], "key_file": files["o"]}, "is not the key of"),
        ({"cert_file": files["c"], "key_file": files["k"], "ca_file": garbage}, "no PEM cert"),
    ]
    for fields, reason in cases:
        with pytest.raises(ConfigError, match=reason):
            build_server("127.0.0.1:0", [], security=GrpcSecurity(tls=True, **fields))
    server, _, port = build_server(
        "127.0.0.1:0",
        [],
        security=GrpcSecurity(tls=True, cert_file=files["c"], key_file=files["k"]),
    )
    assert port > 0
    server.stop(None)


def test_a_client_never_sends_a_token_in_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TLS is off"):
        channel_for("127.0.0.1:1", GrpcSecurity(token=SecretStr("t")))
    with pytest.raises(ConfigError, match="both cert_file and key_file"):
        channel_for("127.0.0.1:1", GrpcSecurity(tls=True, cert_file=tmp_path / "c.pem"))
    channel_for("127.0.0.1:1", GrpcSecurity()).close()  # off: plaintext, as before
