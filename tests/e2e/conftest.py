"""The e2e suite runs services the way the integration suite does, and the whole system."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import KafkaSettings, TopicSettings
from streamlearn.cli.settings import CliSettings
from streamlearn.system.control import LocalSystem
from tests.e2e.system import system_env
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with integration
    registry_client,
    registry_service,
    registry_settings,
)


@pytest.fixture
def system_stream() -> str:
    """The stream (and model) the system's trainer learns; a test module may override it."""
    return "e2e"


@pytest.fixture
def system_overrides() -> dict[str, str]:
    """Environment set on top of `system_env` for the services; a test module may override it."""
    return {}


@pytest.fixture
def system(
    kafka: KafkaSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    system_stream: str,
    system_overrides: dict[str, str],
) -> Iterator[tuple[LocalSystem, TopicSettings]]:
    """`streamlearn up` on the test broker; `down` (broker left running) afterwards."""
    env, topics = system_env(kafka, tmp_path, system_stream)
    for name, value in (env | system_overrides).items():
        monkeypatch.setenv(name, value)
    local = LocalSystem(CliSettings())
    try:
        local.up(timeout_s=180)
        yield local, topics
    finally:
        local.down()
