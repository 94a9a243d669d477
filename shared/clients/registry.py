"""A client of the ModelRegistry gRPC service, for the CLI, the trainer, inference and tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from shared.errors import IntegrityError
from shared.grpc.client import GrpcClient
from shared.grpc.status import error_from_rpc
from streamlearn.v1 import events_pb2, registry_pb2, registry_pb2_grpc

if TYPE_CHECKING:
    from shared.settings import GrpcSecurity

T = TypeVar("T")
CHUNK = 1024 * 1024


class RegistryClient(GrpcClient):
    """Typed calls with domain errors (NotFound, Conflict, ...) instead of RpcError."""

    def __init__(
        self, address: str, timeout: float = 30.0, security: GrpcSecurity | None = None
    ) -> None:
        super().__init__(address, timeout, security)
        self._stub = registry_pb2_grpc.ModelRegistryStub(self._channel)  # type: ignore[no-untyped-call]

    def _call(self, reply: type[T], method: Callable[..., Any], request: Any) -> T:
        """Call `method`; its reply is checked to be a `reply` (generated stubs are untyped)."""
        result = self._invoke(method, request)
        if not isinstance(result, reply):
            raise TypeError(f"expected {reply.__name__}, got {type(result).__name__}")
        return result

    def create_model(
        self, name: str, description: str = "", exist_ok: bool = True
    ) -> registry_pb2.Model:
        """Create a model (by default returning the existing one)."""
        return self._call(
            registry_pb2.Model,
            self._stub.CreateModel,
            registry_pb2.CreateModelRequest(name=name, description=description, exist_ok=exist_ok),
        )

    def register(
        self,
        model: str,
        artifact: bytes,
        *,
        lineage: registry_pb2.Lineage | None = None,
        tags: dict[str, str] | None = None,
        fmt: str = "onnx",
    ) -> registry_pb2.ModelVersion:
        """Upload an artifact in chunks with its digest; returns the new version."""
        header = registry_pb2.RegisterVersionHeader(
            model=model,
            lineage=lineage,
            tags=tags or {},
            format=fmt,
            sha256=hashlib.sha256(artifact).hexdigest(),
            size_bytes=len(artifact),
        )

        def parts() -> Iterator[registry_pb2.RegisterVersionRequest]:
            yield registry_pb2.RegisterVersionRequest(header=header)
            for start in range(0, len(artifact), CHUNK):
                yield registry_pb2.RegisterVersionRequest(chunk=artifact[start : start + CHUNK])

        return self._call(registry_pb2.ModelVersion, self._stub.RegisterVersion, parts())

    def get_version(
        self, model: str, version: int = 0, alias: str = ""
    ) -> registry_pb2.ModelVersion:
        """A version by number, alias, or the newest."""
        return self._call(
            registry_pb2.ModelVersion,
            self._stub.GetVersion,
            registry_pb2.GetVersionRequest(
                ref=registry_pb2.VersionRef(model=model, version=version, alias=alias)
            ),
        )

    def list_versions(
        self, model: str, page_size: int = 50, page_token: str = "", **filters: Any
    ) -> registry_pb2.ListVersionsResponse:
        """One page of versions, newest first."""
        return self._call(
            registry_pb2.ListVersionsResponse,
            self._stub.ListVersions,
            registry_pb2.ListVersionsRequest(
                model=model, page_size=page_size, page_token=page_token, **filters
            ),
        )

    def download(
        self, model: str, version: int = 0, alias: str = ""
    ) -> tuple[registry_pb2.ModelVersion, bytes]:
        """A version and its artifact bytes, checked against the recorded sha256."""
        request = registry_pb2.DownloadArtifactRequest(
            ref=registry_pb2.VersionRef(model=model, version=version, alias=alias)
        )
        meta, data = registry_pb2.ModelVersion(), bytearray()
        try:
            for chunk in self._stub.DownloadArtifact(request, timeout=self._timeout):
                if chunk.HasField("version"):
                    meta = chunk.version
                data += chunk.data
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        if hashlib.sha256(data).hexdigest() != meta.artifact.sha256:
            raise IntegrityError(f"downloaded artifact of {model} v{meta.version} is corrupt")
        return meta, bytes(data)

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        expected: int | None = None,
        reason: str = "",
        actor: str = "",
    ) -> registry_pb2.Alias:
        """Move an alias; with `expected` only if it points there now (0: absent)."""
        return self._call(
            registry_pb2.Alias,
            self._stub.SetAlias,
            registry_pb2.SetAliasRequest(
                model=model,
                alias=alias,
                version=version,
                expected_version=expected or 0,
                check_expected=expected is not None,
                reason=reason,
                actor=actor,
            ),
        )

    def promote(
        self,
        model: str,
        from_alias: str = "candidate",
        to_alias: str = "production",
        reason: str = "",
        actor: str = "",
    ) -> registry_pb2.AuditRecord:
        """Point `to_alias` at `from_alias`'s version."""
        return self._call(
            registry_pb2.AuditRecord,
            self._stub.Promote,
            registry_pb2.PromoteRequest(
                model=model, from_alias=from_alias, to_alias=to_alias, reason=reason, actor=actor
            ),
        )

    def rollback(
        self, model: str, alias: str = "production", reason: str = "", actor: str = ""
    ) -> registry_pb2.AuditRecord:
        """Point an alias back at its previous version."""
        return self._call(
            registry_pb2.AuditRecord,
            self._stub.Rollback,
            registry_pb2.RollbackRequest(model=model, alias=alias, reason=reason, actor=actor),
        )

    def history(self, model: str, limit: int = 50) -> list[registry_pb2.AuditRecord]:
        """Audit records, newest first."""
        reply = self._call(
            registry_pb2.HistoryResponse,
            self._stub.History,
            registry_pb2.HistoryRequest(model=model, limit=limit),
        )
        return list(reply.records)

    def report_live_metric(
        self, model: str, version: int, metric: str, value: float, window_events: int = 0
    ) -> registry_pb2.ReportLiveMetricResponse:
        """Report a served version's live metric (may trigger a policy rollback)."""
        return self._call(
            registry_pb2.ReportLiveMetricResponse,
            self._stub.ReportLiveMetric,
            registry_pb2.ReportLiveMetricRequest(
                model=model,
                version=version,
                metric=metric,
                value=value,
                window_events=window_events,
            ),
        )

    def list_models(self, page_size: int = 100) -> list[registry_pb2.Model]:
        """Every model (all pages)."""
        models, token = [], ""
        while True:
            reply = self._call(
                registry_pb2.ListModelsResponse,
                self._stub.ListModels,
                registry_pb2.ListModelsRequest(page_size=page_size, page_token=token),
            )
            models += list(reply.models)
            token = reply.next_page_token
            if not token:
                return models

    def watch(self, model: str = "", after_sequence: int = 0) -> Iterator[events_pb2.ModelEvent]:
        """Stream events (cancel by closing the client or breaking out of the loop)."""
        try:
            yield from self._stub.Watch(
                registry_pb2.WatchRequest(model=model, after_sequence=after_sequence)
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise error_from_rpc(exc) from None
