"""What the demo starts from: the model it continues, or a clean model and sample topics.

`--fresh` empties what the demo's model learns from and remembers: the trainer's checkpoint
of that model and the sample topics (raw, train, dead letters, trainer metrics). Those
topics are system-wide: every stream's samples and every model's metrics live there. So
`--fresh` is refused against an external cluster unless confirmed, and while another
model's trainer checkpoint holds offsets into them (a trainer restored from it would skip
the records before its stale offsets); it names those checkpoints. Everything else stays as
it is: stream definitions, the registry (other models, and this model's past versions,
whose numbering continues), logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from shared.clients.registry import RegistryClient
from shared.errors import ConfigError, Conflict, NotFound, Unavailable
from shared.kafka.admin import TopicSpec, ensure_topics, standard_topics
from shared.settings import KafkaSettings, TopicSettings

# Topic deletion is asynchronous in Kafka: how long to wait for it, then for the recreation.
RECREATE_TIMEOUT_S = 60.0
_POLL_S = 0.25


def sample_topics(topics: TopicSettings) -> list[TopicSpec]:
    """The topics `--fresh` empties (not stream definitions, not registry events)."""
    names = {topics.raw, topics.train, topics.dlq, topics.metrics}
    return [spec for spec in standard_topics(topics) if spec.name in names]


def announce(bootstrap: str, topics: TopicSettings, checkpoint: Path) -> str:
    """What `reset` deletes, said before it deletes anything."""
    names = ", ".join(s.name for s in sample_topics(topics))
    return (
        f"--fresh deletes and recreates the topics {names} on {bootstrap} (every stream's "
        f"samples and every model's trainer metrics), then the checkpoint {checkpoint}"
    )


def refuse_unsafe(
    topics: TopicSettings, checkpoint: Path, *, external: bool, confirmed: bool
) -> None:
    """Refuse a reset that could destroy what is not the demo's.

    Args:
        topics: The topic names the reset would delete.
        checkpoint: The demo model's trainer checkpoint (its siblings are other models').
        external: Kafka is a cluster of the user's (STREAMLEARN_KAFKA_BOOTSTRAP).
        confirmed: The user said yes (`--yes`).

    Raises:
        ConfigError: An external cluster, not confirmed.
        Conflict: Other trainer checkpoints point into the topics; they are named.

    """
    if external and not confirmed:
        raise ConfigError(
            "--fresh would delete the shared sample topics of an external cluster "
            "(STREAMLEARN_KAFKA_BOOTSTRAP): pass --yes to confirm"
        )
    stale = stale_checkpoints(checkpoint, {s.name for s in sample_topics(topics)})
    if stale:
        raise Conflict(
            "--fresh deletes topics that other trainers' checkpoints hold offsets into "
            "(they would skip records after the reset): "
            + ", ".join(str(p) for p in stale)
            + "; move them away (those models start over) or run without --fresh"
        )


def stale_checkpoints(checkpoint: Path, names: Collection[str]) -> list[Path]:
    """Trainer checkpoints beside `checkpoint` (other models) with offsets into `names`.

    A checkpoint that cannot be read counts as pointing into them.
    """
    others = sorted(p for p in checkpoint.parent.glob("*.ckpt") if p != checkpoint)
    return [p for p in others if _points_into(p, names)]


def _points_into(path: Path, names: Collection[str]) -> bool:
    # Imported only when other checkpoints exist: loading them needs torch.
    from services.trainer import checkpoint as checkpoints

    try:
        saved = checkpoints.load(path) or {}
        positions = saved["positions"]
        keys = {*positions["next"], *positions["first"]}
    except Exception:  # unreadable: assume the worst, the user decides
        return True
    return any(str(key).rpartition(":")[0] in names for key in keys)


def reset(
    kafka: KafkaSettings,
    topics: TopicSettings,
    checkpoint: Path,
    say: Callable[[str], None] = lambda _line: None,
) -> None:
    """Delete the sample topics, wait until they are gone, recreate them, then the checkpoint.

    The services must be stopped: a running trainer would write its checkpoint back. Call
    `refuse_unsafe` first. The checkpoint goes last: should a step fail, a rerun finds it.

    Args:
        kafka: The cluster.
        topics: The topic names (see `sample_topics`).
        checkpoint: The demo model's trainer checkpoint.
        say: Told each step as it happens.

    Raises:
        Unavailable: the topics were not deleted or recreated in time.

    """
    admin = AdminClient(kafka.client_config())
    specs = sample_topics(topics)
    names = {s.name for s in specs}
    deadline = time.monotonic() + RECREATE_TIMEOUT_S
    doomed = sorted(names & set(admin.list_topics(timeout=30).topics))
    if doomed:
        say(f"deleting {', '.join(doomed)} on {kafka.bootstrap_servers}")
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # gone already
                    raise
        _wait_gone(admin, names, deadline)
        say("deleted")
    _recreate(admin, specs, deadline)
    say(f"recreated {', '.join(sorted(names))}")
    checkpoint.unlink(missing_ok=True)
    say(f"removed {checkpoint}")


def _wait_gone(admin: AdminClient, names: set[str], deadline: float) -> None:
    """Deletion returns before the topics leave the metadata; creating them early fails."""
    while left := names & set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise Unavailable(f"topics still not deleted after {RECREATE_TIMEOUT_S:.0f}s: {left}")
        time.sleep(_POLL_S)


def _recreate(admin: AdminClient, specs: list[TopicSpec], deadline: float) -> None:
    """Create until every topic is in the metadata.

    "Already exists" (still marked for deletion) and other transient refusals are retried.
    """
    while True:
        try:
            ensure_topics(admin, specs)
            present = admin.list_topics(timeout=10).topics
            missing = [s.name for s in specs if s.name not in present or present[s.name].error]
            if not missing:
                return
            reason = f"not in the metadata yet: {missing}"
        except (KafkaException, Unavailable) as exc:  # e.g. still marked for deletion
            reason = str(exc)
        if time.monotonic() > deadline:
            raise Unavailable(f"the demo topics were not recreated: {reason}")
        time.sleep(_POLL_S)


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
