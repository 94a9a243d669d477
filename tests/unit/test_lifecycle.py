"""Process lifecycle: the heap settled after a service's build."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.lifecycle import STREAM_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_a_stream_loop_freezes_its_build_and_lets_a_batch_die_before_a_collection() -> None:
    older = gc.get_threshold()[1:]
    settle_heap(STREAM_YOUNG_THRESHOLD)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (STREAM_YOUNG_THRESHOLD, *older)
    young_collections = gc.get_stats()[0]["collections"]
    batch = [[record] for record in range(STREAM_YOUNG_THRESHOLD // 2)]  # short-lived records
    del batch
    assert gc.get_stats()[0]["collections"] == young_collections


@pytest.mark.usefixtures("restored_gc")
def test_a_request_server_keeps_the_interpreters_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10)
