"""`streamlearn stream create|list|show`: stream definitions on their compacted topic."""

from __future__ import annotations

from dataclasses import dataclass

import typer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.errors import NotFound
from shared.kafka.admin import ensure_topics, standard_topics
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import MAX_TEXT_BYTES, load_definitions, publish_definition
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.v1 import stream_pb2

app = typer.Typer(help="Define the streams ingestion validates against.", no_args_is_help=True)
console = Console()
KINDS = {"regression": 1, "binary": 2, "multiclass": 3, "multilabel": 4}
# The hash space of a stream with categorical features when --buckets is not given.
DEFAULT_BUCKETS = 1 << 20


def streams_topic(kafka: KafkaSettings) -> str:
    """The definitions topic, created when missing."""
    topics = TopicSettings()
    specs = [t for t in standard_topics(topics) if t.name == topics.streams]
    ensure_topics(AdminClient(kafka.client_config()), specs)
    return topics.streams


@dataclass(frozen=True)
class Shape:
    """The feature options of `stream create`: positional (`--features N`) or named."""

    features: int = 0
    numeric: str = ""
    categorical: str = ""
    crosses: tuple[str, ...] = ()
    buckets: int = 0


def definition_of(
    name: str,
    shape: Shape,
    label: str,
    classes: int = 0,
    class_names: str = "",
    description: str = "",
    text_max_bytes: int = 0,
) -> stream_pb2.StreamDefinition:
    """The definition `stream create` publishes (checked by `publish_definition`).

    Named features set `dense_dim` to the number of numeric ones; categorical features
    without `--buckets` get `DEFAULT_BUCKETS`. `text_max_bytes` > 0 makes a text stream,
    whose label (`label` empty: none) and features are optional.

    Raises:
        typer.BadParameter: an unknown label kind, no label on a stream that is not a text
            stream, `--features` beside named features, or a cross that is not `left:right`.

    """
    if not label and not text_max_bytes:
        raise typer.BadParameter(
            f"required (choose from {', '.join(KINDS)}) unless the stream is a text stream "
            "(--text-max-bytes N)",
            param_hint="--label",
        )
    if label and label not in KINDS:
        raise typer.BadParameter(f"choose from {', '.join(KINDS)}", param_hint="--label")
    schema = stream_pb2.FeatureSchema(
        numeric=_names(shape.numeric),
        categorical=_names(shape.categorical),
        crosses=[_cross(text) for given in shape.crosses for text in _names(given)],
    )
    named = bool(schema.numeric or schema.categorical or schema.crosses)
    if named and shape.features:
        raise typer.BadParameter(
            "give --features N (positional) or --numeric/--categorical (named), not both",
            param_hint="--features",
        )
    buckets = shape.buckets or (DEFAULT_BUCKETS if schema.categorical else 0)
    definition = stream_pb2.StreamDefinition(
        name=name,
        dense_dim=len(schema.numeric) if named else shape.features,
        sparse_buckets=buckets,
        label_kind=KINDS.get(label, 0),  # type: ignore[arg-type]
        num_classes=classes,
        class_names=_names(class_names),
        description=description,
    )
    if named:  # a positional stream's definition stays as it always was: no schema field
        definition.features.CopyFrom(schema)
    if text_max_bytes:  # likewise, only a text stream's definition has the text field
        definition.text.max_bytes = text_max_bytes
    return definition


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cross(text: str) -> stream_pb2.FeatureCross:
    left, colon, right = text.partition(":")
    if not colon or not left.strip() or not right.strip() or ":" in right:
        raise typer.BadParameter(f"{text!r} is not LEFT:RIGHT", param_hint="--cross")
    return stream_pb2.FeatureCross(left=left.strip(), right=right.strip())


