"""Settings of the command line (env prefix `STREAMLEARN_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka.local.files import BrokerConfig
from shared.settings import DEFAULT_CACHE_DIR, DEFAULT_STATE_DIR, GrpcSecurity, KafkaSettings


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
    registry_address: str = "127.0.0.1:50052"
    # How the registry commands and replay reach a secured registry (TLS, a token or a
    # client certificate), e.g. STREAMLEARN_SECURITY__TLS=true, STREAMLEARN_SECURITY__TOKEN=...
    security: GrpcSecurity = GrpcSecurity()

    def broker_config(self) -> BrokerConfig:
        """The local broker these settings describe."""
        return BrokerConfig(
            state_dir=self.state_dir / "kafka",
            cache_dir=self.cache_dir,
            port=self.kafka_port,
            controller_port=self.kafka_controller_port,
            heap=self.kafka_heap,
        )

    def kafka(self) -> KafkaSettings:
        """Connection settings: the external cluster if given, else the local broker."""
        bootstrap = self.kafka_bootstrap or self.broker_config().bootstrap
        return KafkaSettings(bootstrap_servers=bootstrap, client_id="streamlearn-cli")
