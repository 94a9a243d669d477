"""Settings of the command line (env prefix `STREAMLEARN_`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka.local.files import BrokerConfig
from shared.settings import DEFAULT_CACHE_DIR, DEFAULT_STATE_DIR, GrpcSecurity, KafkaSettings

if TYPE_CHECKING:
    from streamlearn.system.secure import LocalSecrets


class CliSettings(BaseSettings):
    """Where local state lives and how to reach (or run) Kafka."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMLEARN_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    state_dir: Path = DEFAULT_STATE_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    # Set to use an existing cluster instead of the project's own broker.
    kafka_bootstrap: str | None = None
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_heap: str = "512m"
    # A secured cluster (a `<role>.env` of `streamlearn up --secure` sets these).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    registry_address: str = "127.0.0.1:50052"
    # How the registry commands and replay reach a secured registry (TLS, a token or a
    # client certificate), e.g. STREAMLEARN_SECURITY__TLS=true, STREAMLEARN_SECURITY__TOKEN=...
    security: GrpcSecurity = GrpcSecurity()

    def secrets(self) -> LocalSecrets | None:
        """The credentials of the local system when it was set up with `up --secure`."""
        from streamlearn.system.secure import LocalSecrets

        return LocalSecrets.of(self.state_dir)

    def broker_config(self) -> BrokerConfig:
        """The local broker these settings describe (secured when the state directory is)."""
        secrets = self.secrets()
        return BrokerConfig(
            state_dir=self.state_dir / "kafka",
            cache_dir=self.cache_dir,
            port=self.kafka_port,
            controller_port=self.kafka_controller_port,
            heap=self.kafka_heap,
            security=None if secrets is None else secrets.broker,
        )

    def kafka(self, local_admin: bool = True) -> KafkaSettings:
        """Connection settings: the external cluster if given, else the local broker.

        Credentials given (a `<role>.env`) are used as they are; without any, the operator
        of a secured local system acts as its Kafka admin (who can read its secrets anyway)
        unless `local_admin` is False.
        """
        bootstrap = self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"
        explicit = self.kafka_sasl_username or self.kafka_bootstrap or not local_admin
        secrets = None if explicit else self.secrets()
        if secrets is not None:
            admin = secrets.kafka(secrets.broker.admin_user, bootstrap)
            return admin.model_copy(update={"client_id": "streamlearn-cli"})
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            client_id="streamlearn-cli",
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_ca_location=self.kafka_ssl_ca_location,
        )

    def grpc_security(self) -> GrpcSecurity:
        """How commands reach the services: as configured, else as a secured system's admin."""
        secrets = None if self.security.tls else self.secrets()
        return self.security if secrets is None else secrets.client_security("admin")
