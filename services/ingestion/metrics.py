"""Prometheus metrics of ingestion: what was accepted, rejected and why, lag and latency."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from services.ingestion.router import Output

ACCEPTED = Counter("streamlearn_ingestion_accepted_total", "Samples routed to training", ["stream"])
REJECTED = Counter(
    "streamlearn_ingestion_rejected_total", "Samples routed to the dead letters", ["reason"]
)
DUPLICATES = Counter(
    "streamlearn_ingestion_duplicates_total", "Samples whose event id was already accepted"
)
REDELIVERED = Counter(
    "streamlearn_ingestion_redeliveries_skipped_total",
    "Raw records skipped because an earlier run had routed them (after a crash or rebalance)",
)
LAG = Gauge("streamlearn_ingestion_lag_records", "Raw records not yet processed", ["partition"])
LATENCY = Histogram(
    "streamlearn_ingestion_processing_seconds",
    "Time to validate and route one raw record",
    buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5),
)
UNROUTABLE = Gauge(
    "streamlearn_ingestion_unroutable_partition",
    "1 while a raw partition's records are held: its outputs lack the partition or its "
    "memory cannot be recovered (see the error log)",
    ["partition"],
)
RECOVERY_FAILURES = Counter(
    "streamlearn_ingestion_recovery_failures_total",
    "Failed attempts to prepare a raw partition (output partitions, memory recovery)",
)
DEDUP_IDS = Gauge(
    "streamlearn_ingestion_dedup_ids",
    "Event ids in a partition's de-duplication memory",
    ["partition"],
)
DEDUP_CUT_SHORT = Gauge(
    "streamlearn_ingestion_dedup_cut_short",
    "Event ids forgotten before the end of their window (INGESTION_DEDUP_MAX_IDS reached), "
    "since the partition was assigned",
    ["partition"],
)
INGEST_RPCS = Counter(
    "streamlearn_ingestion_grpc_requests_total", "gRPC Ingest requests", ["method", "code"]
)


def count(outputs: list[Output]) -> None:
    """Count the outputs of one raw record."""
    if not outputs:
        REDELIVERED.inc()
    for output in outputs:
        if output.rejection is None:
            ACCEPTED.labels(output.stream or "-").inc(output.rows)
        else:
            REJECTED.labels(output.rejection.reason.value).inc(output.rows)
            if output.rejection.reason.value == "duplicate":
                DUPLICATES.inc(output.rows)


def tally(accepted: Mapping[str, int], rejected: Mapping[str, int], skipped: int) -> None:
    """Count the outputs of a batch of raw records at once (one call per label, not per record).

    `accepted` rows per stream, `rejected` rows per reason, `skipped` raw records an earlier
    run had routed.
    """
    for stream, rows in accepted.items():
        ACCEPTED.labels(stream).inc(rows)
    for reason, rows in rejected.items():
        REJECTED.labels(reason).inc(rows)
    if duplicates := rejected.get("duplicate", 0):
        DUPLICATES.inc(duplicates)
    if skipped:
        REDELIVERED.inc(skipped)
