"""Kafka for commands that need it: the configured cluster, or the local broker on demand."""

from __future__ import annotations

from shared.kafka.local.broker import LocalBroker
from shared.settings import KafkaSettings
from streamlearn.cli.settings import CliSettings


def kafka_for_cli(settings: CliSettings) -> KafkaSettings:
    """Connection settings for a cluster that is up: starts the local broker if it is the one."""
    if not settings.kafka_bootstrap:
        LocalBroker(settings.broker_config()).start()  # idempotent
    return settings.kafka()
