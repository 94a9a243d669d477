"""Ingestion settings (env prefix `INGESTION_`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestionSettings(ServiceSettings):
    """How ingestion consumes, validates and routes samples."""

    model_config = SettingsConfigDict(env_prefix="INGESTION_")

    # What carries the hot path: the confluent-kafka engine (`engine`), or the faust worker
    # (`worker`), kept selectable; both give the same guarantees (see README "Ingestion").
    engine: Literal["kafka", "faust"] = "kafka"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    consumer_group: str = "streamlearn-ingestion"
    dedup_window_s: float = Field(default=3600.0, gt=0)
    # Event ids remembered per raw partition (24 B each, see dedup); the oldest go first.
    dedup_max_ids: int = Field(default=3_000_000, ge=1000)
    # The largest record ingestion writes (key + value + headers), see limits.
    max_message_bytes: int = Field(default=1024 * 1024, ge=16 * 1024)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    max_age_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    session_timeout_s: float = Field(default=10.0, ge=6.0)
    # How soon partitions added to the raw topic are noticed.
    metadata_max_age_s: float = Field(default=60.0, gt=0)
    # Add the partitions the outputs lack when the raw topic grew. Off: such a raw partition
    # is held (error log, metric) until an operator adds them (see topology, README).
    grow_outputs: bool = False
