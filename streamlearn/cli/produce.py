"""`streamlearn produce`: stream a synthetic dataset or a CSV/JSONL file to the raw topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.errors import Conflict
from shared.streams import publish_definition
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.cli.streams import streams_topic
from streamlearn.client.datasets import Synthetic, read_file
from streamlearn.client.producer import SampleProducer

console = Console(stderr=True)


def produce(
    ctx: typer.Context,
    dataset: str = typer.Argument("binary", help="regression | binary | multiclass | drift"),
    file: Path | None = typer.Option(  # noqa: B008 - typer's declaration style
        None, exists=True, dir_okay=False, help="CSV or JSONL."
    ),
    stream: str = typer.Option("", help="Stream name (default: the dataset's name)."),
    events: int = typer.Option(10_000, min=1, help="Samples to send (synthetic datasets)."),
    rate: float = typer.Option(0.0, min=0, help="Samples per second; 0 = as fast as possible."),
    batch_rows: int = typer.Option(0, min=0, help="Pack N samples per record (columnar)."),
    features: int = typer.Option(8, min=1),
    classes: int = typer.Option(3, min=2),
    keys: int = typer.Option(100, min=1, help="Distinct sample keys (synthetic)."),
    seed: int = typer.Option(0),
    label_column: str = typer.Option("label", help="CSV label column."),
    key_column: str = typer.Option("", help="CSV key column."),
) -> None:
    """Publish samples with idempotent, acknowledged delivery and a progress bar."""
    kafka = kafka_for_cli(settings_of(ctx))
    synthetic = Synthetic(dataset, features=features, classes=classes, seed=seed)
    name = stream or (file.stem if file else dataset)
    if file is None:
        _ensure_stream(kafka, synthetic, name)
    started = time.perf_counter()
    with SampleProducer(kafka=kafka, stream=name) as producer, _progress() as progress:
        task = progress.add_task(name, total=None if file else events)
        sent = 0
        for rows in _send(
            producer, synthetic, file, events, batch_rows, keys, label_column, key_column
        ):
            sent += rows
            progress.update(task, completed=sent)
            _pace(started, sent, rate)
        producer.flush()
    elapsed = time.perf_counter() - started
    console.print(
        f"{producer.delivered:,} samples delivered to [bold]{name}[/] in {elapsed:.1f}s "
        f"({producer.delivered / elapsed:,.0f}/s)"
    )


def _ensure_stream(kafka: object, synthetic: Synthetic, name: str) -> None:
    try:
        publish_definition(kafka, streams_topic(kafka), synthetic.definition(name))  # type: ignore[arg-type]
        console.print(f"created stream [bold]{name}[/]")
    except Conflict:
        pass  # defined already: its definition wins (a mismatch shows up as dead letters)


def _send(
    producer: SampleProducer,
    synthetic: Synthetic,
    file: Path | None,
    events: int,
    batch_rows: int,
    keys: int,
    label_column: str,
    key_column: str,
) -> Iterator[int]:
    """Send and yield the number of samples queued per step."""
    if file is not None:
        for fields in read_file(file, label_column, key_column):
            producer.send(fields)
            yield 1
        return
    row = 0
    for x, y in synthetic.chunks(events, chunk=max(batch_rows, 500)):
        names = [f"key-{(row + i) % keys}" for i in range(len(x))]
        if batch_rows:
            producer.send_columns(x, y, keys=names, rows_per_record=batch_rows)
        else:
            for i in range(len(x)):
                producer.send({"features": x[i], "label": y[i], "key": names[i]})
        row += len(x)
        yield len(x)


def _pace(started: float, sent: int, rate: float) -> None:
    if rate > 0:
        ahead = started + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
