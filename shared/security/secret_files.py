"""What the operators' secret generators share (deploy/k8s/grpc_secrets.py, local_kafka.py)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable
from pathlib import Path


def new_directory(text: str) -> Path:
    """An argparse type: the path `text`, refused when it holds anything.

    Credentials are never written over: a generator writes into a new or empty directory.
    """
    path = Path(text)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise argparse.ArgumentTypeError(f"{path} is not a new or empty directory")
    return path


def kubectl_commands(folders: Iterable[Path], namespace: str) -> list[str]:
    """One `kubectl create secret generic` per folder (its name): each file becomes a key."""
    create = ["kubectl", "-n", namespace, "create", "secret", "generic"]
    return [shlex.join([*create, folder.name, f"--from-file={folder}"]) for folder in folders]
