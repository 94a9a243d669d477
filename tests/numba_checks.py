"""A pytest plugin loaded before anything imports numba (`-p tests.numba_checks`).

Compiled kernels run with bounds checks under test, services started by the tests too: an
index out of range raises IndexError where it happens instead of writing past an array (one
such write corrupted the heap and aborted a CI run minutes later, in unrelated code).
numba's cache key ignores the flag, so checked kernels get a cache of their own: the
unchecked ones cached beside the sources are neither reused here nor replaced.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if "numba" in sys.modules:  # too late: kernels compiled from here on would not be checked
    raise RuntimeError("tests.numba_checks must be loaded before numba is imported")

os.environ["NUMBA_BOUNDSCHECK"] = "1"
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "streamlearn" / "numba-boundscheck")
)
