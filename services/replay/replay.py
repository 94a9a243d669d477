"""Replay operations over a topic slice: backtest, evaluate, search, redrive.

None of them joins a consumer group, writes to a live topic or calls the registry unless
asked to (`evaluate` reads versions; `search --register` registers the winner; `redrive`
writes to the target topic it is given).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from confluent_kafka import Producer
from pydantic import ValidationError

from services.replay.delay import LabelDelay
from services.replay.runs import Run, halving_points, prune
from services.replay.scoring import Scored
from services.replay.slices import Slice, SliceReader, read
from services.replay.text_runs import TextRun
from services.trainer.config import TrainerConfig
from services.trainer.export import SPARSE_INPUT, OnnxExporter
from services.trainer.learner import Batch
from services.trainer.settings import reconcile
from shared.clients.registry import RegistryClient
from shared.errors import ConfigError, InvalidArgument
from shared.features import FeatureSpace, Featurizer
from shared.kafka.config import producer_config
from shared.kafka.producer import delivering, produce
from shared.onnx_models import INPUT, OUTPUT
from shared.ort import make_session
from shared.settings import KafkaSettings
from shared.streams import load_definitions
from streamlearn.v1 import registry_pb2, stream_pb2

Progress = Callable[[int], None]  # records read so far


log = logging.getLogger(__name__)
RunT = TypeVar("RunT", bound=Run | TextRun)


def stream_definition(
    kafka: KafkaSettings, topic: str, stream: str
) -> stream_pb2.StreamDefinition | None:
    """The current definition of `stream` in the catalog on `topic` (None: not defined).

    Give it to the runs of that stream (`Run(definition=...)`, `grid(definition=...)`) so
    they featurize named records as its trainer does; a version's own revision is in its
    lineage (`stream_definition`), for replaying what exactly that version learned.
    """
    return {d.name: d for d in load_definitions(kafka, topic)}.get(stream)


def backtest(
    source: KafkaSettings | SliceReader,
    piece: Slice,
    runs: Sequence[RunT],
    progress: Progress = lambda _: None,
) -> list[RunT]:
    """Every run learns the whole slice (`source`: where to read it).

    Test-then-train, or with each run's `label_delay` as `delayed.py` describes.
    """
    _drive(source, piece, lambda: runs, progress)
    for run in runs:
        run.finish()
    return list(runs)


def _drive(
    source: KafkaSettings | SliceReader,
    piece: Slice,
    feeders: Callable[[], Sequence[Run | TextRun | Scored]],
    progress: Progress,
    after_chunk: Callable[[int], None] = lambda _: None,
) -> None:
    """Read the slice once, feeding each chunk to the current feeders, in order."""
    done = 0
    chunks = source.read(piece) if isinstance(source, SliceReader) else read(source, piece)
    for records in chunks:
        for feeder in feeders():
            feeder.feed(records)
        done += len(records)
        after_chunk(done)
        progress(done)


def search(
    source: KafkaSettings | SliceReader,
    piece: Slice,
    runs: Sequence[Run],
    metric: str,
    lower_is_better: bool,
    eta: int = 3,
    progress: Progress = lambda _: None,
) -> list[Run]:
    """Successive halving in one pass: at each rung's end only the best 1/eta keep learning.

    Returns every run, the survivors first, ranked by `metric` at the end.
    """
    alive = list(runs)
    rungs = halving_points(len(piece), len(runs), eta)

    def halve(done: int) -> None:
        nonlocal alive
        while rungs and done >= rungs[0] and len(alive) > 1:
            alive = prune(alive, metric, lower_is_better, eta)
            rungs.pop(0)

    _drive(source, piece, lambda: alive, progress, halve)
    for run in alive:
        run.finish()
    stopped = sorted((r for r in runs if r not in alive), key=lambda r: -(r.stopped_at or 0))
    return prune(alive, metric, lower_is_better, 1) + stopped


def evaluate(
    source: KafkaSettings | SliceReader,
    piece: Slice,
    registry: RegistryClient,
    model: str,
    refs: Sequence[str],
    progress: Progress = lambda _: None,
) -> list[Scored]:
    """Score versions (numbers or aliases) predict-only, side by side, on the slice."""
    scored = [_scored(registry, model, ref) for ref in refs]
    _drive(source, piece, lambda: scored, progress)
    for version in scored:
        if version.total.events == 0 and version.other_streams:
            log.warning(
                "no record of the version's stream on the slice: nothing scored",
                extra={"version": version.name, "streams": sorted(version.streams)},
            )
    return scored


def _scored(registry: RegistryClient, model: str, ref: str) -> Scored:
    version, alias = (int(ref), "") if ref.isdigit() else (0, ref)
    meta, data = registry.download(model, version=version, alias=alias)
    try:
        config = TrainerConfig.model_validate_json(meta.lineage.config_json)
    except ValidationError as exc:
        raise InvalidArgument(f"{model} v{meta.version} has no usable trainer config") from exc
    session = make_session(data, "cpu")
    slots = {i.name: i.shape[1] for i in session.get_inputs()}.get(SPARSE_INPUT)

    def predict(x: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        feeds = {INPUT: x}
        if slots is not None:  # positional rows: every hashed id missing
            feeds[SPARSE_INPUT] = ids if ids is not None else np.zeros((len(x), slots), np.int64)
        return np.asarray(session.run([OUTPUT], feeds)[0])

    name = f"{model} v{meta.version}" + (f" ({alias})" if alias else "")
    streams = frozenset({meta.lineage.stream}) if meta.lineage.stream else frozenset()
    # Named records are featurized with the schema revision the version learned with.
    lineage = meta.lineage
    space = (
        FeatureSpace.from_definition(lineage.stream_definition)
        if lineage.HasField("stream_definition")
        else None
    )
    featurizer = Featurizer(space) if space is not None else None
    return Scored(
        name, config.task, config.model.features, predict, streams=streams, featurizer=featurizer
    )


def register(
    registry: RegistryClient, model: str, run: Run, piece: Slice, alias: str = "candidate"
) -> int:
    """Register a run's model as a version with the slice as lineage, and point `alias` at it."""
    slots = run.featurizer.space.sparse_slots if run.featurizer is not None else 0
    probe = Batch(  # to verify the export
        torch.zeros(4, run.config.model.features),
        torch.zeros(4),
        sparse=torch.ones(4, slots, dtype=torch.int64) if slots else None,
        named=run.featurizer is not None,
    )
    data = OnnxExporter(run.learner, probe).export()
    lineage = registry_pb2.Lineage(
        # The stream it learned, when it learned one (evaluate scores a version on it).
        stream=next(iter(run.streams)) if len(run.streams) == 1 else "",
        events_seen=run.learner.applied,
        metrics=run.learner.scores(),
        config_hash=run.config.hash(),
        config_json=run.config.to_json(),
        trainer_id=f"replay-search:{run.name}",
        stream_definition=run.definition,
        offsets=[
            registry_pb2.OffsetRange(topic=piece.topic, partition=p, first_offset=s, next_offset=e)
            for p, (s, e) in sorted(piece.ranges.items())
        ],
    )
    registry.create_model(model, exist_ok=True)
    version = registry.register(model, data, lineage=lineage).version
    registry.set_alias(model, alias, version)
    return version