@app.command()
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Stream name, e.g. clicks."),
    features: int = typer.Option(
        0, "--features", min=0, help="Positional dense features per sample."
    ),
    numeric: str = typer.Option(
        "", help="Named numeric features, comma-separated (sets the dense size)."
    ),
    categorical: str = typer.Option("", help="Named categorical features, comma-separated."),
    cross: list[str] = typer.Option(  # noqa: B008 - typer's declaration style
        [], help="A cross of two categorical features, LEFT:RIGHT (repeatable)."
    ),
    sparse_buckets: int = typer.Option(
        0,
        "--buckets",
        "--sparse-buckets",
        min=0,
        help=f"Size of the hashed sparse space (default {DEFAULT_BUCKETS} with categorical).",
    ),
    label: str = typer.Option(
        "",
        help="regression | binary | multiclass | multilabel (optional on a text stream).",
    ),
    classes: int = typer.Option(0, min=0, help="Number of classes (multiclass/multilabel)."),
    class_names: str = typer.Option("", help="Comma-separated class names."),
    description: str = typer.Option(""),
    join_window: float = typer.Option(
        0.0, min=0, help="Seconds a label may take after its prediction (0: the joiner's)."
    ),
    negative_after: float = typer.Option(
        0.0, min=0, help="Silence after which a served prediction is a negative (0: never)."
    ),
    negative_value: float = typer.Option(
        0.0, help="The label of a negative: a class index, or a regression target."
    ),
    text_max_bytes: int = typer.Option(
        0,
        "--text-max-bytes",
        min=0,
        max=MAX_TEXT_BYTES,
        help="Make a text stream: each sample carries UTF-8 text of at most this many bytes.",
    ),
    replace: bool = typer.Option(False, "--replace", help="Change an existing stream."),
) -> None:
    """Create a stream (or change one with --replace); running services pick it up live.

    Positional: `--features 8`. Named: `--numeric age,income --categorical country,device
    --cross country:device`; samples then carry a map of feature names to values. Text (for
    language models): `--text-max-bytes 4096`; samples then carry UTF-8 text, and features
    and `--label` are optional. Learning from served traffic: `--join-window 3600
    --negative-after 1800` (no click within 30 minutes of a prediction is a negative,
    class 0).
    """
    shape = Shape(features, numeric, categorical, tuple(cross), sparse_buckets)
    definition = definition_of(
        name, shape, label, classes, class_names, description, text_max_bytes
    )
    definition.join.window_s = join_window
    definition.join.negative_after_s = negative_after
    definition.join.negative_value = negative_value
    kafka = kafka_for_cli(settings_of(ctx))
    stored = publish_definition(kafka, streams_topic(kafka), definition, replace=replace)
    console.print(f"stream [bold]{stored.name}[/] revision {stored.revision}")


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every defined stream."""
    kafka = kafka_for_cli(settings_of(ctx))
    table = Table(
        "stream",
        "features",
        "sparse",
        "schema",
        "text",
        "label",
        "classes",
        "revision",
        "description",
    )
    for d in load_definitions(kafka, streams_topic(kafka)):
        table.add_row(
            d.name,
            str(d.dense_dim),
            str(d.sparse_buckets),
            escape("\n".join(schema_lines(d)) or "positional"),
            f"{d.text.max_bytes} bytes" if d.text.max_bytes else "-",
            _kind(d),
            str(d.num_classes),
            str(d.revision),
            d.description,
        )
    console.print(table)


@app.command()
def show(ctx: typer.Context, name: str) -> None:
    """One stream's definition."""
    kafka = kafka_for_cli(settings_of(ctx))
    found = {d.name: d for d in load_definitions(kafka, streams_topic(kafka))}.get(name)
    if found is None:
        raise NotFound(f"no stream named {name!r}")
    console.print(f"[bold]{found.name}[/] (revision {found.revision})")
    console.print(f"  dense features: {found.dense_dim}   sparse buckets: {found.sparse_buckets}")
    console.print(
        f"  label: {_kind(found)}   classes: {found.num_classes} {list(found.class_names)}"
    )
    for line in schema_lines(found) or ["positional features (no schema)"]:
        console.print(f"  {line}", markup=False, highlight=False)
    if text := text_line(found):
        console.print(f"  {text}", markup=False, highlight=False)
    join = found.join
    if join.window_s or join.negative_after_s:
        window = f"{join.window_s:g} s" if join.window_s else "the joiner's default"
        negatives = (
            f"negative ({join.negative_value:g}) after {join.negative_after_s:g} s of silence"
            if join.negative_after_s
            else "no negatives"
        )
        console.print(f"  join: window {window}, {negatives}")
    if found.description:
        console.print(f"  {found.description}")


def schema_lines(definition: stream_pb2.StreamDefinition) -> list[str]:
    """The named features of a definition, one line per kind (none for a positional one)."""
    schema = definition.features
    lines = []
    if schema.numeric:
        lines.append(f"numeric: {', '.join(schema.numeric)}")
    if schema.categorical:
        lines.append(f"categorical: {', '.join(schema.categorical)}")
    if schema.crosses:
        lines.append(f"crosses: {', '.join(f'{c.left}:{c.right}' for c in schema.crosses)}")
    return lines


def text_line(definition: stream_pb2.StreamDefinition) -> str:
    """What a text stream's samples carry; empty for any other stream."""
    limit = definition.text.max_bytes
    return f"text stream: UTF-8 text of 1-{limit} bytes per sample" if limit else ""


def _kind(definition: stream_pb2.StreamDefinition) -> str:
    if definition.label_kind == stream_pb2.LABEL_KIND_UNSPECIFIED:
        return "none"  # only text streams may have no label kind
    return stream_pb2.LabelKind.Name(definition.label_kind).removeprefix("LABEL_KIND_").lower()
