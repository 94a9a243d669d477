"""Dynamic batching: concurrent requests coalesced into one session run.

A request waits at most `max_delay_s` for companions; a batch never exceeds `max_batch`
rows. Requests are batched only with requests bound to the same loaded version, of the same
shape (beyond the batch axis) and with the same requested outputs; the first one that differs
starts the next batch. A request runs on the version its inputs were checked against, never
on whichever version is current when its batch runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from services.inference.model import LoadedModel

Result = tuple[LoadedModel, dict[str, np.ndarray]]


@dataclass
class _Job:
    model: LoadedModel
    feeds: Mapping[str, np.ndarray]
    outputs: tuple[str, ...]
    rows: int
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[Result] = field(default_factory=Future)

    def signature(self) -> tuple[object, ...]:
        # id(model) is stable here: every queued job holds a reference to its model.
        return (
            id(self.model),
            self.outputs,
            tuple((n, a.dtype, a.shape[1:]) for n, a in sorted(self.feeds.items())),
        )


class DynamicBatcher:
    """One worker thread per served model runs the coalesced batches."""

    def __init__(self, name: str, max_batch: int, max_delay_s: float) -> None:
        self._max_batch = max_batch
        self._max_delay = max_delay_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._carry: _Job | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for statistics
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def infer(
        self, model: LoadedModel, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> Result:
        """Queue a request for `model` (the version it was checked against) and wait.

        Raises:
            InferenceFailed: The runtime failed on this request's own inputs.

        """
        rows = next(iter(feeds.values())).shape[0] if feeds else 1
        job = _Job(model, feeds, tuple(outputs), rows)
        self._queue.put(job)
        return job.future.result()

    def close(self) -> None:
        """Finish queued work and stop the worker."""
        self._queue.put(None)
        self._thread.join(10)

    def _work(self) -> None:
        while (batch := self._collect()) is not None:
            self._run(batch)

    def _collect(self) -> list[_Job] | None:
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, rows = [first], first.rows
        deadline = first.enqueued + self._max_delay
        while rows < self._max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            if job.signature() != first.signature() or rows + job.rows > self._max_batch:
                self._carry = job
                break
            batch.append(job)
            rows += job.rows
        return batch

    def _run(self, batch: list[_Job]) -> None:
        if self._attempt(batch):
            self.batch_sizes.append(len(batch))  # retries of a failed batch are not counted
            del self.batch_sizes[:-1000]

    def _attempt(self, batch: list[_Job]) -> bool:
        """Run `batch`; when it fails, its halves, recursively; True if it ran whole.

        One request's inputs can fail the whole run: bisecting finds the request at fault in
        about 2*log2(n) runs (not one run per request), its companions get their results
        and only it gets the error.
        """
        try:
            merged = self._run_merged(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return False
            half = len(batch) // 2
            self._attempt(batch[:half])
            self._attempt(batch[half:])
            return False
        start = 0
        for job in batch:
            share = {n: v[start : start + job.rows] for n, v in merged.items()}
            job.future.set_result((job.model, share))
            start += job.rows
        return True

    @staticmethod
    def _run_merged(batch: list[_Job]) -> dict[str, np.ndarray]:
        if len(batch) == 1:
            return batch[0].model.run(batch[0].feeds, batch[0].outputs)
        feeds = {name: np.concatenate([j.feeds[name] for j in batch]) for name in batch[0].feeds}
        return batch[0].model.run(feeds, batch[0].outputs)
