"""`streamlearn replay backtest|evaluate|search|redrive`: what-if runs over a topic slice."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from services.replay.delay import LabelDelay, parse_delay
from services.replay.slices import Slice, SliceReader, SliceSpec
from services.trainer.config import TrainerConfig
from shared.clients.registry import RegistryClient
from shared.errors import ConfigError, InvalidArgument
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.cli.reach import needs
from streamlearn.cli.streams import streams_topic

if TYPE_CHECKING:
    from services.replay.runs import Run
    from services.replay.text_runs import TextRun
    from services.trainer.config import DistillSpec
    from services.trainer.text.config import TextModelConfig
    from services.trainer.text.distill import Teacher
    from streamlearn.v1.stream_pb2 import StreamDefinition

app = typer.Typer(
    help="Replay a topic slice: backtest, evaluate, search, redrive.", no_args_is_help=True
)
console = Console(stderr=True)
TOPIC = typer.Option(TopicSettings().train, "--topic", help="Topic to read.")
PARTITIONS = typer.Option("", help="Comma-separated partitions (default: all).")
STREAM = typer.Option(
    [],
    "--stream",
    help="Learn only this stream's records, as its trainer does (repeatable; "
    "default: every record of the slice).",
)
FROM_OFFSET = typer.Option(None, help="First offset, per partition.")
TO_OFFSET = typer.Option(None, help="End offset (exclusive), per partition.")
FROM_TIME = typer.Option("", help="Start time: ISO 8601 or unix ms.")
TO_TIME = typer.Option("", help="End time (exclusive): ISO 8601 or unix ms.")
REPORT = typer.Option(None, help="Write the JSON report here.")
PLOT = typer.Option(None, "--plot", help="Write a PNG of the learning curves here.")
LABEL_DELAY = typer.Option(
    "",
    "--label-delay",
    help="Serve each event before its label arrives this long after it (30s, 5m, 2h, "
    "250ms, plain seconds), or `recorded`: each joined sample's own delay. The headline "
    "metrics are then the served predictions'; the test-then-train ones are `immediate`.",
)


@contextmanager
def _sliced(ctx: typer.Context, topic: str, partitions: str, from_offset: int | None,
            to_offset: int | None, from_time: str, to_time: str
            ) -> Iterator[tuple[KafkaSettings, SliceReader, Slice]]:  # fmt: skip
    """The resolved slice and the reader (one consumer) that reads it."""
    kafka = kafka_for_cli(settings_of(ctx))
    spec = SliceSpec(
        topic,
        tuple(int(p) for p in partitions.split(",") if p.strip()),
        from_offset,
        to_offset,
        _time_ms(from_time),
        _time_ms(to_time),
    )
    with SliceReader(kafka) as reader:
        piece = reader.resolve(spec)
        console.print(f"slice: {piece.describe()} ({len(piece):,} records)")
        yield kafka, reader, piece


def _time_ms(text: str) -> int | None:
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgument(f"{text!r} is neither ISO 8601 nor unix milliseconds") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _configs(
    paths: list[Path],
    every: int = 1000,
    streams: list[str] | None = None,
    definition: StreamDefinition | None = None,
    label_delay: LabelDelay | None = None,
    teacher_of: Callable[[DistillSpec], Teacher] | None = None,
) -> list[Run | TextRun]:
    """A run per config; `teacher_of` loads a distilled language model's teacher."""
    from services.replay.runs import Run
    from services.replay.text_runs import TextRun

    runs: list[Run | TextRun] = []
    for path in paths:
        config = _any_config(path)
        chosen = frozenset(streams or ())
        if isinstance(config, TrainerConfig):
            runs.append(
                Run(
                    path.stem, config, every, chosen, definition=definition, label_delay=label_delay
                )
            )
        elif label_delay is not None:
            raise ConfigError(f"{path}: a label delay applies to labelled samples, not texts")
        else:
            spec = config.distill
            teacher = teacher_of(spec) if spec is not None and teacher_of is not None else None
            runs.append(TextRun(path.stem, config, every, chosen, teacher))
    return runs


@contextmanager
def _teachers(
    ctx: typer.Context, configs: list[TrainerConfig | TextModelConfig]
) -> Iterator[Callable[[DistillSpec], Teacher] | None]:
    """How to load the teachers of distilled language-model configs (None: none is)."""
    from services.trainer.text.config import TextModelConfig

    if not any(isinstance(c, TextModelConfig) and c.distill is not None for c in configs):
        yield None
        return
    from services.trainer.distill import registered_teacher
    from services.trainer.text.distill import OnnxTeacher

    settings = settings_of(ctx)
    with (
        needs("the registry", settings.registry_address, settings.grpc_security()),
        RegistryClient(settings.registry_address, security=settings.grpc_security()) as registry,
    ):

        def teacher_of(spec: DistillSpec) -> Teacher:
            teacher, _ = registered_teacher(spec, registry, OnnxTeacher)
            assert teacher is not None  # a spec always has one
            return teacher

        yield teacher_of


