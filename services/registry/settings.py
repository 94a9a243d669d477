"""Registry settings (env prefix `REGISTRY_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Where the registry keeps metadata and artifacts, and where it listens."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_")

    grpc_port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    # Empty: SQLite under state_dir. Otherwise e.g. postgresql://user@host/db (password below).
    db_url: str = ""
    db_password: SecretStr | None = None
    artifact_dir: Path | None = None
    keep_last_versions: int = Field(default=100, ge=1)

    @property
    def resolved_artifact_dir(self) -> Path:
        """Artifacts under the state directory unless set explicitly."""
        return self.artifact_dir or self.state_dir / "registry" / "artifacts"
