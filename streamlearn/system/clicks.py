"""A simulated user for `streamlearn demo --feedback`: clicks on what was served, a bit later.

Each served row is clicked with the true probability of the synthetic concept it was drawn
from (`Synthetic` binary or drift, at its stream position), and the click is reported after
a random delay. A row not clicked is never reported: the stream's join policy turns that
silence into a negative, as a click model's would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.errors import InvalidArgument
from streamlearn.client.datasets import Synthetic

CLICKABLE = ("binary", "drift")


@dataclass(frozen=True)
class Click:
    """A row the user clicked, and how long after the answer the click is reported."""

    event_id: str
    delay_s: float


def true_weights(dataset: Synthetic) -> np.ndarray:
    """The concept's weights: the first draw of the dataset's generator, as `Synthetic` draws.

    (`Synthetic` keeps them private; a test checks both agree on every label.)
    """
    weights: np.ndarray = np.random.default_rng(dataset.seed).normal(
        size=(dataset.features, dataset.classes)
    )[:, 0]
    return weights


class SimulatedUser:
    """Clicks rows with their true probability; reports each click after a random delay."""

    def __init__(
        self,
        dataset: Synthetic,
        min_delay_s: float = 0.2,
        max_delay_s: float = 2.0,
        seed: int = 0,
    ) -> None:
        """A user of `dataset`'s concept.

        Args:
            dataset: A binary or drift `Synthetic` stream (the served rows come from it).
            min_delay_s: The shortest delay between an answer and its click's report.
            max_delay_s: The longest (delays are uniform in between).
            seed: Seeds the clicks and delays.

        Raises:
            InvalidArgument: Another kind of dataset, or delays that are no interval.

        """
        if dataset.name not in CLICKABLE:
            raise InvalidArgument(
                f"a simulated user clicks on {' or '.join(CLICKABLE)} streams, not {dataset.name!r}"
            )
        finite = math.isfinite(min_delay_s) and math.isfinite(max_delay_s)
        if not finite or not 0 <= min_delay_s <= max_delay_s:
            raise InvalidArgument(
                f"delays must satisfy 0 <= min <= max, got [{min_delay_s}, {max_delay_s}]"
            )
        self._dataset = dataset
        self._weights = true_weights(dataset)
        self._min, self._max = min_delay_s, max_delay_s
        self._rng = np.random.default_rng(seed)

    def probability(self, x: np.ndarray, at: int) -> np.ndarray:
        """The true click probability of each row of `x`, the first at stream position `at`.

        Raises:
            InvalidArgument: `x` is not rows of the dataset's features.

        """
        rows = np.asarray(x, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self._dataset.features:
            raise InvalidArgument(
                f"rows must have {self._dataset.features} features, got shape {rows.shape}"
            )
        margin = rows @ self._weights
        if self._dataset.name == "drift":  # the concept flips sign every `drift_every` events
            positions = at + np.arange(len(rows))
            margin = np.where((positions // self._dataset.drift_every) % 2 == 1, -margin, margin)
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-margin))
        return probability

    def react(self, event_ids: Sequence[str], x: np.ndarray, at: int) -> list[Click]:
        """The clicks on served rows `x` (event ids in row order), the first at position `at`.

        Raises:
            InvalidArgument: As `probability`, or not one event id per row.

        """
        if len(event_ids) != len(x):
            raise InvalidArgument(f"{len(event_ids)} event ids for {len(x)} rows")
        clicked = self._rng.random(len(x)) < self.probability(x, at)
        delays = self._rng.uniform(self._min, self._max, size=len(x))
        return [
            Click(event_id, float(delay))
            for event_id, hit, delay in zip(event_ids, clicked, delays, strict=True)
            if hit
        ]
