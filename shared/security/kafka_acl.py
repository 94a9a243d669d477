"""Kafka principals and their least-privilege ACLs, computed from the topic and group names.

One SCRAM principal per service and per client role, each allowed exactly what its code does
(grep the service for `produce`, `subscribe`/`assign`, `group.id`, admin calls). Topics are
created by the admin (`ensure_topics` then only lists them), so no principal may create,
delete or reconfigure anything; the admin is the broker's super user and needs no ACL.

| principal   | topics                                     | groups, transactional ids   |
|-------------|--------------------------------------------|-----------------------------|
| `ingestion` | raw: read, write; train, dlq, feedback:    | its group, its transactional |
|             | write; streams: read                       | ids, `streamlearn-catalog-*` |
| `trainer`   | train: read; metrics: write; streams: read | `streamlearn-trainer-*`,    |
|             |                                            | `streamlearn-catalog-*`     |
| `registry`  | model events: write                        | -                           |
| `inference` | model events: read; predictions: write     | `inference-*`               |
| `joiner`    | predictions, feedback, streams: read;      | `streamlearn-joiner*` group |
|             | train, dlq: write; joiner state: read,     | and transactional ids,      |
|             | write                                      | `streamlearn-catalog-*`     |
| `producer`  | raw, feedback: write; streams: read        | `streamlearn-catalog-*`     |
| `reader`    | metrics, model events: read                | watch, status,              |
|             |                                            | `streamlearn-reader-*`      |

Kafka implies DESCRIBE from READ, WRITE, DELETE and ALTER, so a topic a principal reads or
writes is also one it may list; every other topic is invisible to it. The same holds for
transactional ids: WRITE on one lets a producer initialise, run and commit transactions under
it (and DESCRIBE it). Since Kafka 3.0 a WRITE on a topic also allows idempotent writes to it,
so no principal needs IDEMPOTENT_WRITE on the cluster, transactional ones included (the
integration tests commit a transaction as `ingestion` and as `joiner` on a secured broker).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from shared.settings import TopicSettings

ADMIN = "admin"


class Resource(StrEnum):
    """The resource types streamlearn grants on (confluent-kafka's ResourceType names)."""

    TOPIC = "TOPIC"
    GROUP = "GROUP"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"


class Operation(StrEnum):
    """The operations streamlearn grants (confluent-kafka's AclOperation names)."""

    READ = "READ"
    WRITE = "WRITE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    ALTER = "ALTER"


# What Kafka's authorizer allows implicitly along with a granted operation.
_IMPLIED = {
    Operation.READ: {Operation.DESCRIBE},
    Operation.WRITE: {Operation.DESCRIBE},
    Operation.ALTER: {Operation.DESCRIBE},
}


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW binding for any host: `operation` on the resource `name` (or name prefix)."""

    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False

    def covers(self, resource: Resource, name: str, operation: Operation) -> bool:
        """Whether Kafka would allow `operation` on `name` because of this grant."""
        if resource is not self.resource:
            return False
        if not (name.startswith(self.name) if self.prefixed else name == self.name):
            return False
        return operation is self.operation or operation in _IMPLIED.get(self.operation, ())


class AccessNames(BaseModel):
    """The consumer groups and transactional ids the services use (their defaults).

    A deployment that renames a group (INGESTION_CONSUMER_GROUP, TRAINER_CONSUMER_GROUP)
    passes the new name here, or that service is refused its group.
    """

    model_config = ConfigDict(frozen=True)

    ingestion_group: str = "streamlearn-ingestion"
    # Exactly-once routing (`shared.kafka.transactions`): ids named after the group.
    ingestion_transactional_prefix: str = "streamlearn-ingestion"
    # INGESTION_GROW_OUTPUTS=true: ingestion adds partitions to the outputs (ALTER).
    ingestion_grows_outputs: bool = False
    # One group per model: `streamlearn-trainer-<model>`.
    trainer_group_prefix: str = "streamlearn-trainer-"
    # One group per inference replica: `inference-<random>`.
    inference_group_prefix: str = "inference-"
    # The stream catalog assigns the streams topic under `streamlearn-catalog-<random>`.
    catalog_group_prefix: str = "streamlearn-catalog-"
    # `streamlearn watch` / `status` read metrics under these; own tools use the prefix.
    reader_groups: tuple[str, ...] = ("streamlearn-watch", "streamlearn-status")
    reader_group_prefix: str = "streamlearn-reader-"
    # The joiner: its consumer group(s) and transactional ids start with this (no dash: the
    # group may be `streamlearn-joiner` itself).
    joiner_group_prefix: str = "streamlearn-joiner"
    joiner_transactional_prefix: str = "streamlearn-joiner"


def acl_table(
    topics: TopicSettings, names: AccessNames | None = None
) -> dict[str, frozenset[Grant]]:
    """Every principal but the admin, with the grants it needs and no other.

    Args:
        topics: The deployment's topic names.
        names: Its consumer groups and transactional ids; None: the services' defaults.

    """
    names = names or AccessNames()
    read, write = Operation.READ, Operation.WRITE

    def topic(name: str, *operations: Operation) -> set[Grant]:
        return {Grant(Resource.TOPIC, name, op) for op in operations}

    def group(name: str, *, prefixed: bool = False) -> set[Grant]:
        # READ: join, fetch and commit offsets; implies DESCRIBE (committed, describe group).
        return {Grant(Resource.GROUP, name, read, prefixed)}

    catalog = topic(topics.streams, read) | group(names.catalog_group_prefix, prefixed=True)
    ingestion = (
        topic(topics.raw, read, write, Operation.DESCRIBE_CONFIGS)  # gRPC Publish writes raw
        | topic(topics.train, write, Operation.DESCRIBE_CONFIGS)
        | topic(topics.dlq, write, Operation.DESCRIBE_CONFIGS)
        | topic(topics.feedback, write)  # gRPC Ingest writes feedback
        | group(names.ingestion_group)
        | {
            Grant(Resource.TRANSACTIONAL_ID, names.ingestion_transactional_prefix, write, True),
        }
        | catalog
    )
    if names.ingestion_grows_outputs:
        ingestion |= topic(topics.train, Operation.ALTER) | topic(topics.dlq, Operation.ALTER)
    trainer = (
        topic(topics.train, read)
        | topic(topics.metrics, write)
        | group(names.trainer_group_prefix, prefixed=True)
        | catalog
    )
    joiner = (
        topic(topics.predictions, read)
        | topic(topics.feedback, read)
        | topic(topics.train, write)
        | topic(topics.dlq, write)
        # Its changelog: written in its transactions, read back to restore its state.
        | topic(topics.joiner_state, read, write)
        | group(names.joiner_group_prefix, prefixed=True)
        # Exactly-once: samples, dead letters, changelog and offsets in one transaction.
        | {Grant(Resource.TRANSACTIONAL_ID, names.joiner_transactional_prefix, write, True)}
        | catalog  # the streams' definitions (label kinds, classes)
    )
    reader = (
        topic(topics.metrics, read)
        | topic(topics.model_events, read)
        | {Grant(Resource.GROUP, g, read) for g in names.reader_groups}
        | group(names.reader_group_prefix, prefixed=True)
    )
    return {
        "ingestion": frozenset(ingestion),
        "trainer": frozenset(trainer),
        "registry": frozenset(topic(topics.model_events, write)),
        "inference": frozenset(
            topic(topics.model_events, read)
            | topic(topics.predictions, write)  # INFERENCE_LOG_PREDICTIONS
            | group(names.inference_group_prefix, prefixed=True)
        ),
        "joiner": frozenset(joiner),
        # The catalog too: `streamlearn produce` maps a file's columns by the stream's schema.
        # Feedback: `SampleProducer.feedback`, outcomes of served predictions.
        "producer": frozenset(topic(topics.raw, write) | topic(topics.feedback, write) | catalog),
        "reader": frozenset(reader),
    }


def allowed(
    table: Mapping[str, Iterable[Grant]],
    principal: str,
    resource: Resource,
    name: str,
    operation: Operation,
) -> bool:
    """Whether `principal` may do `operation` on `name` by `table` (the admin may do anything)."""
    if principal == ADMIN:
        return True
    return any(g.covers(resource, name, operation) for g in table.get(principal, ()))
