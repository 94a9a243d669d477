"""gRPC adapter of the registry: protobuf in, domain calls, protobuf out, errors as status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from services.registry import convert
from services.registry.artifacts import read_chunks
from services.registry.registry import Registry
from shared.errors import InvalidArgument, ResourceExhausted
from shared.grpc.status import domain_errors, streaming_domain_errors
from shared.security.identity import current_principal
from streamlearn.v1 import events_pb2, registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1024 * 1024
DEFAULT_MAX_WATCHERS = 16


class RegistryServicer(registry_pb2_grpc.ModelRegistryServicer):
    """streamlearn.v1.ModelRegistry over a Registry."""

    def __init__(self, registry: Registry, max_watchers: int = DEFAULT_MAX_WATCHERS) -> None:
        self._registry = registry
        self._max_watchers = max_watchers
        self._watchers = threading.BoundedSemaphore(max_watchers)

    @domain_errors
    def CreateModel(self, request: Any, context: Any) -> registry_pb2.Model:  # noqa: N802
        """Create a model."""
        return convert.model_to_pb(
            self._registry.create_model(request.name, request.description, request.exist_ok)
        )

    @domain_errors
    def GetModel(self, request: Any, context: Any) -> registry_pb2.Model:  # noqa: N802
        """Describe a model."""
        return convert.model_to_pb(self._registry.get_model(request.name))

    @domain_errors
    def ListModels(self, request: Any, context: Any) -> registry_pb2.ListModelsResponse:  # noqa: N802
        """Models by name, paged."""
        models, token = self._registry.list_models(request.page_size, request.page_token)
        return registry_pb2.ListModelsResponse(
            models=[convert.model_to_pb(m) for m in models], next_page_token=token
        )

    @domain_errors
    def RegisterVersion(self, request_iterator: Any, context: Any) -> registry_pb2.ModelVersion:  # noqa: N802
        """Header first, then artifact chunks; the version exists only if every byte matched."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("RegisterVersion must start with a header message")
        header = first.header
        chunks = _chunks(request_iterator)
        version = self._registry.register_version(
            header.model,
            chunks,
            header.sha256,
            header.size_bytes,
            lineage=convert.lineage_from_pb(header.lineage),
            tags=dict(header.tags),
            fmt=header.format or "onnx",
        )
        return convert.version_to_pb(version)

    @domain_errors
    def GetVersion(self, request: Any, context: Any) -> registry_pb2.ModelVersion:  # noqa: N802
        """One version by number, alias or newest."""
        return convert.version_to_pb(self._registry.get_version(convert.ref_from_pb(request.ref)))

    @domain_errors
    def ListVersions(self, request: Any, context: Any) -> registry_pb2.ListVersionsResponse:  # noqa: N802
        """Newest first, paged, filtered by tags and a metric."""
        before = _page_token(request.page_token)
        versions, next_before = self._registry.list_versions(
            request.model, request.page_size, before, convert.filter_from_pb(request)
        )
        return registry_pb2.ListVersionsResponse(
            versions=[convert.version_to_pb(v) for v in versions],
            next_page_token=str(next_before) if next_before else "",
        )

    @streaming_domain_errors
    def DownloadArtifact(self, request: Any, context: Any) -> Iterator[registry_pb2.ArtifactChunk]:  # noqa: N802
        """The verified artifact in chunks; the first carries the version."""
        version, handle = self._registry.open_artifact(convert.ref_from_pb(request.ref))
        first = True
        for data in read_chunks(handle, request.chunk_size or DEFAULT_CHUNK):
            yield registry_pb2.ArtifactChunk(
                version=convert.version_to_pb(version) if first else None, data=data
            )
            first = False
        if first:  # empty artifact: still say which version it is
            yield registry_pb2.ArtifactChunk(version=convert.version_to_pb(version))

    @domain_errors
    def SetAlias(self, request: Any, context: Any) -> registry_pb2.Alias:  # noqa: N802
        """Move an alias, compare-and-set when `check_expected`."""
        expected = request.expected_version if request.check_expected else None
        self._registry.set_alias(
            request.model,
            request.alias,
            request.version,
            expected,
            _actor(request, context),
            request.reason,
        )
        return registry_pb2.Alias(model=request.model, name=request.alias, version=request.version)

    @domain_errors
    def DeleteAlias(self, request: Any, context: Any) -> registry_pb2.DeleteAliasResponse:  # noqa: N802
        """Remove an alias, compare-and-set when `check_expected`."""
        expected = request.expected_version if request.check_expected else None
        self._registry.delete_alias(
            request.model, request.alias, expected, _actor(request, context), request.reason
        )
        return registry_pb2.DeleteAliasResponse()

    @domain_errors
    def Promote(self, request: Any, context: Any) -> registry_pb2.AuditRecord:  # noqa: N802
        """Candidate -> production (or the aliases named)."""
        return convert.audit_to_pb(
            self._registry.promote(
                request.model,
                request.from_alias or "candidate",
                request.to_alias or "production",
                _actor(request, context),
                request.reason,
            )
        )

    @domain_errors
    def Rollback(self, request: Any, context: Any) -> registry_pb2.AuditRecord:  # noqa: N802
        """Point an alias back at its previous version."""
        return convert.audit_to_pb(
            self._registry.rollback(
                request.model,
                request.alias or "production",
                _actor(request, context),
                request.reason,
            )
        )

    @domain_errors
    def SetTags(self, request: Any, context: Any) -> registry_pb2.ModelVersion:  # noqa: N802
        """Change a version's tags."""
        return convert.version_to_pb(
            self._registry.set_tags(
                convert.ref_from_pb(request.ref), dict(request.set), list(request.remove)
            )
        )

    @domain_errors
    def History(self, request: Any, context: Any) -> registry_pb2.HistoryResponse:  # noqa: N802
        """Audit records, newest first."""
        records = self._registry.history(request.model, request.limit)
        return registry_pb2.HistoryResponse(records=[convert.audit_to_pb(r) for r in records])

    @domain_errors
    def ReportLiveMetric(  # noqa: N802
        self, request: Any, context: Any
    ) -> registry_pb2.ReportLiveMetricResponse:
        """Feed the rollback policy with a live metric of a served version."""
        principal = current_principal()
        audit = self._registry.report_live_metric(
            request.model,
            request.version,
            request.value,
            request.metric,
            reporter=principal.name if principal else _peer(context),
        )
        if audit is None:
            return registry_pb2.ReportLiveMetricResponse(rolled_back=False)
        return registry_pb2.ReportLiveMetricResponse(
            rolled_back=True, audit=convert.audit_to_pb(audit)
        )

    @streaming_domain_errors
    def Watch(self, request: Any, context: Any) -> Iterator[events_pb2.ModelEvent]:  # noqa: N802
        """Events after `after_sequence` (or only new ones), then live, until the client leaves.

        A watcher holds a server thread while connected, so at most `max_watchers` are served
        at once; one more is refused with RESOURCE_EXHAUSTED rather than starving other calls.
        """
        if not self._watchers.acquire(blocking=False):
            raise ResourceExhausted(
                f"too many concurrent Watch streams (limit {self._max_watchers}, "
                "REGISTRY_MAX_WATCHERS): retry later or read the model-events topic"
            )
        try:
            after = request.after_sequence or self._registry.last_sequence()
            while context.is_active():
                for event in self._registry.events_after(after, request.model):
                    yield convert.event_to_pb(event)
                    after = event.sequence
                self._registry.wait_for_change(timeout=1.0)
        finally:
            self._watchers.release()


def _chunks(parts: Iterable[Any]) -> Iterator[bytes]:
    """The artifact bytes after the header; a second header is a malformed upload."""
    for part in parts:
        if part.WhichOneof("part") != "chunk":
            raise InvalidArgument("RegisterVersion takes one header, then only chunks")
        yield part.chunk


def _page_token(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidArgument(f"invalid page token {token!r}")
    return int(token)


def _actor(request: Any, context: grpc.ServicerContext) -> str:
    """Who the audit trail names: the authenticated principal when auth is on.

    A client-supplied actor cannot be trusted then (anybody could name anybody) and the
    audit record has no field for a note, so it is ignored, and logged when it differs.
    Without auth, the request's actor or else the peer address, as before.
    """
    principal = current_principal()
    if principal is None:
        return str(request.actor or _peer(context))
    if request.actor and request.actor != principal.name:
        log.info(
            "client-supplied actor ignored",
            extra={"principal": principal.name, "claimed_actor": request.actor},
        )
    return principal.name


def _peer(context: grpc.ServicerContext) -> str:
    return str(context.peer())
