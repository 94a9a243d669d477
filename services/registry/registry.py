"""The registry's rules: versions, compare-and-set aliases, promotion, rollback, events, retention.

Transport-free: the gRPC servicer and the Kafka publisher are adapters around this class.
Every change and the event announcing it are committed in one transaction (an outbox), so an
announced change always exists and an existing change is always announced.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO

from services.registry.artifacts import ArtifactStore
from services.registry.model import (
    CANDIDATE,
    PRODUCTION,
    Audit,
    Event,
    Lineage,
    ModelInfo,
    Version,
    VersionFilter,
    VersionRef,
)
from services.registry.policy import Policy
from services.registry.store import Store
from shared.errors import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_PAGE = 1000
NO_LINEAGE = Lineage()
ALL_VERSIONS = VersionFilter()
NO_POLICY = Policy()
DEFAULT_MAX_ARTIFACT_BYTES = 512 * 1024 * 1024


def _valid_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(f"invalid {kind} name {name!r}: use letters, digits, '.', '_', '-'")
    return name


class Registry:
    """Model versions with lineage and aliases over a Store and an ArtifactStore."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        policy: Policy = NO_POLICY,
        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self.policy = policy
        self.max_artifact_bytes = max_artifact_bytes
        self.changed = threading.Condition()  # notified after every committed change

    # --- models -----------------------------------------------------------------------------
    def create_model(self, name: str, description: str = "", exist_ok: bool = False) -> ModelInfo:
        """Create a model; with `exist_ok` an existing one is returned instead of an error."""
        _valid_name("model", name)
        with self._store.transaction():
            try:
                self._store.model_id(name)
                if not exist_ok:
                    raise AlreadyExists(f"model {name!r} already exists")
            except NotFound:
                self._store.insert_model(name, description)
                self._store.add_event(Event(0, "MODEL_CREATED", name))
        self._notify()
        return self.get_model(name)

    def get_model(self, name: str) -> ModelInfo:
        """A model and its aliases."""
        with self._store.lock:
            return self._store.model(name)

    def list_models(self, page_size: int, after: str = "") -> tuple[list[ModelInfo], str]:
        """Models by name; returns a page and the token of the next one ("" at the end)."""
        size = min(page_size or 100, MAX_PAGE)
        with self._store.lock:
            names = self._store.model_names(after, size + 1)
            models = [self._store.model(n) for n in names[:size]]
        return models, (names[size - 1] if len(names) > size else "")

    # --- versions ---------------------------------------------------------------------------
    def register_version(
        self,
        model: str,
        chunks: Iterable[bytes],
        sha256: str,
        size: int,
        *,
        lineage: Lineage = NO_LINEAGE,
        tags: Mapping[str, str] | None = None,
        fmt: str = "onnx",
    ) -> Version:
        """Store the artifact (verified against sha256 and size), then record the version.

        The bytes are checked while they stream in: an upload stops at the first chunk that
        takes it past the size cap or past its declared size, and its partial file goes.

        Raises:
            NotFound: Unknown model.
            InvalidArgument: A negative size or a malformed digest.
            ResourceExhausted: The artifact is (or is declared) larger than the cap.
            IntegrityError: The bytes do not match the header; nothing is kept.

        """
        self.get_model(model)  # fail fast, before reading the bytes
        self._check_declared_size(size)
        created = self._artifacts.put(self._capped(chunks, size), sha256, size)
        try:
            with self._store.transaction():
                if not self._artifacts.exists(sha256):  # collected while we were uploading
                    raise Conflict(f"artifact {sha256} was garbage-collected meanwhile: retry")
                model_id = self._store.model_id(model)
                number = self._store.next_version(model_id)
                version = Version(
                    model, number, sha256, size, fmt, lineage, dict(tags or {}), time.time()
                )
                self._store.insert_version(model_id, version)
                self._store.add_event(Event(0, "VERSION_REGISTERED", model, number, sha256=sha256))
        except BaseException:
            if created:
                self._delete_if_unused(sha256)
            raise
        self._notify()
        log.info("version registered", extra={"model": model, "model_version": number})
        return version

    def _check_declared_size(self, size: int) -> None:
        if size < 0:
            raise InvalidArgument(f"artifact size must not be negative, got {size}")
        if size > self.max_artifact_bytes:
            raise ResourceExhausted(
                f"artifact declared {size} bytes; the registry accepts at most "
                f"{self.max_artifact_bytes} (REGISTRY_MAX_ARTIFACT_BYTES)"
            )

    def _capped(self, chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
        """The chunks, cut off by an error as soon as the running total passes a limit."""
        total = 0
        for chunk in chunks:
            total += len(chunk)
            if total > self.max_artifact_bytes:
                raise ResourceExhausted(
                    f"artifact exceeds the {self.max_artifact_bytes}-byte limit "
                    "(REGISTRY_MAX_ARTIFACT_BYTES)"
                )
            if total > size:
                raise IntegrityError(f"artifact has more than the {size} bytes declared")
            yield chunk

    def get_version(self, ref: VersionRef) -> Version:
        """The version a reference names (number, alias or newest)."""
        with self._store.lock:
            model_id = self._store.model_id(ref.model)
            return self._store.version(ref.model, model_id, self._resolve(model_id, ref))

    def list_versions(
        self, model: str, page_size: int, before: int = 0, where: VersionFilter = ALL_VERSIONS
    ) -> tuple[list[Version], int]:
        """Newest first; returns a page and the version to continue below (0 at the end)."""
        size = min(page_size or 100, MAX_PAGE)
        with self._store.lock:
            model_id = self._store.model_id(model)
            rows = self._store.versions(model, model_id, before or 2**62, size + 1, where)
        return rows[:size], (rows[size - 1].version if len(rows) > size else 0)

    def open_artifact(self, ref: VersionRef) -> tuple[Version, BinaryIO]:
        """The version and a handle on its verified bytes.

        Resolution and opening happen under the store lock, which garbage collection also
        takes: once a handle is returned, deleting the file cannot break the download.
        """
        with self._store.lock:
            version = self.get_version(ref)
            return version, self._artifacts.open_verified(version.sha256)

    def set_tags(self, ref: VersionRef, set_: Mapping[str, str], remove: Iterable[str]) -> Version:
        """Add, change and remove tags of a version."""
        with self._store.transaction():
            version = self.get_version(ref)
            tags = {k: v for k, v in {**version.tags, **set_}.items() if k not in set(remove)}
            model_id = self._store.model_id(ref.model)
            self._store.set_tags(model_id, version.version, tags)
            self._store.add_event(Event(0, "TAGS_CHANGED", ref.model, version.version))
        self._notify()
        return self.get_version(VersionRef(ref.model, version.version))

    # --- aliases ----------------------------------------------------------------------------
    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        expected: int | None = None,
        actor: str = "",
        reason: str = "",
    ) -> int:
        """Point `alias` at `version`; with `expected`, only if it points there now (0: absent).

        Raises:
            Conflict: The alias moved since the caller read it (compare-and-set failed).

        """
        _valid_name("alias", alias)
        with self._store.transaction():
            model_id = self._store.model_id(model)
            self._store.version(model, model_id, version)  # must exist
            current = self._move(model_id, alias, version, expected)
            self._store.add_audit(
                model_id, model, "set_alias", alias, current, version, actor, reason
            )
            self._store.add_event(
                Event(0, "ALIAS_SET", model, version, alias, current, actor, reason)
            )
        self._notify()
        if alias == CANDIDATE and self.policy.enabled:
            self.apply_promotion_policy(model)
        return current

    def delete_alias(
        self, model: str, alias: str, expected: int | None = None, actor: str = "", reason: str = ""
    ) -> None:
        """Remove an alias (compare-and-set with `expected`)."""
        with self._store.transaction():
            model_id = self._store.model_id(model)
            current = self._current(model_id, alias)
            if current == 0:
                raise NotFound(f"model {model!r} has no alias {alias!r}")
            if expected is not None and expected != current:
                raise Conflict(f"alias {alias!r} points at {current}, not {expected}")
            self._store.drop_alias(model_id, alias)
            self._store.add_audit(model_id, model, "delete_alias", alias, current, 0, actor, reason)
            self._store.add_event(
                Event(0, "ALIAS_DELETED", model, 0, alias, current, actor, reason)
            )
        self._notify()

    def promote(
        self,
        model: str,
        from_alias: str = CANDIDATE,
        to_alias: str = PRODUCTION,
        actor: str = "",
        reason: str = "",
    ) -> Audit:
        """Point `to_alias` at the version `from_alias` holds."""
        with self._store.transaction():
            model_id = self._store.model_id(model)
            source = self._current(model_id, from_alias)
            if source == 0:
                raise NotFound(f"model {model!r} has no alias {from_alias!r} to promote")
            current = self._move(model_id, to_alias, source, None)
            audit = self._store.add_audit(
                model_id, model, "promote", to_alias, current, source, actor, reason
            )
            self._store.add_event(
                Event(0, "PROMOTED", model, source, to_alias, current, actor, reason)
            )
        self._notify()
        return audit

    def rollback(
        self, model: str, alias: str = PRODUCTION, actor: str = "", reason: str = ""
    ) -> Audit:
        """Point `alias` back at the version it held before, walking its history backwards.

        Each rollback steps one version further back, skipping every version the alias was
        rolled back from: rolling back twice never re-serves the version just rolled back.

        Raises:
            Conflict: There is no earlier version to go back to (FAILED_PRECONDITION).

        """
        with self._store.transaction():
            model_id = self._store.model_id(model)
            current = self._current(model_id, alias)
            target = rollback_target(self._store.alias_moves(model_id, alias), current)
            if current == 0 or target == 0:
                why = (
                    "it does not exist"
                    if current == 0
                    else f"it held no version before v{current} that it was not rolled back from"
                )
                raise Conflict(f"alias {alias!r} of {model!r} has nothing to roll back to: {why}")
            self._move(model_id, alias, target, current)
            audit = self._store.add_audit(
                model_id, model, "rollback", alias, current, target, actor, reason
            )
            self._store.add_event(
                Event(0, "ROLLED_BACK", model, target, alias, current, actor, reason)
            )
        self._notify()
        return audit

    def apply_promotion_policy(self, model: str) -> Audit | None:
        """Promote candidate to production if the policy's metric says it is better."""
        with self._store.lock:
            candidate = self.get_version(VersionRef(model, alias=CANDIDATE))
            try:
                production: Version | None = self.get_version(VersionRef(model, alias=PRODUCTION))
            except NotFound:
                production = None
            reason = self.policy.promotion_reason(candidate, production)
            if reason is None:
                return None
            return self.promote(model, actor="policy", reason=reason)

    def report_live_metric(
        self,
        model: str,
        version: int,
        value: float,
        metric: str | None = None,
        reporter: str = "",
    ) -> Audit | None:
        """Roll production back if the version it serves degrades live beyond the policy.

        Args:
            model: The model served.
            version: The version the metric was measured on.
            value: The live metric.
            metric: Its name; a metric other than the policy's is ignored (None: the policy's).
            reporter: Who reported it (the authenticated principal): a rollback's audit names
                it beside the policy, so a forced rollback is traceable to its caller.

        Raises:
            InvalidArgument: The value is NaN or infinite (it would compare as a degradation).

        """
        if not math.isfinite(value):
            raise InvalidArgument(f"live metric value must be finite, got {value}")
        if not self.policy.enabled or (metric is not None and metric != self.policy.metric):
            return None
        with self._store.lock:
            served = self.get_version(VersionRef(model, alias=PRODUCTION))
            if served.version != version:
                return None  # the report is about a version that is no longer served
            reason = self.policy.rollback_reason(served, value)
            if reason is None:
                return None
            actor = f"policy (reported by {reporter})" if reporter else "policy"
            return self.rollback(model, actor=actor, reason=reason)

    def history(self, model: str, limit: int = 50) -> list[Audit]:
        """Alias moves of a model, newest first."""
        with self._store.lock:
            return self._store.audit(self._store.model_id(model), model, min(limit or 50, MAX_PAGE))

    # --- events -----------------------------------------------------------------------------
    def events_after(self, sequence: int, model: str = "", limit: int = 500) -> list[Event]:
        """Committed events after `sequence`, oldest first."""
        with self._store.lock:
            return self._store.events(sequence, limit, model)

    def last_sequence(self) -> int:
        """The sequence of the newest event (0 when there is none)."""
        with self._store.lock:
            return self._store.last_sequence()

    def unpublished_events(self, limit: int = 500) -> list[Event]:
        """Events not yet confirmed on Kafka, oldest first."""
        with self._store.lock:
            return self._store.events(0, limit, unpublished=True)

    def mark_published(self, up_to: int) -> None:
        """Record that events up to `up_to` are on Kafka."""
        with self._store.transaction():
            self._store.mark_published(up_to)

    def wait_for_change(self, timeout: float) -> None:
        """Block until the next committed change or `timeout` seconds."""
        with self.changed:
            self.changed.wait(timeout)

    # --- retention --------------------------------------------------------------------------
    def collect_garbage(self, keep_last: int) -> int:
        """Delete versions beyond the newest `keep_last` of each model that never held an alias.

        Artifacts are deleted once no version refers to them, and only after the transaction
        forgetting the versions committed: a failed transaction leaves every file in place.
        The store lock is held until the files are gone, so no registration can start using
        an artifact between the check and the deletion. A download in flight holds an open
        handle (see `open_artifact`) and keeps reading after the unlink.

        Returns:
            The number of versions deleted.

        """
        deleted, doomed = 0, set()
        with self._store.lock:
            with self._store.transaction():
                for model_id, model in self._store.all_model_ids():
                    for number, sha256 in self._store.collectable(model_id, keep_last):
                        self._store.delete_version(model_id, number)
                        self._store.add_event(
                            Event(
                                0,
                                "VERSION_DELETED",
                                model,
                                number,
                                reason="retention",
                                sha256=sha256,
                            )
                        )
                        doomed.add(sha256)
                        deleted += 1
            for sha256 in doomed:
                if not self._store.sha_in_use(sha256):
                    self._artifacts.delete(sha256)
        if deleted:
            self._notify()
        return deleted

    # --- internals --------------------------------------------------------------------------
    def _resolve(self, model_id: int, ref: VersionRef) -> int:
        if ref.version:
            return ref.version
        if ref.alias:
            current = self._current(model_id, ref.alias)
            if current == 0:
                raise NotFound(f"model {ref.model!r} has no alias {ref.alias!r}")
            return current
        latest = self._store.model(ref.model).latest_version
        if latest == 0:
            raise NotFound(f"model {ref.model!r} has no versions")
        return latest

    def _current(self, model_id: int, alias: str) -> int:
        held = self._store.alias(model_id, alias)
        return held[0] if held else 0

    def _move(self, model_id: int, alias: str, version: int, expected: int | None) -> int:
        current = self._current(model_id, alias)
        if expected is not None and expected != current:
            raise Conflict(
                f"alias {alias!r} points at {current or 'nothing'}, "
                f"not {expected or 'nothing'}: re-read and retry"
            )
        self._store.put_alias(model_id, alias, version, current)
        return current

    def _delete_if_unused(self, sha256: str) -> None:
        with self._store.lock:
            if not self._store.sha_in_use(sha256):
                self._artifacts.delete(sha256)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


def rollback_target(moves: Sequence[tuple[str, int, int]], current: int) -> int:
    """The version a rollback of an alias now at `current` goes to (0: none).

    Replays the alias's moves (action, from, to), oldest first, as a stack of the versions it
    held: a move pushes its target, a rollback drops every entry of the version it left, a
    deletion starts the history afresh. The answer is the newest entry that is not `current`.
    """
    held: list[int] = []
    for action, from_version, to_version in moves:
        if action == "rollback":
            held = [v for v in held if v != from_version]
        elif action == "delete_alias":
            held = []
        else:
            held.append(to_version)
    earlier = [v for v in held if v not in (current, 0)]
    return earlier[-1] if earlier else 0
