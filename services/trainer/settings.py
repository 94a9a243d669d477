"""Trainer settings (env prefix `TRAINER_`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """What the trainer learns, from where, and how often it checkpoints and publishes."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_")

    metrics_port: int = Field(default=9102, ge=0, le=65535)
    consumer_group: str = "streamlearn-trainer"
    stream: str = "demo"
    model_name: str = "demo"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    registry_address: str = "127.0.0.1:50052"
    checkpoint_every_events: int = Field(default=10_000, gt=0)
    checkpoint_every_s: float = Field(default=10.0, gt=0)
    version_every_events: int = Field(default=5_000, gt=0)
    version_every_s: float = Field(default=5.0, gt=0)
