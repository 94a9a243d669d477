"""The CLI for named features: `stream create|show|list` options and `produce --file x.csv`.

Kafka's edges (the definitions topic, the producer) are replaced by fakes: these tests check
the parsing and mapping; tests/integration/test_named_ingestion.py runs the real broker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from shared.errors import InvalidArgument
from shared.streams import check_definition
from streamlearn.cli import produce as produce_module
from streamlearn.cli import streams as streams_module
from streamlearn.cli.main import _typer_app
from streamlearn.cli.streams import DEFAULT_BUCKETS, Shape, definition_of
from streamlearn.client.datasets import CsvColumns, CsvMapping, check_csv, csv_header, csv_rows
from streamlearn.client.producer import to_sample
from streamlearn.v1 import stream_pb2

KIND = stream_pb2.LabelKind
NAMED = stream_pb2.StreamDefinition(
    name="people",
    dense_dim=2,
    sparse_buckets=1024,
    label_kind=KIND.LABEL_KIND_BINARY,
    class_names=["no", "yes"],
    revision=3,
    features=stream_pb2.FeatureSchema(
        numeric=["age", "income"],
        categorical=["country", "device"],
        crosses=[stream_pb2.FeatureCross(left="country", right="device")],
    ),
)
runner = CliRunner()


# --- stream create: option parsing --------------------------------------------------------


def test_named_options_make_a_schema_with_dense_dim_from_the_numeric_list() -> None:
    shape = Shape(
        numeric="age, income",
        categorical="country,device",
        crosses=("country:device",),
        buckets=1 << 20,
    )
    definition = definition_of("people", shape, "binary", class_names="no,yes")
    assert list(definition.features.numeric) == ["age", "income"]
    assert list(definition.features.categorical) == ["country", "device"]
    [cross] = definition.features.crosses
    assert (cross.left, cross.right) == ("country", "device")
    assert (definition.dense_dim, definition.sparse_buckets) == (2, 1 << 20)
    assert list(definition.class_names) == ["no", "yes"]
    check_definition(definition)  # what publishing checks: a consistent definition


def test_categorical_features_without_buckets_get_the_default_hash_space() -> None:
    definition = definition_of("c", Shape(numeric="age", categorical="country"), "regression")
    assert (definition.dense_dim, definition.sparse_buckets) == (1, DEFAULT_BUCKETS)
    check_definition(definition)
    only_categorical = definition_of("c", Shape(categorical="country"), "regression")
    with pytest.raises(InvalidArgument, match="at least one numeric"):
        check_definition(only_categorical)  # the trainer's models need a dense input


def test_positional_features_are_kept() -> None:
    definition = definition_of("p", Shape(features=8), "binary")
    assert definition.dense_dim == 8 and not definition.HasField("features")
    assert definition.features == stream_pb2.FeatureSchema()


def test_positional_and_named_features_at_once_are_refused() -> None:
    with pytest.raises(typer.BadParameter, match="not both"):
        definition_of("x", Shape(features=3, numeric="age"), "binary")


@pytest.mark.parametrize("cross", ["country", "country:", ":device", "a:b:c"])
def test_a_cross_that_is_not_left_colon_right_is_refused(cross: str) -> None:
    with pytest.raises(typer.BadParameter, match="LEFT:RIGHT"):
        definition_of("x", Shape(categorical="country,device", crosses=(cross,)), "binary")


def test_a_cross_of_unknown_features_is_refused_when_published() -> None:
    definition = definition_of("x", Shape(categorical="country", crosses=("country:os",)), "binary")
    with pytest.raises(InvalidArgument, match="cross"):
        check_definition(definition)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[stream_pb2.StreamDefinition]:
    """What `stream create` publishes, instead of Kafka; `stream show|list` read NAMED."""
    stored: list[stream_pb2.StreamDefinition] = []

    def publish(_kafka: object, _topic: str, definition: Any, **_: object) -> Any:
        check_definition(definition)
        stored.append(definition)
        return definition

    for module in (streams_module, produce_module):
        monkeypatch.setattr(module, "kafka_for_cli", lambda _settings: object())
        monkeypatch.setattr(module, "streams_topic", lambda _kafka: "streams")
        monkeypatch.setattr(module, "load_definitions", lambda _kafka, _topic: [NAMED])
    monkeypatch.setattr(streams_module, "publish_definition", publish)
    return stored


def test_stream_create_parses_the_named_options(
    published: list[stream_pb2.StreamDefinition],
) -> None:
    result = runner.invoke(
        _typer_app,
        ["stream", "create", "people", "--numeric", "age,income", "--categorical",
         "country,device", "--cross", "country:device", "--buckets", "1048576",
         "--label", "binary"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [definition] = published
    assert list(definition.features.numeric) == ["age", "income"]
    assert definition.dense_dim == 2 and definition.sparse_buckets == 1048576
    assert len(definition.features.crosses) == 1


def test_stream_create_refuses_features_and_numeric_at_once(
    published: list[stream_pb2.StreamDefinition],
) -> None:
    result = runner.invoke(
        _typer_app,
        ["stream", "create", "x", "--features", "3", "--numeric", "age", "--label", "binary"],
    )
    assert result.exit_code == 2 and "not both" in result.output
    assert published == []


def test_stream_create_sets_the_join_policy_and_refuses_one_no_joiner_could_follow(
    published: list[stream_pb2.StreamDefinition],
) -> None:
    base = ["stream", "create", "clicks", "--features", "2", "--label", "binary"]
    result = runner.invoke(_typer_app, [*base, "--join-window", "60", "--negative-after", "30"])
    assert result.exit_code == 0, result.output
    [definition] = published
    assert (definition.join.window_s, definition.join.negative_after_s) == (60.0, 30.0)
    refused = runner.invoke(_typer_app, [*base, "--join-window", "60", "--negative-after", "90"])
    assert refused.exit_code != 0 and "after the window closes" in str(refused.exception)
    assert len(published) == 1


def test_stream_show_and_list_display_the_schema(
    published: list[stream_pb2.StreamDefinition], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams_module, "console", Console(width=200))  # no wrapped cells
    shown = runner.invoke(_typer_app, ["stream", "show", "people"])
    assert shown.exit_code == 0, shown.output
    assert "numeric: age, income" in shown.output
    assert "categorical: country, device" in shown.output
    assert "crosses: country:device" in shown.output
    listed = runner.invoke(_typer_app, ["stream", "list"])
    assert listed.exit_code == 0, listed.output
    for line in ("numeric: age, income", "categorical: country, device", "country:device"):
        assert line in listed.output


# --- CSV mapping ----------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read(path: Path, definition: stream_pb2.StreamDefinition = NAMED, **kw: Any) -> list[Any]:
    mapping = CsvMapping(definition, csv_header(path), CsvColumns(**kw))
    return list(csv_rows(path, mapping))


def test_csv_columns_map_by_name_with_empty_cells_missing_and_bad_rows_reported(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "user,device,age,label,country,income\n"
        "u1,ios,31,1,FR,52000\n"
        "u2,,,0,DE,\n"  # missing device, age and income
        "u3,android,old,1,FR,1\n"  # text in a numeric column
        "\n"
        "u4,ios,40,yes,,7.5\n",  # a class name as label, missing country
    )
    rows = read(path, key="user")
    assert [r.line for r in rows] == [2, 3, 4, 6]
    first, second, bad, fourth = rows
    assert first.fields == {
        "features": {"device": "ios", "age": 31.0, "country": "FR", "income": 52000.0},
        "label": 1,
        "key": "u1",
    }
    assert second.fields["features"] == {"age": None, "country": "DE", "income": None}
    assert bad.fields is None and bad.error == "line 4: column 'age': 'old' is not a number"
    assert fourth.fields["label"] == 1 and "country" not in fourth.fields["features"]
    sample = to_sample(second.fields, stream="people")  # what the SDK then sends
    assert set(sample.features) == {"country"} and sample.class_index == 0


def test_unknown_columns_are_an_error_listing_them_unless_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "age,colour,label,shoe\n31,red,1,42\n")
    with pytest.raises(InvalidArgument, match="schema: colour, shoe") as refused:
        read(path)
    assert "--ignore-extra" in str(refused.value)
    [row] = read(path, ignore_extra=True)
    assert row.fields["features"] == {"age": 31.0}


def test_schema_features_without_a_column_are_listed_as_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "age,label\n31,0\n")
    mapping = CsvMapping(NAMED, csv_header(path))
    assert mapping.missing == ["income", "country", "device"]


@pytest.mark.parametrize(
    ("header", "columns", "message"),
    [
        ("age,country", {}, "no column 'label'"),
        ("age,target", {"label": "y"}, "no column 'y'"),
        ("age,label", {"key": "user"}, "no column 'user'"),
        ("age,label", {"event_id": "id"}, "no column 'id'"),
        ("age,age,label", {}, "named twice in the header: age"),
    ],
)
def test_a_header_that_does_not_fit_is_refused_before_any_row(
    tmp_path: Path, header: str, columns: dict[str, str], message: str
) -> None:
    path = write(tmp_path, header + "\n")
    with pytest.raises(InvalidArgument, match=message):
        read(path, NAMED, **columns)


@pytest.mark.parametrize(
    ("cells", "error"),
    [
        ("31,", "the label is empty"),
        ("31,2", "class 2 outside [0, 2)"),
        ("31,maybe", "label 'maybe' is not a class index or one of no, yes"),
        ("inf,1", "column 'age': 'inf' is not finite"),
        ("31,1,extra", "3 cells, the header has 2"),
    ],
)
def test_bad_rows_say_why(tmp_path: Path, cells: str, error: str) -> None:
    [row] = read(write(tmp_path, f"age,label\n{cells}\n"))
    assert row.fields is None and row.error == f"line 2: {error}"


def test_an_oversized_category_is_a_bad_row(tmp_path: Path) -> None:
    [row] = read(write(tmp_path, f"country,label\n{'x' * 2000},1\n"))
    assert row.fields is None and "over 1024 bytes" in row.error


def test_event_ids_come_from_the_event_id_column_or_the_one_named(tmp_path: Path) -> None:
    path = write(tmp_path, "event_id,id,age,label\ne1,i1,1,1\n")
    [default] = read(path, ignore_extra=True)
    assert default.fields["event_id"] == "e1"
    [named] = read(path, event_id="id", ignore_extra=True)
    assert named.fields["event_id"] == "i1"


def test_labels_follow_the_label_kind(tmp_path: Path) -> None:
    regression = stream_pb2.StreamDefinition()
    regression.CopyFrom(NAMED)
    regression.label_kind = KIND.LABEL_KIND_REGRESSION
    del regression.class_names[:]
    [row] = read(write(tmp_path, "age,label\n1,2.5\n"), regression)
    assert row.fields["label"] == 2.5 and isinstance(row.fields["label"], float)
    multiclass = stream_pb2.StreamDefinition(
        name="m", dense_dim=2, label_kind=KIND.LABEL_KIND_MULTICLASS, num_classes=3,
        class_names=["cat", "dog", "cow"],
    )  # fmt: skip
    [cow, one] = read(write(tmp_path, "a,b,label\n1,2,cow\n1,2,1.0\n"), multiclass)
    assert cow.fields == {"features": [1.0, 2.0], "label": 2}
    assert one.fields["label"] == 1
    multilabel = stream_pb2.StreamDefinition(
        name="t", dense_dim=1, label_kind=KIND.LABEL_KIND_MULTILABEL, num_classes=3
    )
    [tags] = read(write(tmp_path, "a,label\n1,0;2\n"), multilabel)
    assert tags.fields == {"features": [1.0], "labels": [0, 2]}


def test_a_positional_stream_takes_the_feature_columns_in_order(tmp_path: Path) -> None:
    positional = stream_pb2.StreamDefinition(
        name="p", dense_dim=2, label_kind=KIND.LABEL_KIND_BINARY
    )
    [row, gap] = read(write(tmp_path, "x2,label,x1\n2.5,1,1.5\n,0,1\n"), positional)
    assert row.fields == {"features": [2.5, 1.5], "label": 1}
    assert gap.fields is None and "empty feature cell" in gap.error
    with pytest.raises(InvalidArgument, match="3 feature columns, stream 'p' has 2"):
        read(write(tmp_path, "a,b,c,label\n"), positional)


# --- produce --file x.csv -------------------------------------------------------------------


class FakeProducer:
    """Records what `produce` sends; delivers everything on flush."""

    sent: list[dict[str, Any]] = []

    def __init__(self, **_: object) -> None:
        self.delivered = 0
        FakeProducer.sent = []

    def send(self, fields: dict[str, Any]) -> None:
        to_sample(fields)  # what the real producer would refuse, this one refuses too
        FakeProducer.sent.append(fields)

    def flush(self) -> int:
        self.delivered = len(FakeProducer.sent)
        return self.delivered

    def __enter__(self) -> FakeProducer:
        return self

    def __exit__(self, *_: object) -> None:
        self.flush()


@pytest.fixture
def producer(
    published: list[stream_pb2.StreamDefinition], monkeypatch: pytest.MonkeyPatch
) -> type[FakeProducer]:
    monkeypatch.setattr(produce_module, "SampleProducer", FakeProducer)
    FakeProducer.sent = []
    return FakeProducer


def test_produce_sends_the_rows_that_fit_and_counts_the_others(
    tmp_path: Path, producer: type[FakeProducer]
) -> None:
    path = write(tmp_path, "age,country,y,user\n31,FR,1,u1\n,DE,no,u2\nold,FR,1,u3\n")
    result = runner.invoke(
        _typer_app,
        ["produce", "--file", str(path), "--stream", "people", "--label", "y", "--key", "user"],
    )
    assert result.exit_code == 1, result.output  # a row was skipped
    assert [s["key"] for s in producer.sent] == ["u1", "u2"]
    assert producer.sent[1] == {
        "features": {"age": None, "country": "DE"}, "label": 0, "key": "u2"
    }  # fmt: skip
    assert "2 samples delivered to people" in result.output
    assert "1 rows skipped" in result.output
    assert "line 4: column 'age': 'old' is not a number" in result.output
    assert "no column for income, device: sent as missing" in result.output


def test_produce_refuses_unknown_columns_before_sending(
    tmp_path: Path, producer: type[FakeProducer]
) -> None:
    path = write(tmp_path, "age,colour,label\n31,red,1\n")
    result = runner.invoke(_typer_app, ["produce", "--file", str(path), "--stream", "people"])
    assert isinstance(result.exception, InvalidArgument) and "colour" in str(result.exception)
    assert producer.sent == []
    ignored = runner.invoke(
        _typer_app, ["produce", "--file", str(path), "--stream", "people", "--ignore-extra"]
    )
    assert ignored.exit_code == 0, ignored.output
    assert producer.sent == [{"features": {"age": 31.0}, "label": 1}]


def test_produce_needs_the_stream_to_be_defined(
    tmp_path: Path, producer: type[FakeProducer]
) -> None:
    path = write(tmp_path, "age,label\n31,1\n", name="nowhere.csv")
    result = runner.invoke(_typer_app, ["produce", "--file", str(path)])  # stream: file stem
    assert "no stream named 'nowhere'" in str(result.exception)
    assert producer.sent == []


def test_an_unreadable_csv_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes("\ufeffage,label\n".encode() + b"1,1\n" * 20_000 + b"\xff\xfe,1\n")
    header = csv_header(path)
    assert header == ["age", "label"]  # the byte-order mark is not part of the first name
    definition = stream_pb2.StreamDefinition(
        name="s",
        dense_dim=1,
        label_kind=stream_pb2.LABEL_KIND_BINARY,
        features=stream_pb2.FeatureSchema(numeric=["age"]),
    )
    mapping = CsvMapping(definition, header, CsvColumns())
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        check_csv(path, mapping)
