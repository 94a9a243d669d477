"""Settings shared by every service: Kafka connection, topic names, logging, state directory.

Each service defines one frozen subclass of `ServiceSettings` with its own env prefix
(`TRAINER_`, `REGISTRY_`, ...). Nested fields use `__`, e.g.
`TRAINER_KAFKA__BOOTSTRAP_SERVERS=kafka:9092`. Settings are built once in `__main__` and
passed down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path.home() / ".local" / "state" / "streamlearn"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "streamlearn"


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "streamlearn"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # The CA that signed the broker's certificate (SASL_SSL / SSL); None: the system's CAs.
    ssl_ca_location: Path | None = None

    def client_config(self) -> dict[str, Any]:
        """The librdkafka properties common to producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            # librdkafka's own log lines go through `logging` (logger `streamlearn.kafka`,
            # JSON like everything else), a broker outage as one line, not one per retry.
            "logger": _connection_log(),
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            secret = self.sasl_password.get_secret_value() if self.sasl_password else ""
            config["sasl.password"] = secret
        if self.ssl_ca_location is not None:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        return config


def _connection_log() -> Any:
    # Imported here: settings are read by processes that never open a Kafka client.
    from shared.kafka.outage import process_log

    return process_log()


class GrpcSecurity(BaseModel):
    """TLS and credentials of gRPC, for a server and for its clients (all off by default).

    Env, e.g. `REGISTRY_SECURITY__TLS=true`, `REGISTRY_SECURITY__CA_FILE=/secrets/ca.pem`.
    A server with `tls` serves `cert_file`/`key_file`; with `auth` it requires every RPC but
    health checks and reflection to carry an identity whose roles allow the RPC: a bearer
    token (when `token_public_key_file` or `static_tokens_file` is set) or else a client
    certificate signed by `ca_file`. With `require_client_certificate`, every client must
    present such a certificate (mutual TLS) even where tokens are taken; a token sent as well
    names the caller. (gRPC Python cannot make a client certificate optional.)
    A client with `tls` trusts `ca_file`, presents `cert_file`/`key_file` when set (mutual
    TLS) and sends `token` as `authorization: Bearer <token>` when set.
    """

    model_config = ConfigDict(frozen=True)

    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    auth: bool = False
    # Clients: the bearer token to send (a signed JWT or a static token).
    token: SecretStr | None = None
    # Servers: the public key (PEM, Ed25519) verifying signed tokens ...
    token_public_key_file: Path | None = None
    # ... and static tokens: a JSON file {"<sha256 hex of a token>": {"principal": ...,
    # "roles": [...]}}, e.g. mounted from a Kubernetes Secret.
    static_tokens_file: Path | None = None
    # Clients: the name the server's certificate must carry, when it differs from the host.
    server_name: str | None = None
    # Servers: mutual TLS for every client (services between themselves), see above.
    require_client_certificate: bool = False


class TopicSettings(BaseModel):
    """Names and shape of the topics streamlearn creates when missing."""

    model_config = ConfigDict(frozen=True)

    raw: str = "streamlearn.samples.raw"
    train: str = "streamlearn.samples.train"
    dlq: str = "streamlearn.samples.dlq"
    streams: str = "streamlearn.streams"
    metrics: str = "streamlearn.trainer.metrics"
    model_events: str = "streamlearn.model.events"
    # Learning from production traffic: what inference served, what happened afterwards, and
    # the joiner's state changelog. The three are co-partitioned by event id.
    predictions: str = "streamlearn.predictions"
    feedback: str = "streamlearn.feedback"
    joiner_state: str = "streamlearn.joiner.state"
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)


class ServiceSettings(BaseSettings):
    """What every service needs; subclasses add their own fields and env prefix."""

    model_config = SettingsConfigDict(frozen=True, env_nested_delimiter="__", extra="ignore")

    log_level: str = "INFO"
    log_json: bool = True
    state_dir: Path = DEFAULT_STATE_DIR
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    security: GrpcSecurity = GrpcSecurity()
