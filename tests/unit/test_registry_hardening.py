"""Registry hardening: rollback history, finite live metrics, capped uploads, durable renames."""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.registry.artifacts import LocalArtifactStore
from services.registry.model import Lineage, VersionRef
from services.registry.policy import Policy
from services.registry.registry import Registry
from services.registry.settings import RegistrySettings
from services.registry.store import Store
from shared.errors import (
    Conflict,
    IntegrityError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)


def make(root: Path, **kw: Any) -> Registry:
    registry = Registry(Store(root / "db.sqlite"), LocalArtifactStore(root / "artifacts"), **kw)
    registry.create_model("m")
    return registry


def register(reg: Registry, data: bytes, **kw: Any) -> int:
    return reg.register_version(
        "m", [data], hashlib.sha256(data).hexdigest(), len(data), **kw
    ).version


def served(reg: Registry) -> int:
    return reg.get_version(VersionRef("m", alias="production")).version


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = make(tmp_path)
    for i in range(1, 6):
        register(registry, f"v{i}".encode())
    return registry


# --- 3: rollback walks the alias history ------------------------------------------------------


def test_repeated_rollbacks_walk_the_history_back_and_then_stop(reg: Registry) -> None:
    for version in (1, 2, 3):
        reg.set_alias("m", "production", version)
    assert reg.rollback("m").to_version == 2
    assert served(reg) == 2
    second = reg.rollback("m")
    assert (second.from_version, second.to_version) == (2, 1)  # not back to 3, rolled back from
    with pytest.raises(Conflict, match="nothing to roll back to"):
        reg.rollback("m")
    assert served(reg) == 1


def test_rollback_after_a_new_deploy_returns_to_the_version_before_it(reg: Registry) -> None:
    for version in (1, 2, 3):
        reg.set_alias("m", "production", version)
    reg.rollback("m")  # 3 -> 2
    reg.set_alias("m", "production", 4)
    assert reg.rollback("m").to_version == 2
    assert reg.rollback("m").to_version == 1


def test_rollback_skips_every_version_that_was_rolled_back_from(reg: Registry) -> None:
    for version in (1, 2, 1, 3):
        reg.set_alias("m", "production", version)
    assert reg.rollback("m").to_version == 1  # 3 -> 1
    assert reg.rollback("m").to_version == 2  # 1 was rolled back from: every 1 is skipped
    with pytest.raises(Conflict):
        reg.rollback("m")


def test_rollback_without_history_is_a_clear_precondition_failure(reg: Registry) -> None:
    with pytest.raises(Conflict, match="nothing to roll back to"):
        reg.rollback("m")  # no alias at all
    reg.set_alias("m", "production", 1)
    with pytest.raises(Conflict, match="nothing to roll back to"):
        reg.rollback("m")
    reg.set_alias("m", "candidate", 2)
    reg.promote("m")
    assert reg.rollback("m").to_version == 1  # promotions are history too


# --- 4: live metrics must be finite -----------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_live_metric_is_rejected_and_rolls_nothing_back(
    tmp_path: Path, value: float
) -> None:
    reg = make(tmp_path, policy=Policy("logloss"))
    for loss in (0.5, 0.3):
        version = register(reg, f"{loss}".encode(), lineage=Lineage(metrics={"logloss": loss}))
        reg.set_alias("m", "candidate", version)
    assert served(reg) == 2
    with pytest.raises(InvalidArgument, match="finite"):
        reg.report_live_metric("m", 2, value)
    assert served(reg) == 2


# --- 5: capped, streamed uploads --------------------------------------------------------------


