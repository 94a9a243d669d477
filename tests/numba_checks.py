"""A pytest plugin loaded before anything imports numba (`-p tests.numba_checks`).

Compiled kernels run with bounds checks under test, services started by the tests too: an
index out of range raises IndexError where it happens instead of writing past an array (one
such write corrupted the heap and aborted a CI run minutes later, in unrelated code).
numba's cache key ignores the flag, so checked kernels get a cache directory of their own,
always (beneath a NUMBA_CACHE_DIR already set, as the deployments set it): unchecked kernels
cached elsewhere are neither reused here nor replaced. numba falls back to the sources'
`__pycache__`, where the unchecked ones live, when it cannot write its directory: so the
directory is made and proven writable here, and `test_numba_checks` proves a cached kernel
checks its bounds.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if "numba" in sys.modules:  # too late: kernels compiled from here on would not be checked
    raise RuntimeError("tests.numba_checks must be loaded before numba is imported")

_parent = os.environ.get("NUMBA_CACHE_DIR") or str(Path.home() / ".cache" / "streamlearn")
CACHE_DIR = Path(_parent) / "numba-boundscheck"
try:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=CACHE_DIR):
        pass
except OSError as exc:
    raise RuntimeError(f"bounds-checked kernels need a writable cache at {CACHE_DIR}") from exc
os.environ["NUMBA_BOUNDSCHECK"] = "1"
os.environ["NUMBA_CACHE_DIR"] = str(CACHE_DIR)
