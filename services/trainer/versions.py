"""Publishing the learner's current weights to the registry as a version with lineage.

Lineage names the stream definition the weights were learned with (inference featurizes
named inputs with it). The first version after the learner detected a drift carries the
tag `drift`, saying at which event, so a drop in its metrics can be read against it.
"""

from __future__ import annotations

import logging

from services.trainer.decode import PinnedStream
from services.trainer.learning import Exporter, Learning
from services.trainer.progress import Positions
from shared.clients.registry import RegistryClient
from streamlearn.v1 import registry_pb2

log = logging.getLogger(__name__)
TEACHER_TAG = "teacher"  # the tag (and lineage field) naming a distillation teacher


class VersionPublisher:
    """Exports (verified ONNX) and registers versions; remembers the parent version."""

    def __init__(
        self,
        registry: RegistryClient,
        model: str,
        stream: str,
        trainer_id: str,
        learner: Learning,
        pinned: PinnedStream | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """`pinned`: the stream's definition, named in lineage (none: the stream's is unknown).

        `tags`: put on every version (e.g. the distillation teacher it learned from).
        """
        self._registry = registry
        self.model = model
        self.stream = stream
        self.trainer_id = trainer_id
        self._learner = learner
        self.exporter: Exporter | None = None
        self.pinned = pinned
        self._tags = dict(tags or {})
        self.last_version = 0
        self.drifts_tagged = 0  # the learner's drift count at the last version published
        self._published_at: int | None = None  # events applied at the last version published

    def resume(self, last_version: int, drifts_tagged: int = 0) -> None:
        """Continue after a restore: the restored weights are `last_version`'s already."""
        self.last_version, self._published_at = last_version, self._learner.applied
        self.drifts_tagged = drifts_tagged

    def publish(self, positions: Positions) -> int | None:
        """Register the current weights; returns the new version number.

        None, registering nothing, when nothing was learned since the last version (or,
        after a restore, since the restore): the same weights need no new version.
        """
        applied = self._learner.applied
        if self.exporter is None or applied == self._published_at:
            log.debug("no new version: nothing learned", extra={"events": applied})
            return None
        data = self.exporter.export()
        lineage = registry_pb2.Lineage(
            stream=self.stream,
            events_seen=self._learner.applied,
            metrics=self._learner.scores(),
            config_hash=self._learner.config.hash(),
            config_json=self._learner.config.to_json(),
            parent_version=self.last_version,
            trainer_id=self.trainer_id,
            offsets=[_range(key, positions) for key in sorted(positions.next)],
        )
        if self.pinned is not None and self.pinned.definition is not None:
            lineage.stream_definition.CopyFrom(self.pinned.definition)
        lineage.teacher = self._tags.get(TEACHER_TAG, "")
        drifts = self._learner.drifts
        tags = dict(self._tags)
        if drifts > self.drifts_tagged:
            tags["drift"] = f"detected at event {self._learner.last_drift_event}"
        if tags:
            registered = self._registry.register(self.model, data, lineage=lineage, tags=tags)
        else:  # without tags, as ever (registry fakes of older tests take none)
            registered = self._registry.register(self.model, data, lineage=lineage)
        version = registered.version
        log.info(
            "version published",
            extra={"model": self.model, "model_version": version, "events": applied, **tags},
        )
        self.last_version, self._published_at, self.drifts_tagged = version, applied, drifts
        return version


def _range(key: str, positions: Positions) -> registry_pb2.OffsetRange:
    topic, _, partition = key.rpartition(":")
    return registry_pb2.OffsetRange(
        topic=topic,
        partition=int(partition),
        first_offset=positions.first.get(key, 0),
        next_offset=positions.next[key],
    )
