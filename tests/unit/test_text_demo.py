"""`streamlearn demo --text`: its grammars, feed, dashboard and summary, and its refusals."""

from __future__ import annotations

import io
import json
import random
import string
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from services.inference.settings import InferenceSettings
from services.trainer.settings import TrainerSettings
from shared.errors import ConfigError, Conflict
from shared.net import free_port
from streamlearn.cli.failures import exit_code
from streamlearn.cli.main import _typer_app
from streamlearn.system import text_demo, text_view
from streamlearn.system.control import LocalSystem
from streamlearn.system.grammars import (
    ANIMALS,
    CODE,
    DOMAINS,
    MAX_TEXT_BYTES,
    PROMPTS,
    TwoDomains,
    text,
)
from streamlearn.system.text_demo import TextFeed
from streamlearn.system.text_view import (
    MODEL,
    FeedProgress,
    Sample,
    TextDemoResult,
    TextSnapshot,
)
from streamlearn.v1 import metrics_pb2

STREAM = "demo-text-0001"
CODE_MARKS = set("=;(){}0123456789")


def _texts(domain: str, n: int = 500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [text(domain, rng) for _ in range(n)]


# -- grammars -----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_seed_gives_the_same_texts_and_another_seed_others(domain: str) -> None:
    assert _texts(domain, seed=3) == _texts(domain, seed=3)
    assert _texts(domain, seed=3) != _texts(domain, seed=4)
    assert len(set(_texts(domain))) > 400  # varied, not a handful repeated


def test_two_domains_switch_once_at_the_given_text_and_repeat_per_seed() -> None:
    domains = TwoDomains(switch_after=30, seed=7)
    pairs = [next(it) for it in [domains.texts()] for _ in range(60)]
    assert [d for d, _ in pairs] == [ANIMALS] * 30 + [CODE] * 30
    again = domains.texts()
    assert [next(again) for _ in range(60)] == pairs


def test_the_domains_are_told_apart_by_their_bytes() -> None:
    animals, code = _texts(ANIMALS), _texts(CODE)
    allowed = set(string.ascii_lowercase + " .")
    assert all(set(t) <= allowed for t in animals)
    assert all(set(t) & CODE_MARKS for t in code)
    # Bytes the one never writes make up much of the other: what forgetting shows.
    code_bytes = "".join(code)
    assert sum(c in CODE_MARKS for c in code_bytes) / len(code_bytes) > 0.25


@pytest.mark.parametrize("domain", DOMAINS)
def test_texts_are_valid_utf8_printable_and_bounded(domain: str) -> None:
    for t in _texts(domain, n=2000, seed=11):
        data = t.encode("utf-8")
        assert data.decode("utf-8") == t and t.isprintable()
        assert 2 <= len(data) <= MAX_TEXT_BYTES <= text_demo.TEXT_MAX_BYTES
        assert t == t.strip() and "  " not in t


def test_an_unknown_domain_is_refused() -> None:
    with pytest.raises(KeyError):
        text("poetry", random.Random(0))


# -- the feed -----------------------------------------------------------------------------


class _Recorder:
    """Takes what a SampleProducer would send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, sample: dict[str, Any]) -> None:
        self.sent.append(sample)

    def flush(self) -> int:
        return len(self.sent)


def test_the_feed_sends_every_text_tagged_with_its_domain_and_marks_the_switch() -> None:
    recorder = _Recorder()
    feed = TextFeed(recorder, TwoDomains(switch_after=50), rate=5000, total=100)  # type: ignore[arg-type]
    feed.start()._thread.join(10)  # unpaced at this rate: done at once
    assert feed.stop() == 100
    domains = [s["attributes"]["domain"] for s in recorder.sent]
    assert domains == [ANIMALS] * 50 + [CODE] * 50
    assert {s["key"] for s in recorder.sent} == {f"text-{i}" for i in range(text_demo.KEYS)}
    assert feed.progress.sent == 100 and feed.progress.domain == CODE
    assert feed.progress.switched_at is not None and feed.progress.switched_at >= 0


def test_the_feed_keeps_its_pace() -> None:
    recorder = _Recorder()
    feed = TextFeed(recorder, TwoDomains(), rate=200, total=10_000)  # type: ignore[arg-type]
    feed.start()
    feed._stop.wait(0.5)
    sent = feed.stop()
    assert 60 <= sent <= 140, sent  # about 100 in half a second, not 10,000


# -- what the watch takes -----------------------------------------------------------------


def _report(stream: str, seconds: int, applied: int, **scores: float) -> metrics_pb2.TrainerMetrics:
    report = metrics_pb2.TrainerMetrics(
        model=MODEL, stream=stream, events_applied=applied, metrics=scores
    )
    report.time.FromSeconds(seconds)
    return report


def test_reports_of_other_streams_and_repeats_are_not_taken() -> None:
    snapshot = TextSnapshot()
    assert not text_view.take_report(snapshot, metrics_pb2.TrainerMetrics(), STREAM)
    assert not text_view.take_report(
        snapshot, _report("demo-text-old", 5, 10, window_bits_per_byte=1.0), STREAM
    )
    assert text_view.take_report(
        snapshot, _report(STREAM, 10, 100, window_bits_per_byte=6.0), STREAM
    )
    assert not text_view.take_report(
        snapshot, _report(STREAM, 10, 100, window_bits_per_byte=6.0), STREAM
    )
    assert text_view.take_report(
        snapshot, _report(STREAM, 12, 200, window_bits_per_byte=3.0), STREAM
    )
    assert snapshot.windows == [6.0, 3.0] and snapshot.first_window == 6.0
    assert snapshot.learned_per_s == pytest.approx(50.0)


def test_covered_counts_learned_and_skipped_texts_once() -> None:
    snapshot = TextSnapshot()
    report = _report(STREAM, 1, 900, held_out=32.0)
    report.events_skipped = 40  # the trainer counts the held-out texts among the skipped
    text_view.take_report(snapshot, report, STREAM)
    assert snapshot.covered == 940


def test_generated_bytes_are_shown_on_one_printable_line() -> None:
    assert text_view.printable(b"the fox\nran\t\xff\xfe ok") == "the fox·ran··· ok"
    assert text_view.printable("naïve".encode()) == "naïve"
    assert text_view.printable(b"\xc3") == "·"  # a character cut short by the byte limit


def test_the_trend_keeps_the_start_and_the_end_of_a_long_run() -> None:
    values = [8.0] + [2.0] * 500 + [0.5]
    line = text_view.trend(values, width=60)
    assert len(line) == 60 and line[0] == "█" and line[-1] == "▁"
    assert text_view.trend([]) == "" and len(text_view.trend([4.0, 2.0])) == 2


# -- dashboard and summary ----------------------------------------------------------------


def _result(replay: float = 0.0, served: int = 7, samples: bool = True) -> TextDemoResult:
    result = TextDemoResult(60, 50, STREAM, text_demo.demo_config(replay), "a fresh model")
    result.first_version, result.delivered, result.elapsed_s = 3, 3000, 60.2
    result.progress = FeedProgress(3000, CODE, 30.1)
    snapshot = result.snapshot
    text_view.take_report(snapshot, _report(STREAM, 1, 100, window_bits_per_byte=7.6), STREAM)
    scores = {
        "window_bits_per_byte": 1.31,
        "bits_per_byte": 1.9,
        "held_out": 32.0,
        f"domain_bits_per_byte.{ANIMALS}": 9.62,
        f"forgetting.{ANIMALS}": 8.61,
        f"domain_bits_per_byte.{CODE}": 1.27,
        f"forgetting.{CODE}": 0.0,
        "backward_transfer": -8.6,
    }
    last = _report(STREAM, 60, 2968, **scores)
    last.events_skipped = 32
    text_view.take_report(snapshot, last, STREAM)
    snapshot.latest_version, snapshot.served_version = served, served
    if samples:
        snapshot.samples = {
            ANIMALS: Sample(served, PROMPTS[ANIMALS], "fox [runs] / a"),
            CODE: Sample(served, PROMPTS[CODE], "a * 7;"),
        }
    return result


def _shown(table: Table) -> str:
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False).print(table)
    return out.getvalue()


def test_the_dashboard_shows_progress_scores_per_domain_and_the_samples() -> None:
    shown = _shown(text_view.dashboard(_result(), 42.0))
    assert "42s of 60s" in shown and "switches at 30s" in shown
    assert "code (switched at 30.1s)" in shown
    assert "3,000 texts" in shown
    assert "2,968 events, 32 held out, 0 skipped" in shown
    assert "window 1.31 (first report 7.60), whole run 1.90" in shown
    assert "held out: animals" in shown and "9.62 bits per byte now, best 1.01" in shown
    assert "forgetting +8.61" in shown and "-8.60 bits per byte" in shown
    assert "served v7" in shown
    assert "the small fox [runs] / a" in shown  # markup in generated text is shown as is
    assert "let x = a * 7;" in shown and "(v7)" in shown


def test_the_dashboard_before_anything_is_reported_or_served() -> None:
    result = TextDemoResult(60, 50, STREAM, text_demo.demo_config(0), "a fresh model")
    result.progress = FeedProgress(10, ANIMALS)
    shown = _shown(text_view.dashboard(result, 1.0))
    assert "animals (switches at 30s)" in shown
    assert "waiting for the trainer's first report" in shown
    assert "none of this run yet" in shown and "waiting for a version of this run" in shown


def test_the_summary_compares_start_and_end_and_suggests_the_other_run() -> None:
    shown = _shown(text_view.summary(_result()))
    assert "3,000 in 60s (50/s)" in shown
    assert "7.60 at the first report -> 1.31 at the end" in shown
    assert "switched to code at 30.1s" in shown
    assert "forgetting +8.61" in shown and "forgetting +0.00" in shown
    assert "-8.60 bits per byte (the domain left behind: forgotten)" in shown
    assert "v7 served" in shown and "the small fox [runs] / a" in shown
    assert "replay_ratio 0" in shown and "run again with --replay 1 to compare" in shown
    replayed = _shown(text_view.summary(_result(replay=1.0)))
    assert "replay_ratio 1 here: run again without --replay" in replayed


def test_the_summary_says_when_no_version_of_the_run_was_served() -> None:
    result = _result(served=2, samples=False)  # a version of an earlier run only
    assert result.served == 0
    shown = _shown(text_view.summary(result))
    assert "no version of this run was ever served" in shown and "sample" not in shown


# -- settings and refusals ----------------------------------------------------------------


def test_the_defaults_give_the_trainer_the_demo_model_and_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in text_demo.system_defaults(STREAM, text_demo.demo_config(1.0)).items():
        monkeypatch.setenv(name, value)
    trainer = TrainerSettings()
    assert (trainer.model_name, trainer.stream) == (MODEL, STREAM)
    assert trainer.text.replay_ratio == 1.0 and trainer.text.holdout_every == 20
    assert trainer.torch_threads == 1
    assert InferenceSettings().model_names == [MODEL]
    assert json.loads(text_demo.system_defaults(STREAM, trainer.text)["TRAINER_TEXT"])


def test_an_environment_that_names_another_model_or_stream_is_refused() -> None:
    text_demo.refuse_env_conflicts(TrainerSettings(), InferenceSettings())
    for trainer in (TrainerSettings(model_name="clicks"), TrainerSettings(stream="clicks")):
        with pytest.raises(ConfigError, match="TRAINER_MODEL_NAME / TRAINER_STREAM"):
            text_demo.refuse_env_conflicts(trainer, InferenceSettings())
    with pytest.raises(ConfigError, match="INFERENCE_MODEL_NAMES"):
        text_demo.refuse_env_conflicts(TrainerSettings(), InferenceSettings(model_names=["demo"]))
    text_demo.refuse_env_conflicts(TrainerSettings(), InferenceSettings(model_names=[MODEL]))


def test_a_running_system_that_does_not_answer_is_refused() -> None:
    models = text_demo.served_models(f"127.0.0.1:{free_port()}")
    assert models == {}
    with pytest.raises(Conflict, match="nothing that answers"):
        text_demo.refuse_unless_serving(models)
    text_demo.refuse_unless_serving({MODEL: 0, "demo": 4})


def test_demo_text_refuses_a_running_tabular_system_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touched: list[str] = []
    monkeypatch.setattr(LocalSystem, "supervisor_pid", lambda _self: 4242)
    monkeypatch.setattr(LocalSystem, "up", lambda *_a, **_k: touched.append("up"))
    monkeypatch.setattr(LocalSystem, "down", lambda *_a, **_k: touched.append("down"))
    monkeypatch.setattr(text_demo, "served_models", lambda _address: {"demo": 12})
    env = {"STREAMLEARN_STATE_DIR": str(tmp_path / "state")}
    result = CliRunner().invoke(_typer_app, ["demo", "--text"], env=env)
    assert isinstance(result.exception, Conflict), result.output
    assert exit_code(result.exception) == 1
    line = str(result.exception)
    assert "serves demo)" in line and "`streamlearn down` first" in line and "\n" not in line
    assert touched == []


@pytest.mark.parametrize(
    "args",
    [["demo", "--replay", "1"], ["demo", "--text", "--feedback"], ["demo", "--text", "--fresh"]],
)
def test_options_that_do_not_go_together_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setattr(LocalSystem, "up", lambda *_a, **_k: pytest.fail("started"))
    env = {"STREAMLEARN_STATE_DIR": str(tmp_path / "state")}
    result = CliRunner().invoke(_typer_app, args, env=env)
    assert result.exit_code == 2, result.output
