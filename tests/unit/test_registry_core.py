"""The registry's rules, on a real SQLite file and artifact directory (no network)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from services.registry.artifacts import LocalArtifactStore
from services.registry.convert import lineage_from_pb, lineage_to_pb
from services.registry.model import Lineage, OffsetRange, VersionFilter, VersionRef
from services.registry.registry import Registry
from services.registry.store import Store
from shared.errors import AlreadyExists, Conflict, IntegrityError, InvalidArgument, NotFound
from streamlearn.v1 import registry_pb2, stream_pb2

Make = Callable[[Path], Registry]


@pytest.fixture
def make() -> Make:
    """A registry over a database that survives re-making (the integration suite swaps in
    PostgreSQL by overriding this fixture)."""
    return lambda root: Registry(Store(root / "db.sqlite"), LocalArtifactStore(root / "artifacts"))


def register(reg: Registry, data: bytes, model: str = "m", **kw: object):  # type: ignore[no-untyped-def]
    return reg.register_version(model, [data], hashlib.sha256(data).hexdigest(), len(data), **kw)


@pytest.fixture
def reg(make: Make, tmp_path: Path) -> Registry:
    registry = make(tmp_path)
    registry.create_model("m")
    return registry


def test_versions_number_up_and_keep_their_lineage(reg: Registry) -> None:
    lineage = Lineage("clicks", (OffsetRange("t", 0, 0, 100),), 100, {"logloss": 0.3}, "abc")
    first = register(reg, b"one", lineage=lineage, tags={"run": "a"})
    second = register(reg, b"two")
    assert (first.version, second.version) == (1, 2)
    stored = reg.get_version(VersionRef("m", 1))
    assert stored.lineage == lineage and stored.tags == {"run": "a"}
    assert reg.get_version(VersionRef("m")).version == 2  # newest


def test_unknown_things_are_not_found(reg: Registry) -> None:
    with pytest.raises(NotFound):
        reg.get_version(VersionRef("nope"))
    with pytest.raises(NotFound):
        reg.get_version(VersionRef("m"))  # no versions yet
    with pytest.raises(NotFound):
        reg.get_version(VersionRef("m", alias="production"))
    with pytest.raises(AlreadyExists):
        reg.create_model("m")
    assert reg.create_model("m", exist_ok=True).name == "m"
    with pytest.raises(InvalidArgument):
        reg.create_model("bad name!")


def test_corrupt_or_truncated_upload_leaves_nothing(reg: Registry, tmp_path: Path) -> None:
    good = hashlib.sha256(b"payload").hexdigest()
    with pytest.raises(IntegrityError, match="digest"):
        reg.register_version("m", [b"paylo4d"], good, 7)
    with pytest.raises(IntegrityError, match="truncated"):
        reg.register_version("m", [b"pay"], good, 7)
    assert reg.get_model("m").latest_version == 0
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert files == []


def test_alias_compare_and_set(reg: Registry) -> None:
    for data in (b"1", b"2", b"3"):
        register(reg, data)
    assert reg.set_alias("m", "production", 1, expected=0) == 0
    with pytest.raises(Conflict):
        reg.set_alias("m", "production", 2, expected=0)
    assert reg.set_alias("m", "production", 2, expected=1) == 1
    with pytest.raises(NotFound):
        reg.set_alias("m", "production", 9)


def test_concurrent_moves_with_the_same_expectation_have_one_winner(reg: Registry) -> None:
    for data in (b"1", b"2", b"3", b"4", b"5"):
        register(reg, data)
    reg.set_alias("m", "production", 1)
    start, outcomes = threading.Barrier(4), []

    def move(target: int) -> None:
        start.wait()
        try:
            reg.set_alias("m", "production", target, expected=1)
            outcomes.append(target)
        except Conflict:
            outcomes.append(-target)

    threads = [threading.Thread(target=move, args=(v,)) for v in (2, 3, 4, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o > 0]
    assert len(winners) == 1 and len(outcomes) == 4
    assert reg.get_version(VersionRef("m", alias="production")).version == winners[0]


def test_promote_and_rollback_are_audited(reg: Registry) -> None:
    for data in (b"1", b"2"):
        register(reg, data)
    reg.set_alias("m", "production", 1, actor="ci")
    reg.set_alias("m", "candidate", 2)
    promoted = reg.promote("m", actor="alice", reason="better logloss")
    assert (promoted.from_version, promoted.to_version) == (1, 2)
    back = reg.rollback("m", actor="bob", reason="live metric dropped")
    assert (back.from_version, back.to_version) == (2, 1)
    assert reg.get_model("m").aliases == {"candidate": 2, "production": 1}
    history = reg.history("m")
    assert [h.action for h in history] == ["rollback", "promote", "set_alias", "set_alias"]
    assert history[0].actor == "bob" and history[0].reason == "live metric dropped"


def test_listing_is_newest_first_paged_and_filtered(reg: Registry) -> None:
    for i in range(1, 8):
        register(
            reg,
            str(i).encode(),
            lineage=Lineage(metrics={"acc": i / 10}),
            tags={"even": str(i % 2 == 0)},
        )
    page, cursor = reg.list_versions("m", 3)
    assert [v.version for v in page] == [7, 6, 5] and cursor == 5
    page, cursor = reg.list_versions("m", 3, cursor)
    assert [v.version for v in page] == [4, 3, 2]
    page, cursor = reg.list_versions("m", 3, cursor)
    assert [v.version for v in page] == [1] and cursor == 0
    evens, _ = reg.list_versions("m", 10, where=VersionFilter(tags={"even": "True"}))
    assert [v.version for v in evens] == [6, 4, 2]
    good, _ = reg.list_versions("m", 10, where=VersionFilter(metric="acc", min_metric=0.5))
    assert [v.version for v in good] == [7, 6, 5]


def test_every_change_is_an_event_in_order(reg: Registry) -> None:
    register(reg, b"1")
    reg.set_alias("m", "production", 1)
    events = reg.events_after(0)
    assert [e.type for e in events] == ["MODEL_CREATED", "VERSION_REGISTERED", "ALIAS_SET"]
    assert [e.sequence for e in events] == sorted({e.sequence for e in events})
    assert len(reg.unpublished_events()) == 3
    reg.mark_published(events[1].sequence)
    assert [e.type for e in reg.unpublished_events()] == ["ALIAS_SET"]


def test_retention_keeps_recent_and_aliased_versions_and_open_downloads(reg: Registry) -> None:
    for i in range(1, 11):
        register(reg, f"artifact-{i}".encode())
    reg.set_alias("m", "production", 2)
    reg.set_alias("m", "production", 3)  # 2 held an alias once: kept forever
    _, handle = reg.open_artifact(VersionRef("m", 1))  # a download in flight
    assert reg.collect_garbage(keep_last=5) == 3  # 1, 4 and 5 go
    remaining, _ = reg.list_versions("m", 100)
    assert [v.version for v in remaining] == [10, 9, 8, 7, 6, 3, 2]
    with handle:
        assert handle.read() == b"artifact-1"  # unaffected by the deletion
    with pytest.raises(NotFound):
        reg.open_artifact(VersionRef("m", 4))


def test_a_restart_loses_nothing(make: Make, tmp_path: Path) -> None:
    first = make(tmp_path)
    first.create_model("m")
    register(first, b"weights")
    first.set_alias("m", "production", 1)
    again = make(tmp_path)
    assert again.get_model("m").aliases == {"production": 1}
    _, handle = again.open_artifact(VersionRef("m", alias="production"))
    with handle:
        assert handle.read() == b"weights"


def test_corruption_on_disk_is_detected_on_read(reg: Registry, tmp_path: Path) -> None:
    version = register(reg, b"weights")
    path = next(p for p in (tmp_path / "artifacts").rglob(version.sha256))
    path.write_bytes(b"weightz")
    with pytest.raises(IntegrityError, match="corrupt"):
        reg.open_artifact(VersionRef("m", 1))


def test_rollbacks_walk_back_through_the_alias_history(reg: Registry) -> None:
    """Also run on PostgreSQL (the suite is re-run there): the walk reads the audit table."""
    for data in (b"1", b"2", b"3"):
        register(reg, data)
    for version in (1, 2, 3):
        reg.set_alias("m", "production", version)
    assert reg.rollback("m").to_version == 2
    assert reg.rollback("m").to_version == 1  # not back to 3
    with pytest.raises(Conflict, match="nothing to roll back to"):
        reg.rollback("m")


def test_the_stream_definition_of_a_version_survives_the_store_and_the_wire(reg: Registry) -> None:
    definition = stream_pb2.StreamDefinition(
        name="clicks",
        dense_dim=1,
        sparse_buckets=64,
        label_kind=stream_pb2.LABEL_KIND_BINARY,
        revision=4,
        features=stream_pb2.FeatureSchema(
            numeric=["age"],
            categorical=["country", "device"],
            crosses=[stream_pb2.FeatureCross(left="country", right="device")],
        ),
    )
    sent = registry_pb2.Lineage(stream="clicks", stream_definition=definition, teacher="big:v3")
    register(reg, b"one", lineage=lineage_from_pb(sent))
    back = lineage_to_pb(reg.get_version(VersionRef("m", 1)).lineage)
    assert back.stream_definition == definition and back.teacher == "big:v3"
    register(reg, b"two", lineage=lineage_from_pb(registry_pb2.Lineage(stream="clicks")))
    assert not lineage_to_pb(reg.get_version(VersionRef("m", 2)).lineage).HasField(
        "stream_definition"
    )
