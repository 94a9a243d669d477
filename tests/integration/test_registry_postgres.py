"""The registry's core suite again, on PostgreSQL instead of SQLite (same schema, same rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.registry.artifacts import LocalArtifactStore
from services.registry.registry import Registry
from services.registry.store import Store
from tests.unit.test_registry_core import *  # noqa: F403 - re-run every test of the core suite
from tests.unit.test_registry_core import Make


@pytest.fixture
def make(postgres_url: str) -> Make:
    def on_postgres(root: Path) -> Registry:
        store = Store(postgres_url)
        assert store.dialect == "postgres"
        return Registry(store, LocalArtifactStore(root / "artifacts"))

    return on_postgres


def test_the_registry_service_runs_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    from services.registry.settings import RegistrySettings

    settings = RegistrySettings(state_dir=tmp_path, db_url=postgres_url)
    first = Registry(Store(settings.database), LocalArtifactStore(settings.resolved_artifact_dir))
    first.create_model("pg")
    again = Registry(Store(settings.database), LocalArtifactStore(settings.resolved_artifact_dir))
    assert again.get_model("pg").name == "pg"


def test_two_replicas_on_one_database_cannot_both_win_a_compare_and_set(
    postgres_url: str, tmp_path: Path
) -> None:
    import hashlib
    import threading

    from shared.errors import Conflict

    replicas = [Registry(Store(postgres_url), LocalArtifactStore(tmp_path / "a")) for _ in range(2)]
    replicas[0].create_model("m")
    for data in (b"1", b"2", b"3"):
        replicas[0].register_version("m", [data], hashlib.sha256(data).hexdigest(), len(data))
    replicas[0].set_alias("m", "production", 1)
    for _ in range(10):  # repeat: the interleaving differs from run to run
        current = replicas[0].get_model("m").aliases["production"]
        targets = [v for v in (1, 2, 3) if v != current]
        barrier, outcomes = threading.Barrier(2), []

        def move(
            replica: Registry,
            target: int,
            expected: int = current,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                replica.set_alias("m", "production", target, expected=expected)
                outcomes.append("won")
            except Conflict:
                outcomes.append("lost")

        threads = [
            threading.Thread(target=move, args=(r, t))
            for r, t in zip(replicas, targets, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["lost", "won"]