def redrive(
    kafka: KafkaSettings,
    piece: Slice,
    target: str,
    rate: float,
    progress: Progress = lambda _: None,
) -> int:
    """Copy the slice (keys, values, headers) to `target`, at most `rate` records/s (0: any)."""
    producer = Producer(producer_config(kafka))
    started, done = time.perf_counter(), 0
    with delivering(producer) as report:
        for records in read(kafka, piece, chunk=500):
            for msg in records:
                produce(
                    producer,
                    target,
                    msg.value() or b"",
                    msg.key(),
                    headers=msg.headers() or [],
                    on_delivery=report,
                )
                done += 1
                if rate > 0 and (ahead := started + done / rate - time.perf_counter()) > 0:
                    time.sleep(ahead)
            progress(done)
    return report.delivered


def grid(
    base: TrainerConfig,
    axes: dict[str, list[Any]],
    samples: int = 0,
    seed: int = 0,
    streams: frozenset[str] = frozenset(),
    definition: stream_pb2.StreamDefinition | None = None,
    label_delay: LabelDelay | None = None,
) -> list[Run]:
    """Runs for every combination of `axes` (dotted paths), or `samples` random ones.

    Each run learns `streams` (empty: every record of the slice), featurizing named records
    with `definition`'s schema (`base` is reconciled with it first, so that the model's
    inputs it fills are not taken for values the axes set), its labels arriving after
    `label_delay` (None: at once).
    """
    base = reconcile(base, definition)
    names = list(axes)
    combos = list(itertools.product(*(axes[n] for n in names)))
    if samples and samples < len(combos):
        combos = random.Random(seed).sample(combos, samples)
    runs = []
    for combo in combos:
        changes = dict(zip(names, combo, strict=True))
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in changes.items())
        config = with_changes(base, changes)
        runs.append(
            Run(
                label or "base",
                config,
                streams=streams,
                definition=definition,
                label_delay=label_delay,
            )
        )
    return runs


def with_changes(base: TrainerConfig, changes: dict[str, Any]) -> TrainerConfig:
    """`base` with dotted fields replaced, e.g. {"optimizer.lr": 0.1}; ConfigError if invalid."""
    data = base.model_dump()
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"no config field {path!r}")
        node[leaf] = value
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config {changes} is invalid: {exc.errors()[0]['msg']}") from exc
