"""`streamlearn demo --fresh`: refused where it could destroy what is not the demo's."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.errors import ConfigError, Conflict
from shared.settings import TopicSettings
from streamlearn.cli.main import _typer_app
from streamlearn.system import demo_state
from streamlearn.system.control import LocalSystem

TOPICS = TopicSettings()


def _checkpoint(path: Path, *topics: str) -> Path:
    from services.trainer import checkpoint

    keys = {f"{t}:0": 5 for t in topics}
    checkpoint.save(path, {"positions": {"next": keys, "first": dict.fromkeys(keys, 0)}})
    return path


def test_an_external_cluster_is_refused_unless_confirmed(tmp_path: Path) -> None:
    mine = tmp_path / "trainer" / "demo.ckpt"
    with pytest.raises(ConfigError, match="--yes"):
        demo_state.refuse_unsafe(TOPICS, mine, external=True, confirmed=False)
    demo_state.refuse_unsafe(TOPICS, mine, external=True, confirmed=True)
    demo_state.refuse_unsafe(TOPICS, mine, external=False, confirmed=False)


def test_other_models_checkpoints_into_the_topics_are_named_and_refused(tmp_path: Path) -> None:
    trainer = tmp_path / "trainer"
    mine = _checkpoint(trainer / "demo.ckpt", TOPICS.train)
    other = _checkpoint(trainer / "clicks.ckpt", TOPICS.train)
    _checkpoint(trainer / "elsewhere.ckpt", "another.topic")  # not affected
    broken = trainer / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(Conflict) as refused:
        demo_state.refuse_unsafe(TOPICS, mine, external=False, confirmed=True)
    assert str(other) in str(refused.value) and str(broken) in str(refused.value)
    assert "elsewhere.ckpt" not in str(refused.value)
    other.unlink()
    broken.unlink()
    demo_state.refuse_unsafe(TOPICS, mine, external=False, confirmed=True)


def test_the_announcement_names_the_bootstrap_and_every_topic(tmp_path: Path) -> None:
    line = demo_state.announce("kafka.example:9092", TOPICS, tmp_path / "demo.ckpt")
    assert "kafka.example:9092" in line
    for name in (TOPICS.raw, TOPICS.train, TOPICS.dlq, TOPICS.metrics):
        assert name in line


def test_demo_fresh_on_an_external_cluster_deletes_nothing_without_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touched: list[str] = []
    monkeypatch.setattr(demo_state, "reset", lambda *_a, **_k: touched.append("reset"))
    monkeypatch.setattr(LocalSystem, "down", lambda *_a, **_k: touched.append("down"))
    monkeypatch.setattr(LocalSystem, "up", lambda *_a, **_k: touched.append("up"))
    env = {
        "STREAMLEARN_STATE_DIR": str(tmp_path / "state"),
        "STREAMLEARN_KAFKA_BOOTSTRAP": "kafka.example:9092",
    }
    result = CliRunner().invoke(_typer_app, ["demo", "--fresh"], env=env)
    assert isinstance(result.exception, ConfigError)
    assert "--yes" in str(result.exception)
    assert touched == []
