"""Process lifecycle: the heap settled after a service's build."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.lifecycle import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_the_build_and_lets_a_batch_die_before_a_collection() -> None:
    older = gc.get_threshold()[1:]
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *older)
    young_collections = gc.get_stats()[0]["collections"]
    batch = [[record] for record in range(20_000)]  # a fetched batch's short-lived records
    del batch
    assert gc.get_stats()[0]["collections"] == young_collections


@pytest.mark.usefixtures("restored_gc")
def test_with_the_default_threshold_the_same_batch_sets_collections_off() -> None:
    """The case settle_heap exists for: CPython's default collects within one batch."""
    gc.set_threshold(700, *gc.get_threshold()[1:])
    young_collections = gc.get_stats()[0]["collections"]
    batch = [[record] for record in range(20_000)]
    del batch
    assert gc.get_stats()[0]["collections"] > young_collections
