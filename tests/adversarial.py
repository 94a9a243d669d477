"""A corpus of hostile records, the kinds any Kafka client can write, beside valid samples.

Each malformed case names the dead-letter reason ingestion must give it. Whole records carry
the header `adversarial-case` (kept on their dead letter); rejected rows of a batch are found
by their event id. Valid events of two streams with the same feature count are mixed in, so
a test can check that every trainer learns exactly its own stream's events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from shared import samples
from streamlearn.v1 import events_pb2, metrics_pb2, sample_pb2, stream_pb2

CASE = "adversarial-case"
FEATURES = 8
Headers = list[tuple[str, bytes]]


def definition(name: str) -> stream_pb2.StreamDefinition:
    """A binary stream of `FEATURES` dense features."""
    return stream_pb2.StreamDefinition(
        name=name, dense_dim=FEATURES, label_kind=stream_pb2.LABEL_KIND_BINARY
    )


@dataclass(frozen=True)
class Record:
    """One record to write to the raw topic; `value` None is a tombstone."""

    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class BadCase:
    """A malformed whole record and the reason its dead letter must carry."""

    name: str
    reason: str
    record: Record


@dataclass(frozen=True)
class BadRow:
    """A rejected row of an otherwise routed batch, found in the dead letters by event id and
    row (a duplicated row carries the id of the row it repeats)."""

    event_id: str
    row: int
    reason: str


@dataclass
class Corpus:
    """Records in the order to write them, and what routing them must give."""

    records: list[Record] = field(default_factory=list)
    valid: dict[str, list[str]] = field(default_factory=dict)  # stream -> event ids
    bad: list[BadCase] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    mixed_batch: Record | None = None  # the batch whose bad rows are `bad_rows`

    @property
    def classes(self) -> set[str]:
        """The distinct kinds of malformed input in the corpus."""
        return {c.name for c in self.bad} | {f"row:{r.reason}" for r in self.bad_rows}


class _Maker:
    """Builds samples and batches with unique event ids under one prefix."""

    def __init__(self, prefix: str, seed: int) -> None:
        self._prefix = prefix
        self._rng = np.random.default_rng(seed)
        self._next = 0

    def event_id(self) -> str:
        self._next += 1
        return f"{self._prefix}-{self._next}"

    def sample(self, stream: str, **overrides: object) -> sample_pb2.Sample:
        fields: dict[str, object] = {
            "schema_version": 1,
            "event_id": self.event_id(),
            "key": f"k{self._next % 7}",
            "stream": stream,
            "dense": self._rng.normal(size=FEATURES).astype(np.float32).tolist(),
            "class_index": int(self._rng.integers(0, 2)),
        }
        fields.update(overrides)
        message = sample_pb2.Sample(**fields)  # type: ignore[arg-type]
        if "event_time" not in overrides:
            message.event_time.FromMilliseconds(int(time.time() * 1000))
        return message

    def columns(self, stream: str, rows: int) -> samples.Columns:
        ids = [self.event_id() for _ in range(rows)]
        return samples.Columns(
            stream,
            ids,
            [f"k{i % 7}" for i in range(rows)],
            np.full(rows, int(time.time() * 1000), dtype=np.int64),
            self._rng.normal(size=(rows, FEATURES)).astype(np.float32),
            self._rng.integers(0, 2, size=rows).astype(np.int32),
            np.ones(rows, dtype=np.float32),
        )


def _sample_record(message: sample_pb2.Sample, case: str = "") -> Record:
    headers: Headers = [(samples.CONTENT_TYPE, samples.SAMPLE_TYPE)]
    if case:
        headers.append((CASE, case.encode()))
    return Record(message.key.encode(), message.SerializeToString(), headers)


def _batch_record(value: bytes, case: str = "", key: bytes = b"batch") -> Record:
    headers: Headers = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]
    if case:
        headers.append((CASE, case.encode()))
    return Record(key, value, headers)


def build(streams: tuple[str, str], prefix: str, oversize: int, seed: int = 0) -> Corpus:
    """Valid samples of both `streams` interleaved with every malformed case.

    Args:
        streams: two defined binary streams of `FEATURES` features each; the bad cases are
            of the first.
        prefix: makes this corpus' event ids unique (a test may build several).
        oversize: a record length over ingestion's size limit.
        seed: the features' random draw.
    """
    make = _Maker(prefix, seed)
    corpus = Corpus(valid={s: [] for s in streams})
    for case in _bad_cases(make, prefix, streams[0], oversize):
        for stream in streams:  # valid singles of both streams between the bad ones
            good = make.sample(stream)
            corpus.records.append(_sample_record(good))
            corpus.valid[stream].append(good.event_id)
        corpus.records.append(case.record)
        corpus.bad.append(case)
    for stream in streams:  # a valid columnar batch of each stream
        columns = make.columns(stream, 20)
        corpus.records.append(_batch_record(samples.encode_batch(columns)))
        corpus.valid[stream] += columns.event_ids
    _add_mixed_batch(make, streams[0], corpus)
    _add_duplicates(corpus, prefix)
    return corpus


def _bad_cases(make: _Maker, prefix: str, stream: str, oversize: int) -> list[BadCase]:
    """One record per kind of malformed input; the case header is set on each."""
    cases: list[tuple[str, str, Record]] = []

    def sample(name: str, reason: str, message: sample_pb2.Sample) -> None:
        cases.append((name, reason, _sample_record(message)))

    def raw(name: str, reason: str, value: bytes | None, headers: Headers | None = None) -> None:
        cases.append((name, reason, Record(b"bad", value, list(headers or []))))

    valid = make.sample(stream)
    sample("missing_event_id", "missing_event_id", make.sample(stream, event_id=""))
    sample("unknown_stream", "unknown_stream", make.sample("no-such-stream"))
    sample("empty_stream_name", "unknown_stream", make.sample(""))
    sample("wrong_dimension", "wrong_dimension", make.sample(stream, dense=[1.0, 2.0]))
    sample("nan_feature", "non_finite", make.sample(stream, dense=[float("nan")] * FEATURES))
    sample("inf_feature", "non_finite", make.sample(stream, dense=[float("inf")] * FEATURES))
    no_label = make.sample(stream)
    no_label.ClearField("class_index")
    sample("missing_label", "missing_label", no_label)
    sample("regression_label", "label_kind_mismatch", make.sample(stream, regression=0.5))
    multi = make.sample(stream)
    multi.multi_label.classes.extend([0, 1])
    sample("multi_label_on_binary", "label_kind_mismatch", multi)
    sample("class_out_of_range", "label_out_of_range", make.sample(stream, class_index=2))
    sample("negative_label", "label_out_of_range", make.sample(stream, class_index=-1))
    sample("negative_weight", "invalid_weight", make.sample(stream, weight=-1.0))
    sample("nan_weight", "non_finite", make.sample(stream, weight=float("nan")))
    sample("inf_weight", "non_finite", make.sample(stream, weight=float("inf")))
    future = make.sample(stream)
    future.event_time.FromSeconds(int(time.time()) + 30 * 86_400)
    sample("future_timestamp", "future_timestamp", future)
    ancient = make.sample(stream)
    ancient.event_time.FromSeconds(1_000_000)
    sample("ancient_timestamp", "ancient_timestamp", ancient)
    sample("schema_version_99", "unsupported_schema", make.sample(stream, schema_version=99))
    sample("oversized_text", "oversized", make.sample(stream, text="x" * oversize))
    raw("random_bytes", "undecodable", b"\x00\xffgarbage\xff\xfe\x01")
    raw("truncated_sample", "undecodable", valid.SerializeToString()[:9])
    raw("empty_value", "empty", b"")
    raw("tombstone", "empty", None)
    json_type = [(samples.CONTENT_TYPE, b"application/json")]
    raw("json_content_type", "unsupported_schema", valid.SerializeToString(), json_type)
    raw("json_body", "unsupported_schema", b'{"event_id": "x", "dense": [1]}', json_type)
    other = [(samples.CONTENT_TYPE, b"application/x-protobuf;type=streamlearn.v1.ModelEvent")]
    event = events_pb2.ModelEvent(model="m", version=3)
    raw("model_event_content_type", "unsupported_schema", event.SerializeToString(), other)
    metrics = metrics_pb2.TrainerMetrics(model="m", stream=stream, events_applied=5)
    raw("trainer_metrics_bytes", "undecodable", metrics.SerializeToString())
    raw("oversized_bytes", "oversized", b"\x00" * oversize)
    _batch_cases(make, stream, cases)
    out = []
    for name, reason, record in cases:
        record.headers.append((CASE, f"{prefix}/{name}".encode()))
        out.append(BadCase(f"{prefix}/{name}", reason, record))
    return out


def _batch_cases(make: _Maker, stream: str, cases: list[tuple[str, str, Record]]) -> None:
    """Columnar batches broken as a whole."""

    def batch(**fields: object) -> bytes:
        columns = make.columns(stream, 4)
        message = sample_pb2.SampleBatch.FromString(samples.encode_batch(columns))
        for name, value in fields.items():
            if isinstance(value, list):
                message.ClearField(name)  # type: ignore[arg-type]
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)
        return message.SerializeToString()

    def add(name: str, reason: str, value: bytes) -> None:
        cases.append((name, reason, _batch_record(value)))

    add("batch_dense_bytes_not_float", "undecodable", batch(dense=b"\x00" * 13))
    add("batch_label_bytes_not_int", "undecodable", batch(class_index=b"\x01\x00\x00"))
    add("batch_weight_bytes_not_float", "undecodable", batch(weights=b"\x00" * 6))
    add("batch_rows_disagree", "undecodable", batch(keys=["a"]))
    add("batch_dense_dim_zero", "undecodable", batch(dense_dim=0))
    add("batch_random_bytes", "undecodable", b"\x12\xff\xff\xff\xff\x0f")
    no_rows = sample_pb2.SampleBatch(schema_version=1, stream=stream, dense_dim=FEATURES)
    add("batch_zero_rows", "empty", no_rows.SerializeToString())
    add("batch_unknown_stream", "unknown_stream", batch(stream="no-such-stream"))
    add("batch_wrong_dimension", "wrong_dimension", batch(dense_dim=4, dense=b"\x00" * 64))
    add("batch_schema_version_99", "unsupported_schema", batch(schema_version=99))
    add("batch_type_with_sample_bytes", "undecodable", make.sample(stream).SerializeToString())


def _add_mixed_batch(make: _Maker, stream: str, corpus: Corpus) -> None:
    """One batch of good rows and rows each broken another way: only the bad rows are dead."""
    columns = make.columns(stream, 12)
    dense, labels, weights = columns.dense.copy(), columns.labels.copy(), columns.weights.copy()
    broken = {1: "non_finite", 4: "label_out_of_range", 7: "invalid_weight", 9: "duplicate"}
    dense[1, 3] = np.nan
    labels[4] = 5
    weights[7] = -2.0
    ids = list(columns.event_ids)
    ids[9] = ids[2]  # the same event id twice within one batch
    mixed = samples.Columns(
        stream, ids, columns.keys, columns.event_time_ms, dense, labels, weights
    )
    corpus.mixed_batch = _batch_record(samples.encode_batch(mixed))
    corpus.records.append(corpus.mixed_batch)
    corpus.valid[stream] += [e for row, e in enumerate(ids) if row not in broken]
    for row, reason in broken.items():
        corpus.bad_rows.append(BadRow(ids[row], row, reason))


def _add_duplicates(corpus: Corpus, prefix: str) -> None:
    """A producer re-sending samples it was unsure about: each repeat is a duplicate."""
    singles = [(samples.CONTENT_TYPE, samples.SAMPLE_TYPE)]
    repeats = [r for r in corpus.records if r.headers == singles][:5]
    for i, record in enumerate(repeats):
        name = f"{prefix}/duplicate_resend_{i}"
        case = Record(record.key, record.value, [*record.headers, (CASE, name.encode())])
        corpus.records.append(case)
        corpus.bad.append(BadCase(name, "duplicate", case))
