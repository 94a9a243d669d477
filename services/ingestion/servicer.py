"""gRPC `Ingestion` servicer: protobuf at the edge, the router's checks, raw topic out."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from confluent_kafka import Message

from services.ingestion import metrics
from services.ingestion.names import SERVICE as SERVICE
from services.ingestion.publisher import RawPublisher, Record
from services.ingestion.router import Router
from shared import samples
from shared.errors import InvalidArgument
from shared.grpc.status import domain_errors
from streamlearn.v1 import ingest_pb2, ingest_pb2_grpc


class IngestionServicer(ingest_pb2_grpc.IngestionServicer):
    """Answers only once the broker holds every record; invalid requests write nothing."""

    def __init__(self, router: Router, publisher: RawPublisher) -> None:
        self._router = router
        self._publisher = publisher

    @domain_errors
    def Ingest(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.IngestRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.IngestResponse:
        """Check and publish one request's samples."""
        return self._ingest([request], "Ingest")

    @domain_errors
    def IngestStream(  # noqa: N802 - gRPC method name
        self, requests: Iterable[ingest_pb2.IngestRequest], context: grpc.ServicerContext
    ) -> ingest_pb2.IngestResponse:
        """Check and publish each request of the stream as it arrives."""
        return self._ingest(requests, "IngestStream")

    def _ingest(
        self, requests: Iterable[ingest_pb2.IngestRequest], method: str
    ) -> ingest_pb2.IngestResponse:
        written: list[Message] = []
        accepted = 0
        for index, request in enumerate(requests):
            records, rows = self._checked(request, index, len(written))
            written += self._publisher.publish(records)
            accepted += rows
        metrics.INGEST_RPCS.labels(method, "OK").inc()
        return ingest_pb2.IngestResponse(
            accepted=accepted, records=len(written), last_positions=_last(written)
        )

    def _checked(
        self, request: ingest_pb2.IngestRequest, index: int, written: int
    ) -> tuple[list[Record], int]:
        records = _records(request)
        for position, (_, value, headers) in enumerate(records):
            rejections = self._router.rejections(value, headers)
            if rejections:
                metrics.INGEST_RPCS.labels(
                    "Ingest" if index == 0 else "IngestStream", "INVALID_ARGUMENT"
                ).inc()
                first = rejections[0]
                raise InvalidArgument(
                    f"request {index}, record {position}: {first.reason.value}: {first.detail} "
                    f"({len(rejections)} rejected; {written} record(s) of earlier requests "
                    "were written)"
                )
        rows = len(request.samples) + len(request.batch.event_ids)
        return records, rows


def _records(request: ingest_pb2.IngestRequest) -> list[Record]:
    records: list[Record] = [
        (s.key.encode(), s.SerializeToString(), [(samples.CONTENT_TYPE, samples.SAMPLE_TYPE)])
        for s in request.samples
    ]
    if request.HasField("batch"):
        batch = request.batch
        key = batch.keys[0].encode() if batch.keys else None
        records.append(
            (key, batch.SerializeToString(), [(samples.CONTENT_TYPE, samples.BATCH_TYPE)])
        )
    return records


def _last(written: list[Message]) -> list[ingest_pb2.RecordPosition]:
    last: dict[tuple[str, int], int] = {}
    for msg in written:
        key = (msg.topic() or "", msg.partition() or 0)
        last[key] = max(last.get(key, -1), msg.offset() or 0)
    return [
        ingest_pb2.RecordPosition(topic=t, partition=p, offset=o)
        for (t, p), o in sorted(last.items())
    ]
