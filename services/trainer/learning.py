"""What the trainer loop and the version publisher need of a learner, whatever it learns.

The tabular `Learner` and the language model's `TextStreamLearner` both fit: the loop
counts, checkpoints and publishes through this, and leaves decoding and learning to
`TrainerLoop._learn_records` of the loop that knows the records.
"""

from __future__ import annotations

from typing import Any, Protocol

from services.trainer.device import Placement


class LearningConfig(Protocol):
    """A learner's config: its mini-batch size and how lineage names it."""

    @property
    def batch_size(self) -> int:
        """Events per optimiser step (mini-batches are cut per partition)."""
        ...

    def hash(self) -> str:
        """A stable digest, recorded in lineage and checked on restore."""
        ...

    def to_json(self) -> str:
        """The config as JSON, for lineage and reproduction."""
        ...


class Exporter(Protocol):
    """Serialises the learner's current weights as verified ONNX bytes."""

    def export(self) -> bytes:
        """The current weights as ONNX bytes."""
        ...


class Learning(Protocol):
    """Counters, scores and state of a learner (read-only views are enough)."""

    @property
    def config(self) -> LearningConfig:
        """What it learns and how."""
        ...

    @property
    def placement(self) -> Placement:
        """Where it runs, on which path, and why."""
        ...

    @property
    def applied(self) -> int:
        """Events learned from."""
        ...

    @property
    def skipped(self) -> int:
        """Events refused as unusable."""
        ...

    @property
    def diverging(self) -> int:
        """Events refused as diverging."""
        ...

    @property
    def drifts(self) -> int:
        """Concept drifts detected."""
        ...

    @property
    def last_drift_event(self) -> int:
        """`applied` at the last drift (0: none yet)."""
        ...

    @property
    def new_categories(self) -> int:
        """Hashed ids first seen."""
        ...

    def scores(self) -> dict[str, float]:
        """Prequential metrics, for the metrics topic and lineage."""
        ...

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly here."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        ...
