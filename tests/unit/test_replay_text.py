"""Backtests of language-model configs: two domains, forgetting with and without replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.replay.report import plot
from services.replay.text_runs import TextRun
from services.trainer.config import DistillSpec, TrainerConfig
from services.trainer.text.config import TextModelConfig
from services.trainer.text.distill import OnnxTeacher
from services.trainer.text.export import TextOnnxExporter
from services.trainer.text.learner import TextLearner
from shared.errors import ConfigError
from shared.fakes import FakeMessage
from streamlearn.cli.replay import _any_config, _configs
from streamlearn.v1 import sample_pb2

BASE = TextModelConfig(
    layers=1, width=32, heads=2, context=16, seed=1, holdout_every=10, domain_window=50
)


def records() -> list[FakeMessage]:
    out = []
    for i in range(350):
        domain, text = ("abc", "abcabcabcabc") if i < 150 else ("xyz", "xyzzyxxyzzyx")
        sample = sample_pb2.Sample(stream="lm", text=text, attributes={"domain": domain})
        out.append(FakeMessage("t", 0, i, b"k", sample.SerializeToString()))
    out.append(
        FakeMessage("t", 0, 350, b"k", sample_pb2.Sample(stream="other").SerializeToString())
    )
    return out


def test_a_backtest_compares_forgetting_with_and_without_replay(tmp_path: Path) -> None:
    runs = [
        TextRun("plain", BASE, every=100, streams=frozenset({"lm"})),
        TextRun("replay", BASE.model_copy(update={"replay_ratio": 1.0}), 100, frozenset({"lm"})),
    ]
    data = records()
    for run in runs:
        for start in range(0, len(data), 64):  # chunks as the slice reader hands them
            run.feed(data[start : start + 64])  # type: ignore[arg-type]
        run.finish()
    plain, replay = (run.report()["final"] for run in runs)
    assert plain["events"] == replay["events"] == 350  # the other stream's record skipped
    assert plain["forgetting.abc"] > 1.0 > 0.1 > replay["forgetting.abc"]
    assert [p["events"] for p in runs[0].curve] == [100, 200, 300, 350]
    assert "domain_bits_per_byte.xyz" in runs[0].curve[-1]
    path = tmp_path / "forgetting.png"
    plot(path, {r.name: r.curve for r in runs}, "domain_bits_per_byte", "two domains")
    assert path.stat().st_size > 10_000  # four lines: two runs x two domains


def test_the_cli_reads_language_model_configs_beside_trainer_configs(tmp_path: Path) -> None:
    text = tmp_path / "lm.json"
    text.write_text(BASE.model_dump_json())
    tabular = tmp_path / "tab.json"
    tabular.write_text(TrainerConfig().model_dump_json())
    assert isinstance(_any_config(text), TextModelConfig)
    assert isinstance(_any_config(tabular), TrainerConfig)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"layers": "many"}))
    with pytest.raises(ConfigError, match="not a usable trainer config"):
        _any_config(broken)
    runs = _configs([text, tabular], every=100, streams=["lm"])
    assert [type(r).__name__ for r in runs] == ["TextRun", "Run"]
    distilled = tmp_path / "student.json"
    distilled.write_text(
        BASE.model_copy(update={"distill": DistillSpec(teacher="t")}).model_dump_json()
    )
    with pytest.raises(ConfigError, match="replays with its teacher"):
        _configs([distilled])  # no registry to load it from
    teacher = TextLearner(BASE)
    teacher.learn([b"abcabcabc"] * 30)
    loaded = OnnxTeacher(TextOnnxExporter(teacher).export(), "t:v1")
    asked: list[DistillSpec] = []

    def teacher_of(spec: DistillSpec) -> OnnxTeacher:
        asked.append(spec)
        return loaded

    [run] = _configs([distilled], every=100, teacher_of=teacher_of)
    assert asked == [DistillSpec(teacher="t")] and run.learner.teacher is loaded
    run.feed(records()[:120])  # type: ignore[arg-type]
    assert run.learner.events == 108  # (every tenth held out) learned with soft targets
