"""Content-addressed artifact storage: bytes stored under their sha256, verified on every read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from shared.errors import IntegrityError, InvalidArgument, NotFound, Unavailable

READ_CHUNK = 1024 * 1024


class ArtifactStore(Protocol):
    """What the registry needs of an artifact store; an object store can implement it too."""

    def put(self, chunks: Iterable[bytes], sha256: str, size: int) -> bool:
        """Store bytes that must hash to `sha256`; True if they were new."""

    def open_verified(self, sha256: str) -> BinaryIO:
        """A handle positioned at 0 on bytes just checked against `sha256`."""

    def delete(self, sha256: str) -> None:
        """Remove an artifact (readers holding a handle keep reading)."""

    def exists(self, sha256: str) -> bool:
        """True when the artifact is stored."""


class LocalArtifactStore:
    """Files at `<root>/<sha[:2]>/<sha>`, written to a temp file, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where an artifact lives."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidArgument(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, chunks: Iterable[bytes], sha256: str, size: int) -> bool:
        """Write, check digest and size, then publish atomically; nothing remains on failure.

        Returns only once the file and its directory entries are durable, also when the
        bytes were stored already (perhaps by a concurrent put that has not synced yet).

        Raises:
            IntegrityError: The bytes do not hash to `sha256` or are not `size` long.
            Unavailable: The disk refused (full, read-only, I/O error).

        """
        target = self.path(sha256)
        try:
            return self._put(chunks, target, sha256, size)
        except OSError as exc:
            raise Unavailable(f"artifact store {self.root}: {exc}") from exc

    def _put(self, chunks: Iterable[bytes], target: Path, sha256: str, size: int) -> bool:
        digest, written = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    written += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            _check(digest.hexdigest(), written, sha256, size)
            created = not target.exists()
            if created:
                target.parent.mkdir(exist_ok=True)
                tmp.rename(target)
            # The rename (ours, or a concurrent put's) and the shard directory's own entry
            # are durable only once their directories are: without this, a crash can lose a
            # file whose version row was already committed.
            _fsync_dir(target.parent)
            _fsync_dir(self.root)
            return created
        finally:
            tmp.unlink(missing_ok=True)

    def open_verified(self, sha256: str) -> BinaryIO:
        """Open and re-hash the artifact; the returned handle reads the verified bytes."""
        try:
            handle = self.path(sha256).open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {sha256} is missing from the store") from exc
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            handle.close()
            raise IntegrityError(f"artifact {sha256} is corrupt on disk")
        handle.seek(0)
        return handle

    def exists(self, sha256: str) -> bool:
        """True when the artifact's file is present."""
        return self.path(sha256).exists()

    def delete(self, sha256: str) -> None:
        """Unlink the file; an open handle keeps its bytes until closed."""
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames, creations) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check(actual_sha: str, actual_size: int, sha256: str, size: int) -> None:
    if actual_size != size:
        raise IntegrityError(
            f"artifact truncated or padded: got {actual_size} bytes, header said {size}"
        )
    if actual_sha != sha256:
        raise IntegrityError(f"artifact digest mismatch: got {actual_sha}, header said {sha256}")


def read_chunks(handle: BinaryIO, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
    """Stream a handle in chunks, closing it at the end."""
    with handle:
        yield from iter(lambda: handle.read(chunk_size), b"")
