"""A language model learning a text stream, as the trainer loop drives any learner.

`TextStreamLearner` gives `TextLearner` the counters, scores and state of the `Learning`
protocol; `texts_of` reads each record's `Sample.text` at the edge. A record that is no
`Sample`, or whose text is empty, counts as skipped like any unusable event: its offset
advances with the rest (ingestion keeps such records out of the training topic anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message
from google.protobuf.message import DecodeError

from services.trainer.device import Placement
from services.trainer.text.config import TextModelConfig
from services.trainer.text.distill import Teacher
from services.trainer.text.learner import TextLearner
from shared.errors import ConfigError
from shared.kafka.consumer import where
from streamlearn.v1 import sample_pb2

log = logging.getLogger(__name__)

DOMAIN = "domain"  # the sample attribute naming a text's domain (held-out texts per domain)


def text_device(setting: str, cuda_available: bool) -> Placement:
    """Where a language model learns: a GPU when there is one (auto), or as told.

    Raises:
        ConfigError: cuda was asked for and there is no GPU.

    """
    if setting == "cuda" and not cuda_available:
        raise ConfigError("TRAINER_DEVICE=cuda, but no GPU is available")
    if setting == "cpu" or (setting == "auto" and not cuda_available):
        why = "asked for" if setting == "cpu" else "no GPU"
        return Placement("cpu", False, f"language model on the CPU ({why})")
    return Placement("cuda", False, "language model on the GPU")


def texts_of(messages: Sequence[Message]) -> tuple[list[bytes], list[str], list[int]]:
    """Each record's text, domain (its `domain` attribute, "" without) and class (-1: none).

    A record with no readable text gives b"", which the learner skips and counts.
    """
    texts, domains, labels = [], [], []
    for msg in messages:
        try:
            sample = sample_pb2.Sample.FromString(msg.value() or b"")
        except DecodeError:
            log.warning("undecodable text sample", extra={"position": where(msg)})
            texts.append(b"")
            domains.append("")
            labels.append(-1)
            continue
        texts.append(sample.text.encode())
        domains.append(sample.attributes.get(DOMAIN, ""))
        labels.append(sample.class_index if sample.WhichOneof("label") == "class_index" else -1)
    return texts, domains, labels


class TextStreamLearner:
    """`TextLearner` with the counters the trainer loop and the publisher read."""

    drifts = 0  # no drift detection on text yet: the counters the metrics topic reads
    last_drift_event = 0
    diverging = 0
    new_categories = 0

    def __init__(
        self, config: TextModelConfig, placement: Placement, teacher: Teacher | None = None
    ) -> None:
        self.text = TextLearner(config, placement.device, teacher)
        self.placement = placement

    @property
    def config(self) -> TextModelConfig:
        """The language model's config."""
        return self.text.config

    @property
    def applied(self) -> int:
        """Events learned from."""
        return self.text.events

    @property
    def skipped(self) -> int:
        """Events not learned: nothing to learn, too long, refused, or held out.

        With `applied`, every consumed record is counted once.
        """
        return self.text.skipped + self.text.refused + self.text.held_out

    def learn(
        self,
        texts: Sequence[bytes],
        domains: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
    ) -> None:
        """Score, then learn from, each text in order."""
        self.text.learn(texts, domains, labels)

    def scores(self) -> dict[str, float]:
        """Bits per byte, next-byte accuracy, counters; per domain held out, forgetting."""
        return self.text.snapshot() | self.text.domain_scores()

    def state(self) -> dict[str, Any]:
        """The text learner's state."""
        return self.text.state()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        self.text.restore(state)
