"""Process lifecycle: SIGTERM/SIGINT become an event the service's run loop waits on."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)
# For a loop over fetched batches: net new container objects (allocations less
# deallocations) before a young collection. CPython's 700 is below one fetched batch (2,000
# records, each a Message and its outputs): every batch set collections off that moved its
# live records into the older generations, and so a full collection about every 20,000
# records (in process, half of ingestion's time a record). It bounds objects, not bytes:
# cyclic garbage (a traceback's frames, say, and what they hold) waits for 100,000 objects
# instead of 700, and each older generation ten times longer too, so only the stream loops
# (ingestion, trainer) ask for it; request servers keep CPython's.
STREAM_YOUNG_THRESHOLD = 100_000


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so `run` can drain and stop cleanly."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def settle_heap(young_threshold: int | None = None) -> None:
    """Move every object built so far out of the garbage collector's sight.

    A service builds once (imports, models, clients) and then allocates short-lived
    objects per record or request. Without this, each full collection re-walks the
    hundreds of thousands of long-lived objects torch, numba or grpc leave behind: measured
    on a consumer with torch imported, reading 1M records took 3x the CPU (780k against
    2.7M records/s). Call it once, after the build and before the loop; objects made later
    are collected as usual. (Start-up objects that later become garbage inside a
    reference cycle stay: bounded, one-time memory; reference counting frees the rest.)
    `young_threshold` (`STREAM_YOUNG_THRESHOLD` for a loop over fetched batches) makes young
    collections wait for that many net new objects, so a batch's short-lived records die by
    reference counting before any collection sees them; None keeps CPython's threshold.
    """
    gc.collect()
    gc.freeze()
    if young_threshold is not None:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)
