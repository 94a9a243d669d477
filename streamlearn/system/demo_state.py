"""What the demo starts from: the model it continues, or a clean model and sample topics.

`--fresh` empties what the demo's model learns from and remembers (the trainer's
checkpoint of that model and the sample topics: raw, train, dead letters, trainer metrics)
and leaves everything else as it is: stream definitions, the registry (other models, and
this model's past versions, whose numbering continues), other models' checkpoints, logs.
"""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from shared.clients.registry import RegistryClient
from shared.errors import NotFound, Unavailable
from shared.kafka.admin import TopicSpec, ensure_topics, standard_topics
from shared.settings import KafkaSettings, TopicSettings

# Topic deletion is asynchronous in Kafka: how long to wait before recreating.
RECREATE_TIMEOUT_S = 60.0


def sample_topics(topics: TopicSettings) -> list[TopicSpec]:
    """The topics `--fresh` empties (not stream definitions, not registry events)."""
    names = {topics.raw, topics.train, topics.dlq, topics.metrics}
    return [spec for spec in standard_topics(topics) if spec.name in names]


def reset(kafka: KafkaSettings, topics: TopicSettings, checkpoint: Path) -> None:
    """Delete the model's checkpoint and recreate the sample topics empty.

    The services must be stopped: a running trainer would write its checkpoint back.

    Raises:
        Unavailable: the topics could not be recreated in time.

    """
    checkpoint.unlink(missing_ok=True)
    admin = AdminClient(kafka.client_config())
    specs = sample_topics(topics)
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [s.name for s in specs if s.name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
    _recreate(admin, specs)


def _recreate(admin: AdminClient, specs: list[TopicSpec]) -> None:
    deadline = time.monotonic() + RECREATE_TIMEOUT_S
    while True:
        try:
            ensure_topics(admin, specs)
            return
        except (KafkaException, Unavailable) as exc:  # still marked for deletion
            if time.monotonic() > deadline:
                raise Unavailable(f"the demo topics were not recreated: {exc}") from exc
            time.sleep(0.5)


def describe(registry_address: str, model: str, resumes: bool) -> str:
    """One line: the version and events the demo continues from, or that it starts fresh.

    Args:
        registry_address: Where the registry answers.
        model: The demo's model.
        resumes: The trainer had a checkpoint of `model` when the demo began.

    """
    try:
        with RegistryClient(registry_address, timeout=10.0) as registry:
            latest = registry.get_version(model)
    except NotFound:
        return f"starting `{model}` fresh" + ("" if resumes else ": no version registered yet")
    if not resumes:
        return (
            f"starting `{model}` fresh from a clean model "
            f"(its registry versions continue after v{latest.version})"
        )
    return (
        f"continuing `{model}` from v{latest.version}, {latest.lineage.events_seen:,} events "
        "learned (`streamlearn demo --fresh` starts over)"
    )
