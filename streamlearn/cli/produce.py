"""`streamlearn produce`: stream a synthetic dataset or a CSV/JSONL file to the raw topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.errors import Conflict, NotFound
from shared.settings import KafkaSettings
from shared.streams import load_definitions, publish_definition
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.cli.streams import streams_topic
from streamlearn.client.datasets import (
    JSON_LINES,
    CsvColumns,
    CsvMapping,
    Synthetic,
    check_csv,
    csv_header,
    csv_rows,
    read_file,
)
from streamlearn.client.producer import SampleProducer

console = Console(stderr=True)


def produce(
    ctx: typer.Context,
    dataset: str = typer.Argument("binary", help="regression | binary | multiclass | drift"),
    file: Path | None = typer.Option(  # noqa: B008 - typer's declaration style
        None, exists=True, dir_okay=False, help="CSV (with a header) or JSONL."
    ),
    stream: str = typer.Option("", help="Stream name (default: the dataset's or file's name)."),
    events: int = typer.Option(10_000, min=1, help="Samples to send (synthetic datasets)."),
    rate: float = typer.Option(0.0, min=0, help="Samples per second; 0 = as fast as possible."),
    batch_rows: int = typer.Option(0, min=0, help="Pack N samples per record (columnar)."),
    features: int = typer.Option(8, min=1),
    classes: int = typer.Option(3, min=2),
    keys: int = typer.Option(100, min=1, help="Distinct sample keys (synthetic)."),
    seed: int = typer.Option(0),
    label_column: str = typer.Option(
        "label", "--label", "--label-column", help="CSV label column."
    ),
    key_column: str = typer.Option("", "--key", "--key-column", help="CSV key column."),
    event_id_column: str = typer.Option(
        "", "--event-id", help="CSV event id column (default: `event_id` if present)."
    ),
    ignore_extra: bool = typer.Option(
        False, "--ignore-extra", help="Skip CSV columns the stream's schema does not name."
    ),
) -> None:
    """Publish samples with idempotent, acknowledged delivery and a progress bar.

    A CSV file goes to a defined stream: its columns are mapped by name to the stream's
    feature schema (or in order to its positional features), the label parsed by the
    stream's label kind (a class index or name, or a number). Rows that do not fit are
    reported with their line and not sent; the exit code is then 1.
    """
    kafka = kafka_for_cli(settings_of(ctx))
    synthetic = Synthetic(dataset, features=features, classes=classes, seed=seed)
    name = stream or (file.stem if file else dataset)
    if file is None:
        _ensure_stream(kafka, synthetic, name)
    mapping = None
    if file is not None and file.suffix not in JSON_LINES:  # checked before anything is sent
        columns = CsvColumns(label_column, key_column, event_id_column, ignore_extra)
        mapping = _csv_mapping(kafka, file, name, columns)
    counts = Counts()
    started = time.perf_counter()
    with SampleProducer(kafka=kafka, stream=name) as producer, _progress() as progress:
        task = progress.add_task(name, total=None if file else events)
        if file is not None and mapping is not None:
            steps = _send_csv(producer, file, mapping, counts)
        elif file is not None:
            steps = _send_file(producer, file, label_column, key_column)
        else:
            steps = _send_synthetic(producer, synthetic, events, batch_rows, keys)
        for rows in steps:
            counts.sent += rows
            progress.update(task, completed=counts.sent)
            _pace(started, counts.sent, rate)
        producer.flush()
    elapsed = time.perf_counter() - started
    console.print(
        f"{producer.delivered:,} samples delivered to [bold]{escape(name)}[/] in {elapsed:.1f}s "
        f"({producer.delivered / elapsed:,.0f}/s)"
    )
    if counts.skipped:
        console.print(f"{counts.skipped:,} rows skipped (not sent):", style="yellow")
        for error in counts.errors:
            console.print(f"  {error}", markup=False, highlight=False)
        if counts.skipped > len(counts.errors):
            console.print(f"  ... and {counts.skipped - len(counts.errors):,} more")
        raise typer.Exit(1)


@dataclass
class Counts:
    """Samples queued and CSV rows skipped, with the first errors to show."""

    sent: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    shown: int = 10

    def skip(self, error: str) -> None:
        """One more row not sent."""
        self.skipped += 1
        if len(self.errors) < self.shown:
            self.errors.append(error)


def _csv_mapping(kafka: KafkaSettings, file: Path, name: str, columns: CsvColumns) -> CsvMapping:
    """The mapping of the file's header to stream `name`'s definition.

    Raises:
        NotFound: the stream is not defined.
        InvalidArgument: the header does not fit the definition.

    """
    definition = {d.name: d for d in load_definitions(kafka, streams_topic(kafka))}.get(name)
    if definition is None:
        raise NotFound(
            f"no stream named {name!r} (--stream; or define it with `streamlearn stream create`)"
        )
    mapping = CsvMapping(definition, csv_header(file), columns)
    check_csv(file, mapping)  # an unreadable file stops here, before a row is sent
    if mapping.missing:
        shown = ", ".join(mapping.missing)
        console.print(f"no column for {shown}: sent as missing", markup=False, highlight=False)
    return mapping


def _ensure_stream(kafka: KafkaSettings, synthetic: Synthetic, name: str) -> None:
    try:
        publish_definition(kafka, streams_topic(kafka), synthetic.definition(name))
        console.print(f"created stream [bold]{name}[/]")
    except Conflict:
        pass  # defined already: its definition wins (a mismatch shows up as dead letters)


def _send_csv(
    producer: SampleProducer, file: Path, mapping: CsvMapping, counts: Counts
) -> Iterator[int]:
    """Send each row that fits the stream; count (and keep the first errors of) the others."""
    for row in csv_rows(file, mapping):
        if row.fields is None:
            counts.skip(row.error)
            continue
        producer.send(row.fields)
        yield 1


def _send_file(
    producer: SampleProducer, file: Path, label_column: str, key_column: str
) -> Iterator[int]:
    """Send each sample of a JSONL file."""
    for fields in read_file(file, label_column, key_column):
        producer.send(fields)
        yield 1


def _send_synthetic(
    producer: SampleProducer, synthetic: Synthetic, events: int, batch_rows: int, keys: int
) -> Iterator[int]:
    """Send and yield the number of samples queued per step."""
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
