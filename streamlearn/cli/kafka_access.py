"""Kafka for commands that need it: the configured cluster, or the local broker on demand."""

from __future__ import annotations

from shared.errors import Unavailable
from shared.kafka.admin import probe_admin, wait_for_broker
from shared.kafka.local.broker import LocalBroker
from shared.settings import KafkaSettings
from streamlearn.cli.reach import ServiceDown
from streamlearn.cli.settings import CliSettings

# How long a command waits for an external cluster before saying it is not reachable.
PROBE_TIMEOUT_S = 5.0


def kafka_for_cli(settings: CliSettings) -> KafkaSettings:
    """Connection settings for a cluster that is up: starts the local broker if it is the one.

    Raises:
        ServiceDown: the external cluster (STREAMLEARN_KAFKA_BOOTSTRAP) does not answer.
        BrokerError: the local broker cannot start (Java, Maven, a port taken, ...).

    """
    if not settings.kafka_bootstrap:
        LocalBroker(settings.broker_config()).start()  # idempotent
        return settings.kafka()
    try:
        probe = probe_admin(settings.kafka_bootstrap, settings.kafka())
        wait_for_broker(probe, timeout=PROBE_TIMEOUT_S)
    except Unavailable as exc:
        raise ServiceDown(
            "Kafka",
            settings.kafka_bootstrap,
            "start that cluster, or unset STREAMLEARN_KAFKA_BOOTSTRAP to use the local broker",
        ) from exc
    return settings.kafka()
