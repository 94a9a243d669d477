"""The test plugin's promise: cached kernels check their bounds under test."""

from __future__ import annotations

import numba
import numpy as np
import pytest


@numba.njit(cache=True)
def _read(values: np.ndarray, at: int) -> float:
    return values[at]  # type: ignore[no-any-return]


def test_a_cached_kernel_raises_on_an_index_out_of_range() -> None:
    assert _read(np.arange(3.0), 2) == 2.0
    with pytest.raises(IndexError):
        _read(np.zeros(1), 4)
