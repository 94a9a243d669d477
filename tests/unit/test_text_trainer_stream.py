"""The language model as the trainer loop drives it: texts at the edge, device, counters."""

from __future__ import annotations

import pytest

from services.trainer.text.config import TextModelConfig
from services.trainer.text.stream import TextStreamLearner, text_device, texts_of
from shared.errors import ConfigError
from shared.fakes import FakeMessage
from streamlearn.v1 import sample_pb2

TINY = TextModelConfig(layers=1, width=16, heads=2, context=8, metrics_window=10)


def message(value: bytes, offset: int = 0) -> FakeMessage:
    return FakeMessage("t", 0, offset, b"k", value)


def test_each_record_gives_its_text_and_an_unreadable_one_nothing() -> None:
    records = [
        message(
            sample_pb2.Sample(
                stream="s", text="héllo", attributes={"domain": "fr"}
            ).SerializeToString()
        ),
        message(b"\xff\xff\xff"),  # no Sample
        message(sample_pb2.Sample(stream="s").SerializeToString()),  # no text
    ]
    texts, domains, labels = texts_of(records)  # type: ignore[arg-type]
    assert texts == ["héllo".encode(), b"", b""] and domains == ["fr", "", ""]
    assert labels == [-1, -1, -1]


def test_the_device_follows_the_setting_and_what_is_there() -> None:
    assert text_device("auto", cuda_available=False).device == "cpu"
    assert text_device("auto", cuda_available=True).device == "cuda"
    assert text_device("cpu", cuda_available=True).device == "cpu"
    with pytest.raises(ConfigError, match="no GPU"):
        text_device("cuda", cuda_available=False)


def test_counters_and_scores_follow_the_text_learner() -> None:
    learner = TextStreamLearner(TINY, text_device("cpu", False))
    learner.learn([b"abcabc", b"", b"x", b"abcabcabc"])
    assert (learner.applied, learner.skipped) == (2, 2)
    scores = learner.scores()
    assert scores["events"] == 2 and scores["bytes"] == 5 + 8
    assert 0 < scores["bits_per_byte"] < 9
    restored = TextStreamLearner(TINY, text_device("cpu", False))
    restored.restore(learner.state())
    assert restored.scores() == scores and restored.config.hash() == TINY.hash()
