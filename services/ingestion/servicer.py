"""gRPC `Ingestion` servicer: protobuf at the edge, the router's checks, raw topic out.

Feedback (`IngestRequest.feedback`) is checked with `shared.feedback` and published, keyed by
event id, to the feedback topic, in the same acknowledged write as the request's samples.
"""

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
from shared.feedback import FeedbackProblem, decode_feedback, encode_feedback
from shared.grpc.status import domain_errors
from shared.settings import TopicSettings
from streamlearn.v1 import feedback_pb2, ingest_pb2, ingest_pb2_grpc


class IngestionServicer(ingest_pb2_grpc.IngestionServicer):
    """Answers only once the broker holds every record; invalid requests write nothing."""

    def __init__(
        self,
        router: Router,
        publisher: RawPublisher,
        feedback_topic: str = TopicSettings().feedback,
    ) -> None:
        """A servicer publishing samples with `publisher` and feedback to `feedback_topic`."""
        self._router = router
        self._publisher = publisher
        self._feedback_topic = feedback_topic

    @domain_errors
    def Ingest(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.IngestRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.IngestResponse:
        """Check and publish one request's samples and feedback."""
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
        accepted = records_written = feedback_written = 0
        for index, request in enumerate(requests):
            records, rows = self._checked(request, index, len(written), method)
            feedback = _feedback_records(request, index, len(written), method)
            # One acknowledged write: the answer comes once the broker holds both.
            written += self._publisher.publish_to(
                [(self._publisher.topic, records), (self._feedback_topic, feedback)]
            )
            accepted += rows
            records_written += len(records)
            feedback_written += len(feedback)
        metrics.INGEST_RPCS.labels(method, "OK").inc()
        return ingest_pb2.IngestResponse(
            accepted=accepted,
            records=records_written,
            last_positions=_last(written),
            feedback=feedback_written,
        )

    def _checked(
        self, request: ingest_pb2.IngestRequest, index: int, written: int, method: str
    ) -> tuple[list[Record], int]:
        records = _records(request)
        for position, (_, value, headers) in enumerate(records):
            rejections = self._router.rejections(value, headers)
            if rejections:
                first = rejections[0]
                raise _refused(
                    method,
                    f"request {index}, record {position}: {first.reason.value}: {first.detail} "
                    f"({len(rejections)} rejected; {written} record(s) of earlier requests "
                    "were written)",
                )
        rows = len(request.samples) + len(request.batch.event_ids)
        return records, rows


def _feedback_records(
    request: ingest_pb2.IngestRequest, index: int, written: int, method: str
) -> list[Record]:
    """Each feedback checked (`shared.feedback`), re-encoded canonically, keyed by event id.

    Raises:
        InvalidArgument: a feedback is invalid (the first one named, with its reason).

    """
    records: list[Record] = []
    for position, message in enumerate(request.feedback):
        try:
            checked = decode_feedback(_bytes_of(message))
        except FeedbackProblem as problem:
            raise _refused(
                method,
                f"request {index}, feedback {position}: {problem.reason}: {problem} "
                f"({written} record(s) of earlier requests were written)",
            ) from None
        records.append((checked.event_id.encode(), encode_feedback(checked), []))
    return records


def _bytes_of(message: feedback_pb2.Feedback) -> bytes:
    # The message was parsed by gRPC already; one checked codec decides what is valid.
    return message.SerializeToString()


def _refused(method: str, detail: str) -> InvalidArgument:
    metrics.INGEST_RPCS.labels(method, "INVALID_ARGUMENT").inc()
    return InvalidArgument(detail)


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
