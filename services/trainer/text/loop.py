"""The trainer loop over a text stream: each record's text is one event of the language model.

Everything else is the tabular loop's: the stream filter, per-partition mini-batches, the
checkpoint of weights with offsets (a crash loses and repeats nothing), versions with
lineage, metrics. The first version's exporter traces the graph once; later versions only
rewrite its weights (`TextOnnxExporter`).
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Message

from services.trainer.learning import Exporter
from services.trainer.loop import TrainerLoop
from services.trainer.text.export import TextOnnxExporter
from services.trainer.text.stream import TextStreamLearner, texts_of


class TextTrainerLoop(TrainerLoop):
    """A `TrainerLoop` whose learner is a `TextStreamLearner`."""

    def _learn_records(self, applying: list[Message]) -> Callable[[], Exporter | None]:
        learner = self.learner
        assert isinstance(learner, TextStreamLearner)
        learner.learn(*texts_of(applying))
        # Nothing learned yet: no weights worth a version (the probe is fixed bytes).
        return lambda: TextOnnxExporter(learner.text) if learner.applied else None
