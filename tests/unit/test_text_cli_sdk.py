"""Text streams in the CLI (`stream create --text-max-bytes`, show, list) and the SDK.

Kafka's edges (the definitions topic, the producer's delivery) are replaced by fakes: these
tests check parsing and encoding; tests/integration/test_text_ingestion.py runs the broker.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from services.ingestion.dedup import PartitionMemory
from services.ingestion.reasons import Reason
from services.ingestion.router import RawRecord
from shared.errors import InvalidArgument
from shared.streams import MAX_TEXT_BYTES, check_definition
from streamlearn.cli import streams as streams_module
from streamlearn.cli.main import _typer_app
from streamlearn.cli.streams import Shape, definition_of
from streamlearn.client.producer import SampleProducer, to_sample
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.unit.test_ingestion_router import NOW
from tests.unit.test_text_validation import router

runner = CliRunner()
KIND = stream_pb2.LabelKind
STORY = stream_pb2.StreamDefinition(
    name="story", revision=2, text=stream_pb2.TextSpec(max_bytes=4096)
)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[stream_pb2.StreamDefinition]:
    """What `stream create` publishes, instead of Kafka; `stream show|list` read STORY."""
    stored: list[stream_pb2.StreamDefinition] = []

    def publish(_kafka: object, _topic: str, definition: Any, **_: object) -> Any:
        check_definition(definition)
        stored.append(definition)
        return definition

    monkeypatch.setattr(streams_module, "kafka_for_cli", lambda _settings: object())
    monkeypatch.setattr(streams_module, "streams_topic", lambda _kafka: "streams")
    monkeypatch.setattr(streams_module, "load_definitions", lambda _kafka, _topic: [STORY])
    monkeypatch.setattr(streams_module, "publish_definition", publish)
    monkeypatch.setattr(streams_module, "console", Console(width=200))  # no wrapped cells
    return stored


def test_definition_of_a_text_stream_needs_no_label_or_features() -> None:
    definition = definition_of("story", Shape(), "", text_max_bytes=4096)
    check_definition(definition)
    assert definition.text.max_bytes == 4096
    assert definition.label_kind == KIND.LABEL_KIND_UNSPECIFIED
    labelled = definition_of("sentiment", Shape(features=2), "binary", text_max_bytes=512)
    check_definition(labelled)
    assert (labelled.label_kind, labelled.dense_dim) == (KIND.LABEL_KIND_BINARY, 2)


def test_definition_of_other_streams_still_needs_a_label_and_has_no_text_field() -> None:
    with pytest.raises(typer.BadParameter, match="unless the stream is a text stream"):
        definition_of("clicks", Shape(features=3), "")
    with pytest.raises(typer.BadParameter, match="choose from"):
        definition_of("story", Shape(), "sentiment", text_max_bytes=10)
    assert not definition_of("clicks", Shape(features=3), "binary").HasField("text")


def test_stream_create_text_max_bytes_publishes_a_text_stream(
    published: list[stream_pb2.StreamDefinition],
) -> None:
    result = runner.invoke(_typer_app, ["stream", "create", "story", "--text-max-bytes", "4096"])
    assert result.exit_code == 0, result.output
    [definition] = published
    assert definition.text.max_bytes == 4096 and definition.label_kind == 0


def test_stream_create_without_label_is_a_usage_error_unless_a_text_stream(
    published: list[stream_pb2.StreamDefinition],
) -> None:
    result = runner.invoke(_typer_app, ["stream", "create", "clicks", "--features", "3"])
    assert result.exit_code == 2
    assert "--label" in result.output and "--text-max-bytes" in result.output
    assert published == []


def test_stream_create_refuses_a_text_limit_over_the_maximum(
    published: list[stream_pb2.StreamDefinition],
) -> None:
    too_big = str(MAX_TEXT_BYTES + 1)
    result = runner.invoke(_typer_app, ["stream", "create", "story", "--text-max-bytes", too_big])
    assert result.exit_code == 2 and "--text-max-bytes" in result.output
    assert published == []


def test_stream_show_and_list_say_it_is_a_text_stream(
    published: list[stream_pb2.StreamDefinition],
) -> None:
    shown = runner.invoke(_typer_app, ["stream", "show", "story"])
    assert shown.exit_code == 0, shown.output
    assert "text stream: UTF-8 text of 1-4096 bytes per sample" in shown.output
    assert "label: none" in shown.output
    listed = runner.invoke(_typer_app, ["stream", "list"])
    assert listed.exit_code == 0, listed.output
    assert "4096 bytes" in listed.output and "none" in listed.output


def test_to_sample_makes_a_text_sample_that_ingestion_accepts() -> None:
    sample = to_sample({"text": "Il était une fois", "key": "doc-1"}, stream="lm")
    assert (sample.text, sample.key, sample.stream) == ("Il était une fois", "doc-1", "lm")
    assert sample.WhichOneof("label") is None and not sample.dense
    sample.event_time.FromMilliseconds(int(NOW * 1000))
    raw = RawRecord("raw", 0, 0, b"doc-1", sample.SerializeToString(), [], NOW)
    [out] = router().route(raw, PartitionMemory(60))
    assert out.rejection is None


@pytest.mark.parametrize(
    ("text", "message"),
    [(b"bytes", "text must be a str, not bytes"), (12, "text must be a str, not int"),
     ("lone \ud800 surrogate", "not encodable as UTF-8")],
)  # fmt: skip
def test_to_sample_refuses_text_that_is_not_a_utf8_str(text: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        to_sample({"text": text})


def test_send_queues_the_text_sample_on_the_raw_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[tuple[bytes, bytes, int]] = []
    producer = SampleProducer("127.0.0.1:1", stream="lm")  # never connects: _produce is faked
    monkeypatch.setattr(
        producer,
        "_produce",
        lambda key, value, _headers, rows, topic=None: queued.append((key, value, rows)),
    )
    producer.send({"text": "The quick brown fox", "key": "doc-7", "event_time": NOW})
    [(key, value, rows)] = queued
    sample = sample_pb2.Sample.FromString(value)
    assert (key, rows, sample.text, sample.stream) == (b"doc-7", 1, "The quick brown fox", "lm")
    assert router().rejections(value, []) == []  # a valid sample of the text stream
    empty = to_sample({"text": "", "event_time": NOW}, stream="lm").SerializeToString()
    assert [r.reason for r in router().rejections(empty, [])] == [Reason.MISSING_TEXT]
