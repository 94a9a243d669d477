"""`streamlearn stream create|list|show`: stream definitions on their compacted topic."""

from __future__ import annotations

import typer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from shared.errors import NotFound
from shared.kafka.admin import ensure_topics, standard_topics
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import load_definitions, publish_definition
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.v1 import stream_pb2

app = typer.Typer(help="Define the streams ingestion validates against.", no_args_is_help=True)
console = Console()
KINDS = {"regression": 1, "binary": 2, "multiclass": 3, "multilabel": 4}


def streams_topic(kafka: KafkaSettings) -> str:
    """The definitions topic, created when missing."""
    topics = TopicSettings()
    specs = [t for t in standard_topics(topics) if t.name == topics.streams]
    ensure_topics(AdminClient(kafka.client_config()), specs)
    return topics.streams


@app.command()
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Stream name, e.g. clicks."),
    features: int = typer.Option(0, "--features", min=0, help="Dense features per sample."),
    sparse_buckets: int = typer.Option(0, min=0, help="Size of the hashed sparse space."),
    label: str = typer.Option(..., help="regression | binary | multiclass | multilabel"),
    classes: int = typer.Option(0, min=0, help="Number of classes (multiclass/multilabel)."),
    class_names: str = typer.Option("", help="Comma-separated class names."),
    description: str = typer.Option(""),
    replace: bool = typer.Option(False, "--replace", help="Change an existing stream."),
) -> None:
    """Create a stream (or change one with --replace); running services pick it up live."""
    if label not in KINDS:
        raise typer.BadParameter(f"choose from {', '.join(KINDS)}", param_hint="--label")
    definition = stream_pb2.StreamDefinition(
        name=name,
        dense_dim=features,
        sparse_buckets=sparse_buckets,
        label_kind=KINDS[label],  # type: ignore[arg-type]
        num_classes=classes,
        class_names=[c for c in class_names.split(",") if c],
        description=description,
    )
    kafka = kafka_for_cli(settings_of(ctx))
    stored = publish_definition(kafka, streams_topic(kafka), definition, replace=replace)
    console.print(f"stream [bold]{stored.name}[/] revision {stored.revision}")


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every defined stream."""
    kafka = kafka_for_cli(settings_of(ctx))
    table = Table("stream", "features", "sparse", "label", "classes", "revision", "description")
    for d in load_definitions(kafka, streams_topic(kafka)):
        table.add_row(
            d.name,
            str(d.dense_dim),
            str(d.sparse_buckets),
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
    if found.description:
        console.print(f"  {found.description}")


def _kind(definition: stream_pb2.StreamDefinition) -> str:
    return stream_pb2.LabelKind.Name(definition.label_kind).removeprefix("LABEL_KIND_").lower()
