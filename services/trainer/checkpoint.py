"""Crash-exact checkpoints: learner state and the Kafka offsets it reflects, in one file.

Written to a temporary file, fsynced, renamed over the previous checkpoint and the directory
fsynced: after a crash the file is either the old checkpoint or the new one, never a mix.
Weights and next offsets are saved together, so a restart neither loses nor repeats events.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save(path: Path, payload: dict[str, Any]) -> None:
    """Atomically replace the checkpoint at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        torch.save(payload, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def load(path: Path) -> dict[str, Any] | None:
    """The last checkpoint, or None when there is none (a first start)."""
    if not path.exists():
        return None
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return payload
