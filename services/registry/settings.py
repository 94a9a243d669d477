"""Registry settings (env prefix `REGISTRY_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.errors import ConfigError
from shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Where the registry keeps metadata and artifacts, and where it listens."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_")

    grpc_port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    # Empty: SQLite under state_dir; or sqlite:///path/to/registry.db, or
    # postgresql://user@host:5432/db (the password goes in db_password, not the URL).
    db_url: str = ""
    db_password: SecretStr | None = None
    # How often the database is pinged: the registry reports NOT_SERVING while it is down.
    db_check_interval_s: float = Field(default=1.0, gt=0)
    artifact_dir: Path | None = None
    keep_last_versions: int = Field(default=100, ge=1)
    gc_interval_s: float = Field(default=60.0, gt=0)
    # Promotion/rollback policy on one lineage metric; empty disables it.
    policy_metric: str = ""
    policy_lower_is_better: bool = True
    policy_min_improvement: float = Field(default=0.0, ge=0)
    policy_rollback_tolerance: float = Field(default=0.05, ge=0)
    # Largest artifact accepted; an upload is cut off as soon as it passes this.
    max_artifact_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    grpc_workers: int = Field(default=16, ge=1)
    # Concurrent Watch streams; each holds a server thread for as long as it is open, so the
    # server runs grpc_workers threads on top of these for every other call.
    max_watchers: int = Field(default=16, ge=1)
    drain_grace_s: float = Field(default=10.0, ge=0)

    @property
    def database(self) -> Path | str:
        """A SQLite file path, or a PostgreSQL URL."""
        if not self.db_url:
            return self.state_dir / "registry" / "registry.db"
        if self.db_url.startswith("sqlite:///"):
            return Path(self.db_url.removeprefix("sqlite:///"))
        if self.db_url.startswith(("postgresql://", "postgres://")):
            return self.db_url
        raise ConfigError(
            f"unsupported REGISTRY_DB_URL {self.db_url!r}: use sqlite:///PATH "
            "or postgresql://USER@HOST:PORT/DB"
        )

    @property
    def resolved_artifact_dir(self) -> Path:
        """Artifacts under the state directory unless set explicitly."""
        return self.artifact_dir or self.state_dir / "registry" / "artifacts"