def _label_delay(text: str) -> LabelDelay | None:
    """`--label-delay`, parsed (None: not given); InvalidArgument in the usage error style."""
    return parse_delay(text) if text.strip() else None


def _config(path: Path) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate_json(path.read_text())
    except (OSError, ValidationError) as exc:
        raise ConfigError(f"{path}: not a usable trainer config: {_first_error(exc)}") from exc


def _any_config(path: Path) -> TrainerConfig | TextModelConfig:
    """A trainer config, or a language model's (`TRAINER_TEXT`) for a text stream.

    A JSON that is neither names the first problem of reading it as a trainer config.
    """
    try:
        return _config(path)
    except ConfigError:
        from services.trainer.text.config import TextModelConfig

        try:
            return TextModelConfig.model_validate_json(path.read_text())
        except ValidationError:
            pass
        raise


def _definition(kafka: KafkaSettings, streams: list[str]) -> StreamDefinition | None:
    """The definition of the one stream replayed, so named records featurize as the trainer's.

    With several streams (or none) the runs stay positional: one model has one schema.
    """
    if len(streams) != 1:
        return None
    from services.replay import replay

    return replay.stream_definition(kafka, streams_topic(kafka), streams[0])


def _first_error(exc: Exception) -> str:
    return exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)


class _Rate(ProgressColumn):
    """Records per second, as rich measures them."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} records/s")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    columns = (BarColumn(), MofNCompleteColumn(), _Rate(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("replay", total=total)
        yield lambda done: bar.update(task, completed=done)


@app.command()
def backtest(
    ctx: typer.Context,
    config: list[Path] = typer.Option(..., "--config", help="Trainer config JSON (repeatable)."),  # noqa: B008
    metric: str = typer.Option("loss", help="Metric to plot and rank by."),
    every: int = typer.Option(1000, min=10, help="Events between curve points."),
    stream: list[str] = STREAM,
    label_delay: str = LABEL_DELAY,
    topic: str = TOPIC, partitions: str = PARTITIONS, from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET, from_time: str = FROM_TIME, to_time: str = TO_TIME,
    report: Path | None = REPORT, png: Path | None = PLOT,
) -> None:  # fmt: skip
    """Run trainer configs through the slice, test-then-train, with the trainer's own code.

    With --label-delay each event is predicted by the model as it was before the labels
    still on their way arrived, and those predictions are scored (the headline).
    """
    from services.replay import replay  # the trainer's code: torch, ONNX Runtime

    delay = _label_delay(label_delay)  # bad options stop before the broker is asked
    configs = [_any_config(path) for path in config]
    slice_args = (topic, partitions, from_offset, to_offset, from_time, to_time)
    with _sliced(ctx, *slice_args) as (kafka, reader, piece), _teachers(ctx, configs) as teachers:
        runs = _configs(config, every, stream, _definition(kafka, stream), delay, teachers)
        with _progress(len(piece)) as progress:
            replay.backtest(reader, piece, runs, progress)
    _finish("backtest", piece, [r.report() for r in runs], metric, report, png, delay)


@app.command()
def evaluate(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Registered model."),
    versions: str = typer.Option("production", help="Comma-separated versions or aliases."),
    metric: str = typer.Option("loss"),
    topic: str = TOPIC, partitions: str = PARTITIONS, from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET, from_time: str = FROM_TIME, to_time: str = TO_TIME,
    report: Path | None = REPORT, png: Path | None = PLOT,
) -> None:  # fmt: skip
    """Score registered versions predict-only on the slice, side by side."""
    from services.replay import replay  # the trainer's code: torch, ONNX Runtime

    refs = [v.strip() for v in versions.split(",") if v.strip()]
    slice_args = (topic, partitions, from_offset, to_offset, from_time, to_time)
    with (
        _sliced(ctx, *slice_args) as (_, reader, piece),
        needs("the registry", settings_of(ctx).registry_address, settings_of(ctx).grpc_security()),
        RegistryClient(
            settings_of(ctx).registry_address, security=settings_of(ctx).grpc_security()
        ) as registry,
        _progress(len(piece)) as p,
    ):
        scored = replay.evaluate(reader, piece, registry, model, refs, p)
    _finish("evaluate", piece, [s.report() for s in scored], metric, report, png)


@app.command()
def search(
    ctx: typer.Context,
    config: Path = typer.Option(..., "--config", help="Base trainer config JSON."),  # noqa: B008
    axis: list[str] = typer.Option(..., "--axis", help='e.g. optimizer.lr=0.001,0.01,0.1'),  # noqa: B008
    samples: int = typer.Option(0, min=0, help="Random search: this many combinations."),
    metric: str = typer.Option("loss"),
    higher_is_better: bool = typer.Option(False, help="For accuracy or auc."),
    eta: int = typer.Option(3, min=2, help="Successive halving keeps 1/eta per rung."),
    register_as: str = typer.Option("", help="Register the winner under this model name."),
    stream: list[str] = STREAM,
    label_delay: str = LABEL_DELAY,
    topic: str = TOPIC, partitions: str = PARTITIONS, from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET, from_time: str = FROM_TIME, to_time: str = TO_TIME,
    report: Path | None = REPORT, png: Path | None = PLOT,
) -> None:  # fmt: skip
    """Hyper-parameter search with successive halving; optionally register the winner.

    With --label-delay the runs are ranked by their served metrics (see `backtest`).
    """
    from services.replay import replay  # the trainer's code: torch, ONNX Runtime

    delay = _label_delay(label_delay)
    base = _config(config)
    axes = dict(_axis(a) for a in axis)
    slice_args = (topic, partitions, from_offset, to_offset, from_time, to_time)
    with _sliced(ctx, *slice_args) as (kafka, reader, piece):
        definition = _definition(kafka, stream)
        runs = replay.grid(
            base, axes, samples, streams=frozenset(stream), definition=definition,
            label_delay=delay,
        )  # fmt: skip
        with _progress(len(piece)) as progress:
            ranked = replay.search(reader, piece, runs, metric, not higher_is_better, eta, progress)
    reports = [r.report() for r in ranked]
    if register_as:
        address, security = settings_of(ctx).registry_address, settings_of(ctx).grpc_security()
        with (
            needs("the registry", address, security),
            RegistryClient(address, security=security) as registry,
        ):
            version = replay.register(registry, register_as, ranked[0], piece)
        console.print(f"registered {register_as} v{version} as candidate ({ranked[0].name})")
    _finish("search", piece, reports, metric, report, png, delay)


def _axis(text: str) -> tuple[str, list[Any]]:
    name, _, values = text.partition("=")
    if not name or not values:
        raise InvalidArgument(f"--axis {text!r}: expected name=v1,v2,...")
    return name.strip(), [json.loads(v) if _is_json(v) else v for v in values.split(",")]


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


@app.command()
def redrive(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="Topic to copy the slice into."),
    rate: float = typer.Option(0.0, min=0, help="Records per second; 0 = no limit."),
    topic: str = TOPIC, partitions: str = PARTITIONS, from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET, from_time: str = FROM_TIME, to_time: str = TO_TIME,
) -> None:  # fmt: skip
    """Copy the slice into another topic (e.g. to retrain from scratch), rate-limited."""
    from services.replay import replay  # the trainer's code: torch, ONNX Runtime

    slice_args = (topic, partitions, from_offset, to_offset, from_time, to_time)
    with _sliced(ctx, *slice_args) as (kafka, _, piece), _progress(len(piece)) as progress:
        copied = replay.redrive(kafka, piece, target, rate, progress)
    console.print(f"copied {copied:,} records to {target}")


def _finish(kind: str, piece: Slice, results: list[dict[str, Any]], metric: str,
            report: Path | None, png: Path | None,
            label_delay: LabelDelay | None = None) -> None:  # fmt: skip
    title = f"{kind}: {piece.describe()}"
    if label_delay is not None:
        title += (
            f"\nlabels delayed ({label_delay.describe()}): metrics of the predictions as "
            "served; (immediate): test-then-train"
        )
    table = Table(title=title)
    sets = [(r, r["final"], "") for r in results]
    if label_delay is not None:  # each run's served metrics, then its immediate ones
        sets = [row for r in results for row in ((r, r["final"], ""),
                (r, r.get("immediate", {}), " (immediate)"))]  # fmt: skip
    names = sorted({k for _, final, _ in sets for k in final if k not in ("events", "learned")})
    for column in ("name", "events", *names):
        table.add_column(column, justify="left" if column == "name" else "right")
    for result, final, suffix in sets:
        stopped = f" (stopped at {result['stopped_at']:,})" if result.get("stopped_at") else ""
        table.add_row(result["name"] + suffix + stopped, f"{final.get('events', 0):,.0f}",
                      *(f"{final[n]:.4f}" if n in final else "-" for n in names))  # fmt: skip
    Console().print(table)
    document = {
        "kind": kind,
        "slice": {"topic": piece.topic, "ranges": piece.ranges},
        "label_delay": label_delay.describe() if label_delay is not None else None,
        "results": results,
    }
    from services.replay.report import plot, write_json  # matplotlib, only to report

    if report:
        write_json(report, document)
    if png:
        plot(png, {r["name"]: r["curve"] for r in results}, metric, f"{kind}: {piece.describe()}")
