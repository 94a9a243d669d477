"""`streamlearn replay` over real topic slices: determinism, drift, search, evaluate, redrive,
label delays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from services.joiner.outputs import LABEL_DELAY_MS
from services.replay import replay
from services.replay.delay import LabelDelay
from services.replay.runs import Run
from services.replay.slices import SliceSpec, resolve
from services.trainer import checkpoint
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from shared.clients.registry import RegistryClient
from shared.errors import InvalidArgument, NotFound
from shared.settings import KafkaSettings
from streamlearn.client.datasets import Synthetic
from streamlearn.client.producer import SampleProducer
from tests.helpers import plain, read_to_end, wait_until
from tests.integration.conftest import Running
from tests.integration.test_trainer_crash import progress, running, trainer_env

FEATURES = 6
CLI = str(Path(sys.executable).parent / "streamlearn")
DRIFT_AT = 6_000


def config(lr: float = 0.01, name: str = "sgd", window: int = 200) -> TrainerConfig:
    return TrainerConfig(
        model=ModelSpec(kind="logistic", features=FEATURES),
        optimizer=OptimizerSpec(name=name, lr=lr),
        metrics_window=window,
    )


@pytest.fixture
def drift_topic(kafka: KafkaSettings, make_topic: Callable[..., str]) -> str:
    topic = make_topic(1, "drift")
    dataset = Synthetic("drift", features=FEATURES, drift_every=DRIFT_AT, seed=4)
    with SampleProducer(kafka=kafka, topic=topic, stream="drift") as producer:
        for x, y in dataset.chunks(2 * DRIFT_AT, chunk=500):
            for i in range(len(x)):
                producer.send({"features": x[i], "label": int(y[i]), "key": "k", "event_id": ""})
    return topic


def test_the_same_slice_and_config_give_the_same_metrics_bit_for_bit(
    kafka: KafkaSettings, drift_topic: str
) -> None:
    piece = resolve(kafka, SliceSpec(drift_topic, from_offset=1_000, to_offset=5_000))
    assert len(piece) == 4_000
    first = replay.backtest(kafka, piece, [Run("a", config(), every=500)])[0].report()
    second = replay.backtest(kafka, piece, [Run("a", config(), every=500)])[0].report()
    assert first == second
    assert first["applied"] == 4_000 and len(first["curve"]) == 8


def test_a_backtest_shows_the_drift_and_the_recovery(
    kafka: KafkaSettings, drift_topic: str
) -> None:
    piece = resolve(kafka, SliceSpec(drift_topic))
    [run] = replay.backtest(kafka, piece, [Run("slow", config(lr=0.005), every=200)])
    loss = {int(p["events"]): p["loss"] for p in run.curve}
    before, just_after, end = loss[DRIFT_AT], loss[DRIFT_AT + 400], loss[2 * DRIFT_AT]
    assert just_after > 2 * before  # the learned concept stopped holding
    assert end < just_after / 2  # and the learner caught up with the new one


def test_replaying_with_the_live_trainers_config_reproduces_its_metrics(
    kafka: KafkaSettings, drift_topic: str, tmp_path: Path, registry_service: Running
) -> None:
    live = config(lr=0.02, name="adam")
    env = trainer_env(kafka, drift_topic, tmp_path, registry_service.address)
    env["TRAINER_CONFIG"] = live.model_dump_json()
    env["TRAINER_STREAM"] = "drift"
    path = tmp_path / "trainer" / "demo.ckpt"
    log = tmp_path / "trainer.log"
    with running(env, log) as trainer:
        wait_until(lambda: progress(path) >= 2 * DRIFT_AT or trainer.poll() is not None, 180)
        trainer.terminate()
        assert trainer.wait(60) == 0, log.read_text()[-2000:]
    saved = checkpoint.load(path)
    assert saved is not None
    piece = resolve(kafka, SliceSpec(drift_topic))
    [run] = replay.backtest(kafka, piece, [Run("replayed", live, streams=frozenset({"drift"}))])
    assert plain(run.learner.metrics.state()) == plain(saved["learner"]["metrics"])
    assert run.learner.metrics.snapshot()["loss"] > 0


def test_search_halves_bad_configs_early_and_registers_the_winner(
    kafka: KafkaSettings, drift_topic: str, registry_client: RegistryClient
) -> None:
    piece = resolve(kafka, SliceSpec(drift_topic, to_offset=DRIFT_AT))
    runs = replay.grid(
        config(), {"optimizer.lr": [1e-5, 1e-4, 0.01], "optimizer.name": ["sgd", "adam", "adagrad"]}
    )
    assert len(runs) == 9
    ranked = replay.search(kafka, piece, runs, "loss", lower_is_better=True, eta=3)
    finished = [r for r in ranked if r.stopped_at is None]
    assert len(finished) == 1 and finished[0] is ranked[0]
    assert all(r.stopped_at and r.stopped_at < DRIFT_AT for r in ranked[1:])
    assert ranked[0].config.optimizer.lr != 1e-5  # the hopeless ones went first
    version = replay.register(registry_client, "searched", ranked[0], piece)
    assert registry_client.get_version("searched", alias="candidate").version == version
    [scored] = replay.evaluate(kafka, piece, registry_client, "searched", ["candidate"])
    assert scored.total.events == DRIFT_AT and scored.report()["final"]["accuracy"] > 0.7


def test_redrive_copies_the_slice_with_keys_and_headers(
    kafka: KafkaSettings, drift_topic: str, make_topic: Callable[..., str]
) -> None:
    target = make_topic(1, "redriven")
    piece = resolve(kafka, SliceSpec(drift_topic, from_offset=100, to_offset=600))
    assert replay.redrive(kafka, piece, target, rate=0) == 500
    copied = read_to_end(kafka, target)
    original = read_to_end(kafka, drift_topic)[100:600]
    assert [m.value() for m in copied] == [m.value() for m in original]
    assert [m.headers() for m in copied] == [m.headers() for m in original]


@pytest.mark.parametrize(
    ("spec", "error", "text"),
    [
        (SliceSpec("no.such.topic"), NotFound, "no topic"),
        (SliceSpec("{topic}", from_offset=10**9), InvalidArgument, "empty"),
        (SliceSpec("{topic}", from_time_ms=4_000_000_000_000), InvalidArgument, "past its end"),
        (SliceSpec("{topic}", partitions=(7,)), InvalidArgument, "partitions"),
    ],
)
def test_bad_slices_end_with_one_clear_error(
    kafka: KafkaSettings, drift_topic: str, spec: SliceSpec, error: type[Exception], text: str
) -> None:
    spec = SliceSpec(**{**spec.__dict__, "topic": spec.topic.format(topic=drift_topic)})
    with pytest.raises(error, match=text):
        resolve(kafka, spec)


def test_the_cli_reports_bad_requests_in_one_line_without_a_traceback(
    kafka: KafkaSettings, drift_topic: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"optimizer": {"lr": -1}}))
    good = tmp_path / "good.json"
    good.write_text(config().model_dump_json())
    env = os.environ | {"STREAMLEARN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers}
    cases = [
        ["backtest", "--topic", "no.such.topic", "--config", str(good)],
        ["backtest", "--topic", drift_topic, "--config", str(broken)],
        ["backtest", "--topic", drift_topic, "--config", str(good), "--from-time", "2999-01-01"],
    ]
    for args in cases:
        done = subprocess.run(
            [CLI, "replay", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode in (1, 2), done.stderr
        assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr

    report, png = tmp_path / "report.json", tmp_path / "curves.png"
    done = subprocess.run(
        [CLI, "replay", "backtest", "--topic", drift_topic,
         "--config", str(good), "--to-offset", "3000", "--report", str(report), "--plot", str(png)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["results"][0]["applied"] == 3000
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(json.loads(report.read_text())["results"][0]["final"]["loss"])


TIMED = 3_000
T0_S = 1_700_000_000.0  # unix seconds: events 10 ms apart, 30 s in all


@pytest.fixture
def timed_topic(kafka: KafkaSettings, make_topic: Callable[..., str]) -> str:
    """Two partitions of events whose label is their first feature's sign; event times set,
    and a recorded label delay of an hour on every other one (as the joiner writes it)."""
    topic = make_topic(2, "timed")
    rng = np.random.default_rng(11)
    with SampleProducer(kafka=kafka, topic=topic, stream="timed") as producer:
        for i in range(TIMED):
            label = int(rng.integers(0, 2))
            producer.send({
                "features": [2 * label - 1 + rng.normal(0, 0.3), rng.normal(), 1.0],
                "label": label,
                "key": f"k{i % 5}",
                "event_time": T0_S + i / 100,
                "attributes": {LABEL_DELAY_MS: "3600000" if i % 2 else "0"},
            })  # fmt: skip
    return topic


def test_label_delays_on_a_real_slice(kafka: KafkaSettings, timed_topic: str) -> None:
    piece = resolve(kafka, SliceSpec(timed_topic))
    assert len(piece) == TIMED and len(piece.ranges) == 2
    small = TrainerConfig(
        model=ModelSpec(kind="logistic", features=3), optimizer=OptimizerSpec(lr=0.1)
    )
    delays = [None, LabelDelay(0), LabelDelay(2_000), LabelDelay(recorded=True)]
    runs = [Run(str(d), small, every=500, label_delay=d) for d in delays]
    today, zero, fixed, recorded = replay.backtest(kafka, piece, runs)
    for run in runs:
        assert run.learner.applied == TIMED
    # no delay: the merged partitions learned exactly as test-then-train learns them
    assert plain(today.learner.metrics.state()) == plain(zero.learner.metrics.state())
    assert zero.report()["final"]["loss"] == pytest.approx(today.report()["final"]["loss"], 1e-5)
    # 2 s of labels still on their way (200 events): served predictions are a little worse
    served = {r.name: r.report()["final"] for r in runs}
    assert fixed.report()["label_delay"] == "2s"
    assert served[str(delays[0])]["loss"] < served[str(delays[2])]["loss"]
    # half the labels an hour late (after the slice): worse still, but learning from the rest
    assert served[str(delays[2])]["loss"] < served[str(delays[3])]["loss"] < np.log(2)
    assert recorded.report()["immediate"]["accuracy"] > 0.9


def test_the_cli_backtests_and_searches_with_a_label_delay(
    kafka: KafkaSettings, timed_topic: str, tmp_path: Path
) -> None:
    good = tmp_path / "good.json"
    good.write_text(
        TrainerConfig(
            model=ModelSpec(kind="logistic", features=3), optimizer=OptimizerSpec(lr=0.1)
        ).model_dump_json()
    )
    env = os.environ | {"STREAMLEARN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers}
    report = tmp_path / "report.json"
    done = subprocess.run(
        [CLI, "replay", "backtest", "--topic", timed_topic, "--config", str(good),
         "--label-delay", "1h", "--report", str(report)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "labels delayed (1h)" in done.stdout and "good (immediate)" in done.stdout
    document = json.loads(report.read_text())
    [result] = document["results"]
    assert document["label_delay"] == result["label_delay"] == "1h"
    # every label arrives after the slice: each event was served by the fresh model
    assert result["final"]["loss"] == pytest.approx(np.log(2))
    assert result["final"]["events"] == TIMED and result["applied"] == TIMED
    assert result["immediate"]["accuracy"] > 0.9

    done = subprocess.run(
        [CLI, "replay", "search", "--topic", timed_topic, "--config", str(good),
         "--axis", "optimizer.lr=0.0001,0.1,1.0", "--label-delay", "250ms",
         "--report", str(report)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(report.read_text())["results"]
    assert [r["label_delay"] for r in results] == ["250ms"] * 3
    assert results[0]["config"]["optimizer"]["lr"] != 0.0001  # ranked by served loss
    assert results[0]["final"]["loss"] < results[-1]["final"]["loss"]
