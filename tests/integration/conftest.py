"""Fixtures of the integration suite: services running against the real broker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.registry.app import build, run
from services.registry.settings import RegistrySettings
from shared.clients.registry import RegistryClient
from shared.settings import KafkaSettings, TopicSettings


class Running:
    """A service app (built by `build`, served by `run`) in a background thread."""

    def __init__(
        self,
        settings: Any,
        build: Callable[[Any], Any] = build,
        run: Callable[[Any, threading.Event], None] = run,
    ) -> None:
        self.app = build(settings)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run, args=(self.app, self.stop), daemon=True)
        self.thread.start()
        self.address = f"127.0.0.1:{self.app.port}"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def registry_settings(
    tmp_path: Path, kafka: KafkaSettings, make_topic: Callable[..., str]
) -> RegistrySettings:
    return RegistrySettings(
        state_dir=tmp_path,
        grpc_port=0,
        kafka=kafka,
        topics=TopicSettings(model_events=make_topic(1, "events")),
    )


@pytest.fixture
def registry_service(registry_settings: RegistrySettings) -> Iterator[Running]:
    running = Running(registry_settings)
    yield running
    running.close()


@pytest.fixture
def registry_client(registry_service: Running) -> Iterator[RegistryClient]:
    with RegistryClient(registry_service.address) as c:
        yield c
