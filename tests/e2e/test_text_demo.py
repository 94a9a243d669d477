"""`streamlearn demo --text` on the test broker: the language model learns both domains.

The demo starts the system itself (its own model, stream and trainer settings as the
services' defaults), so the test gives it only the isolated state, topics and ports of
`system_env`: the variables that name a model or stream are left out, as a user's shell
would leave them.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from shared.settings import KafkaSettings
from streamlearn.cli.settings import CliSettings
from streamlearn.system import text_demo, text_view
from streamlearn.system.control import LocalSystem
from streamlearn.system.grammars import DOMAINS, PROMPTS
from tests.e2e.system import system_env

DEMO_NAMES = ("TRAINER_MODEL_NAME", "TRAINER_STREAM", "INFERENCE_MODEL_NAMES", "TRAINER_CONFIG")


def test_the_text_demo_learns_both_domains_and_serves_a_sample(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, _ = system_env(kafka, tmp_path)
    for name, value in env.items():
        if name not in DEMO_NAMES:
            monkeypatch.setenv(name, value)
    for name in DEMO_NAMES:
        monkeypatch.delenv(name, raising=False)
    settings = CliSettings()
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False)
    options = text_demo.Options(duration_s=20, rate=40, replay=0.0, keep_running=False)
    try:
        result = text_demo.run(console, settings, options)
    finally:
        LocalSystem(settings).down(stop_kafka=False)  # a failed run leaves nothing behind
    console.print(text_view.summary(result))
    shown = out.getvalue()

    assert result.delivered == 20 * 40
    assert result.served >= result.first_version, shown
    windows = result.snapshot.windows
    assert windows[-1] < 8.0 and windows[-1] < windows[0], windows
    scores = result.snapshot.trainer.metrics
    for domain in DOMAINS:
        assert f"domain_bits_per_byte.{domain}" in scores, dict(scores)
        assert f"held out: {domain}" in shown
    assert "backward_transfer" in scores  # the first domain was left behind
    samples = result.snapshot.samples
    assert set(samples) == set(PROMPTS) and all(s.text for s in samples.values()), samples
    assert "run again with --replay 1" in shown
    # The demo's model leaves no checkpoint that would make `demo --fresh` refuse.
    assert not (tmp_path / "trainer" / f"{text_view.MODEL}.ckpt").exists()
