"""Joiner settings (env prefix `JOINER_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.joiner.policy import StreamPolicy
from shared.dead_letters import MIN_FIT_BYTES
from shared.settings import ServiceSettings


class JoinerSettings(ServiceSettings):
    """How the joiner consumes predictions and feedback, and how long it waits by default."""

    model_config = SettingsConfigDict(env_prefix="JOINER_")

    # gRPC health only (service `streamlearn.joiner`): readiness for supervisors and probes.
    grpc_port: int = Field(default=50054, ge=0, le=65535)
    metrics_port: int = Field(default=9104, ge=0, le=65535)
    consumer_group: str = "streamlearn-joiner"
    # Stable per instance: a restarted instance fences its predecessor and aborts the
    # transaction it left open at once, instead of waiting out the transaction timeout.
    transactional_id: str = Field(default="streamlearn-joiner-0", min_length=1)
    transaction_timeout_ms: int = Field(default=10_000, ge=1000)
    # How often a transaction (outputs, changelog, input offsets) is committed.
    commit_interval_ms: int = Field(default=100, ge=1)
    # How often the clock moves without input, so windows close in silence.
    clock_tick_ms: int = Field(default=200, ge=1)
    # The largest record the joiner writes (librdkafka's `message.max.bytes`; the training and
    # dead-letter topics must accept it): a larger dead letter is cut to fit, a larger
    # sample is dead-lettered `oversized`, so no output can stop a partition.
    max_message_bytes: int = Field(default=1_000_000, ge=MIN_FIT_BYTES)
    session_timeout_ms: int = Field(default=10_000, ge=6000)
    # The policy of streams whose definition leaves a field at 0 (and of unknown streams).
    window_s: float = Field(default=3600.0, gt=0)
    retention_s: float = Field(default=86400.0, gt=0)
    max_pending: int = Field(default=100_000, ge=1)
    max_closed: int = Field(default=1_000_000, ge=1)

    def default_policy(self) -> StreamPolicy:
        """The policy of a stream that sets nothing: no negatives, the default window."""
        return StreamPolicy(
            window_s=self.window_s,
            retention_s=self.retention_s,
            max_pending=self.max_pending,
            max_closed=self.max_closed,
        )
