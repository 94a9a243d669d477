"""`streamlearn up --secure`: the credentials of a secured local system, under `<state>/secrets/`.

Made once and reused (certificates re-issued when missing or near expiry, tokens minted
again at every `up`): a gRPC CA with one certificate per service (server, and client with
its role for the services that call the registry) and a client certificate per user role,
an Ed25519 key signing bearer tokens, the Kafka broker's own CA, certificate and SCRAM principals
(`shared.kafka.local.secure`, `shared.kafka.local.principals`), and for each user role a
`<role>.env`: the variables a client of that role sets (the CLI and the services read them;
the SDK through `streamlearn.client.from_env`). Every private file is 0600 in a
0700 directory. Kafka has its own CA so that no certificate issued for gRPC can ever be
the broker's controller principal.

The registry, which only services and operators call, takes mutual TLS only: every caller
presents a certificate of the CA (the services theirs, a user its role's), and a token sent
as well names the caller. Ingestion and inference, which clients call, take tokens over TLS
(tritonclient sends a header, not a certificate).

A state directory set up this way stays secured: `streamlearn up` without `--secure` runs it
secured too (its broker was formatted for SCRAM).
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.security.roles import CALLING_SERVICES as CALLERS
from shared.security.roles import USER_ROLES as USER_ROLES  # each with its `<role>.env`

# cryptography, pyjwt and confluent-kafka are imported by the functions that make secrets:
# `streamlearn status` only asks whether a state directory is secured.
if TYPE_CHECKING:
    from shared.kafka.local.files import BrokerSecurity
    from shared.security.pki import KeyPair
    from shared.settings import GrpcSecurity, KafkaSettings

SECRETS = "secrets"
MARKER = "secured"  # its presence: this state directory runs secured
SERVICES = ("registry", "ingestion", "trainer", "joiner", "inference")
REGISTRY = "registry"  # serves mutual TLS only (see the module's docstring)
PROBE = "probe"  # the client certificate of health probes: no role, health only
# Kafka principal of each user role: the promoter acts through the registry only (reads
# like a reader); the admin is the broker's super user.
KAFKA_PRINCIPAL = {"producer": "producer", "reader": "reader", "promoter": "reader"}
TOKEN_TTL_S = 30 * 24 * 3600  # minted again at every `up`; rotation is a re-run
RENEW_BEFORE = datetime.timedelta(days=30)
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class LocalSecrets:
    """The secrets directory of one state directory (see the module's docstring)."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path) -> LocalSecrets | None:
        """The secrets of `state_dir` when it was set up with `--secure`, else None."""
        found = cls(state_dir / SECRETS)
        return found if (found.root / MARKER).exists() else None

    @property
    def grpc_dir(self) -> Path:
        """The gRPC CA, service certificates, token keys and tokens."""
        return self.root / "grpc"

    @property
    def kafka_dir(self) -> Path:
        """The broker's CA, keystore and every principal's password."""
        return self.root / "kafka"

    @property
    def ca_file(self) -> Path:
        """The CA clients trust for gRPC."""
        return self.grpc_dir / "ca.pem"

    def env_file(self, role: str) -> Path:
        """The variables of a client of `role`."""
        return self.root / f"{role}.env"

    @functools.cached_property
    def broker(self) -> BrokerSecurity:
        """What the secured local broker runs with (made when missing)."""
        from shared.kafka.local.secure import broker_security

        return broker_security(self.kafka_dir, hosts=HOSTS)

    def token(self, subject: str) -> str:
        """The bearer token of a calling service or a user role, as last minted.

        Raises:
            ConfigError: The token file is missing or readable by others.

        """
        from shared.kafka.local.secure import read_private

        return read_private(self._token_file(subject)).decode("ascii", errors="replace").strip()

    def server_security(self, service: str) -> GrpcSecurity:
        """A service's gRPC settings: TLS with its certificate, tokens checked, its own token."""
        from pydantic import SecretStr

        from shared.settings import GrpcSecurity

        return GrpcSecurity(
            tls=True,
            auth=True,
            ca_file=self.ca_file,
            cert_file=self.grpc_dir / f"{service}.pem",
            key_file=self.grpc_dir / f"{service}.key",
            token_public_key_file=self.grpc_dir / "token.pub",
            token=SecretStr(self.token(service)) if service in CALLERS else None,
            require_client_certificate=service == REGISTRY,
        )

    def client_security(self, role: str | None = None) -> GrpcSecurity:
        """A client's gRPC settings: the CA, `role`'s certificate and token.

        None: the probes' certificate without a token, for health checks only.
        """
        from pydantic import SecretStr

        from shared.settings import GrpcSecurity

        token = None if role is None else SecretStr(self.token(role))
        name = PROBE if role is None else role
        return GrpcSecurity(
            tls=True,
            ca_file=self.ca_file,
            token=token,
            cert_file=self.grpc_dir / f"client-{name}.pem",
            key_file=self.grpc_dir / f"client-{name}.key",
        )

    def kafka(self, principal: str, bootstrap: str) -> KafkaSettings:
        """How `principal` ("admin", a service or a user role's principal) reaches Kafka."""
        from shared.kafka.local.files import SCRAM_MECHANISM
        from shared.kafka.local.secure import password_file

        admin = self.broker.admin_settings(bootstrap)
        if principal == self.broker.admin_user:
            return admin
        return admin.model_copy(
            update={
                "client_id": f"streamlearn-{principal}",
                "sasl_mechanism": SCRAM_MECHANISM,
                "sasl_username": principal,
                "sasl_password": password_file(self.kafka_dir / f"kafka-{principal}.password"),
            }
        )

    def _token_file(self, subject: str) -> Path:
        return self.grpc_dir / f"token-{subject}"


def ensure(state_dir: Path) -> LocalSecrets:
    """Make (or renew) every secret of a secured local system; mark the state dir secured.

    The Kafka principals' SCRAM credentials are set on the running broker separately
    (`provision_kafka`), once it runs.
    """
    from shared.security import pki

    found = LocalSecrets(state_dir / SECRETS)
    _private_dir(found.root)
    _private_dir(found.grpc_dir)
    ca = _authority(found.grpc_dir)
    for service in SERVICES:
        roles = [service] if service in CALLERS else []
        _certificate(found.grpc_dir / service, ca, f"streamlearn-{service}", HOSTS, roles)
    for role in USER_ROLES:
        _certificate(found.grpc_dir / f"client-{role}", ca, role, (), [role])
    _certificate(found.grpc_dir / f"client-{PROBE}", ca, f"streamlearn-{PROBE}", (), [])
    _mint_tokens(found)
    _ = found.broker  # made now: the broker's CA, keystore and admin password
    pki.write_private(found.root / MARKER, b"made by `streamlearn up --secure`\n")
    return found


def provision_kafka(found: LocalSecrets, bootstrap: str) -> list[str]:
    """The principals, their ACLs and the topics on the running broker, as its admin.

    Returns:
        The topics created now.

    """
    from shared.kafka.local.principals import provision_deployment
    from shared.settings import TopicSettings

    admin = found.kafka(found.broker.admin_user, bootstrap)
    return provision_deployment(admin, found.kafka_dir, TopicSettings())


def write_env_files(found: LocalSecrets, bootstrap: str, registry: str, inference: str) -> None:
    """`<role>.env` for each user role: gRPC (CA, token, addresses) and Kafka (SCRAM, CA)."""
    from shared.security import pki

    for role in USER_ROLES:
        principal = KAFKA_PRINCIPAL.get(role, found.broker.admin_user)
        kafka = found.kafka(principal, bootstrap)
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        values = {
            "STREAMLEARN_SECURITY__TLS": "true",
            "STREAMLEARN_SECURITY__CA_FILE": str(found.ca_file),
            "STREAMLEARN_SECURITY__TOKEN": found.token(role),
            "STREAMLEARN_SECURITY__CERT_FILE": str(found.grpc_dir / f"client-{role}.pem"),
            "STREAMLEARN_SECURITY__KEY_FILE": str(found.grpc_dir / f"client-{role}.key"),
            "STREAMLEARN_REGISTRY_ADDRESS": registry,
            "STREAMLEARN_KAFKA_BOOTSTRAP": bootstrap,
            "STREAMLEARN_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
            "STREAMLEARN_KAFKA_SASL_MECHANISM": kafka.sasl_mechanism or "",
            "STREAMLEARN_KAFKA_SASL_USERNAME": kafka.sasl_username or "",
            "STREAMLEARN_KAFKA_SASL_PASSWORD": password,
            "STREAMLEARN_KAFKA_SSL_CA_LOCATION": str(kafka.ssl_ca_location or ""),
        }
        text = f"# streamlearn: a client of role {role} (source this file; keep it private)\n"
        text += f"# inference (KServe V2 over TLS, the same CA and token) at {inference}\n"
        text += "".join(f"export {key}={value}\n" for key, value in values.items())
        pki.write_private(found.env_file(role), text.encode())


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _authority(directory: Path) -> KeyPair:
    """The gRPC CA stored in `directory`, made on first use."""
    from shared.security import pki

    cert, key = directory / "ca.pem", directory / "ca.key"
    if cert.exists() and key.exists():
        return pki.KeyPair(cert.read_bytes(), key.read_bytes())
    ca = pki.new_ca("streamlearn local gRPC CA")
    pki.write_private(key, ca.key)
    pki.write_private(cert, ca.cert)
    return ca


def _certificate(
    stem: Path, ca: KeyPair, name: str, hosts: tuple[str, ...], roles: list[str]
) -> None:
    """`<stem>.pem` / `.key`, issued again when missing, of another CA or near expiry.

    A server certificate for `hosts` when any; a client certificate carrying `roles` when
    any, or when there are no hosts.
    """
    from shared.security import pki

    cert, key = stem.with_suffix(".pem"), stem.with_suffix(".key")
    if cert.exists() and key.exists():
        current = pki.KeyPair(cert.read_bytes(), key.read_bytes()).certificate()
        left = current.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        if current.issuer == ca.certificate().subject and left > RENEW_BEFORE:
            return
    client = bool(roles) or not hosts
    pair = pki.issue(ca, name, hosts=hosts, server=bool(hosts), client=client, roles=roles)
    pki.write_private(key, pair.key)
    pki.write_private(cert, pair.cert)


def _mint_tokens(found: LocalSecrets) -> None:
    """A fresh token for each service and user role, signed by the stored key."""
    from shared.security import pki
    from shared.security.tokens import mint, new_signing_key

    private, public = found.grpc_dir / "token.key", found.grpc_dir / "token.pub"
    if not (private.exists() and public.exists()):
        key = new_signing_key()
        pki.write_private(private, key.private)
        pki.write_private(public, key.public)
    signing = private.read_bytes()
    for subject in (*CALLERS, *USER_ROLES):
        token = mint(signing, subject, [subject], ttl_s=TOKEN_TTL_S)
        pki.write_private(found._token_file(subject), token.encode())
