"""Running requests against served versions, batched when configured. Transport-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.inference.batching import DynamicBatcher, Result
from services.inference.model import LoadedModel
from services.inference.repository import Repository
from shared.errors import ResourceExhausted


class Engine:
    """Resolves the version for a request and runs it, inline or through a batcher."""

    def __init__(self, repository: Repository, max_batch: int, max_delay_s: float) -> None:
        self.repository = repository
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._batchers = {
            m.name: DynamicBatcher(m.name, max_batch, max_delay_s)
            for m in repository.all()
            if max_batch > 1 and max_delay_s > 0
        }

    @property
    def batching(self) -> bool:
        """True when concurrent requests are coalesced."""
        return bool(self._batchers)

    def resolve(self, name: str, version: int = 0) -> LoadedModel:
        """The version a request will run on: served (0) or a specific loaded one."""
        return self.repository.model(name).get(version)

    def infer(
        self,
        model: LoadedModel,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        pinned: bool,
    ) -> Result:
        """Check and run on `model`. Pinned requests (explicit version) run inline.

        Raises:
            InvalidArgument: The inputs or outputs do not fit the model.
            ResourceExhausted: More rows than `max_batch`.
            InferenceFailed: The runtime failed on this request.

        """
        model.check(feeds, outputs)
        rows = next(iter(feeds.values())).shape[0] if feeds else 1
        if rows > self.max_batch and model.inputs and model.inputs[0].shape[0] == -1:
            raise ResourceExhausted(f"batch of {rows} rows exceeds max_batch_size {self.max_batch}")
        batcher = self._batchers.get(model.name)
        if batcher is None or pinned:
            return model, model.run(feeds, outputs)
        return batcher.infer(model, feeds, outputs)

    def batch_sizes(self, name: str) -> list[int]:
        """Recent batch sizes of a model's batcher (empty without batching)."""
        batcher = self._batchers.get(name)
        return list(batcher.batch_sizes) if batcher else []

    def close(self) -> None:
        """Stop the batchers after their queued work."""
        for batcher in self._batchers.values():
            batcher.close()