def counting(chunks: list[bytes], pulled: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        pulled.append(len(chunk))
        yield chunk


def leftovers(root: Path) -> list[Path]:
    return [p for p in (root / "artifacts").rglob("*") if p.is_file()]


def test_an_upload_over_the_cap_stops_at_the_first_chunk_past_it(tmp_path: Path) -> None:
    reg = make(tmp_path, max_artifact_bytes=25)
    data = b"x" * 1000
    pulled: list[int] = []
    chunks = [data[i : i + 10] for i in range(0, len(data), 10)]
    with pytest.raises(ResourceExhausted, match="25-byte limit"):
        # The header understates the size: only the running total can catch it.
        reg.register_version("m", counting(chunks, pulled), hashlib.sha256(data).hexdigest(), 20)
    assert len(pulled) == 3  # 30 bytes > 25: not one chunk more was read
    assert leftovers(tmp_path) == [] and reg.get_model("m").latest_version == 0


def test_a_declared_size_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    reg = make(tmp_path, max_artifact_bytes=25)
    pulled: list[int] = []
    with pytest.raises(ResourceExhausted, match="declared 26 bytes"):
        reg.register_version("m", counting([b"x"], pulled), "0" * 64, 26)
    assert pulled == []
    assert register(reg, b"y" * 25) == 1  # at the cap is fine


def test_more_bytes_than_declared_stop_the_upload_early(tmp_path: Path) -> None:
    reg = make(tmp_path)
    data = b"z" * 100
    pulled: list[int] = []
    chunks = [data[i : i + 10] for i in range(0, len(data), 10)]
    with pytest.raises(IntegrityError, match="more than the 15 bytes declared"):
        reg.register_version("m", counting(chunks, pulled), hashlib.sha256(data).hexdigest(), 15)
    assert len(pulled) == 2 and leftovers(tmp_path) == []


def test_a_negative_declared_size_is_invalid(tmp_path: Path) -> None:
    reg = make(tmp_path)
    with pytest.raises(InvalidArgument, match="size"):
        reg.register_version("m", [b""], hashlib.sha256(b"").hexdigest(), -1)


def test_the_cap_is_a_registry_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RegistrySettings().max_artifact_bytes == 512 * 1024 * 1024
    monkeypatch.setenv("REGISTRY_MAX_ARTIFACT_BYTES", "1234")
    assert RegistrySettings().max_artifact_bytes == 1234


# --- 7: durable renames, deletions after commit -----------------------------------------------


def test_the_artifact_directory_is_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append(kind)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = LocalArtifactStore(tmp_path / "artifacts")
    data = b"weights"
    assert store.put([data], hashlib.sha256(data).hexdigest(), len(data))
    assert synced[0] == "file" and "dir" in synced[1:]


def _recording_dir_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    synced: list[Path] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return synced


def test_shard_and_root_are_fsynced_on_every_put_also_when_stored_already(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    first, second = b"weights", b"other"
    sha = hashlib.sha256(first).hexdigest()
    shard = store.path(sha).parent
    shard.mkdir()  # made by a concurrent put that has not synced yet
    synced = _recording_dir_fsyncs(monkeypatch)
    assert store.put([first], sha, len(first))
    assert set(synced) == {shard, store.root}
    synced.clear()
    assert not store.put([first], sha, len(first))  # there already: still made durable
    assert set(synced) == {shard, store.root}
    synced.clear()
    other = hashlib.sha256(second).hexdigest()
    assert store.put([second], other, len(second))
    assert set(synced) == {store.path(other).parent, store.root}


def test_a_disk_error_while_storing_is_unavailable_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    data = b"weights"

    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(Unavailable, match="No space left"):
        store.put([data], hashlib.sha256(data).hexdigest(), len(data))
    assert list((store.root / "tmp").iterdir()) == []


def test_garbage_collection_deletes_files_only_after_its_commit(reg: Registry) -> None:
    for i in range(6, 9):
        register(reg, f"v{i}".encode())
    store: Any = reg._store
    real_add_event = store.add_event
    calls = []

    def failing_add_event(event: Any) -> None:
        calls.append(event)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        real_add_event(event)

    store.add_event = failing_add_event
    with pytest.raises(RuntimeError, match="went away"):
        reg.collect_garbage(keep_last=2)
    store.add_event = real_add_event
    # Rolled back: every version and its file must be there, whichever were deleted first.
    for number in range(1, 9):
        _, handle = reg.open_artifact(VersionRef("m", number))
        with handle:
            assert handle.read() == f"v{number}".encode()
    assert reg.collect_garbage(keep_last=2) == 6
    assert [v.version for v in reg.list_versions("m", 10)[0]] == [8, 7]
