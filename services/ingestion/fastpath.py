"""Routing a batch of one raw partition's records, valid single samples at compiled speed.

Transport-free. `BatchRouter.route` gives, record by record and in order, exactly what
`Router.route` gives for it with the same memory: a valid `Sample` (the bulk of the traffic)
is recognised from its wire bytes by the compiled scan (`scan`), checked against its stream
in array operations for the whole batch, de-duplicated with one lookup per batch of the
memory's settled ids, and accepted as a training record (`Accepted`: no protobuf object,
no Python object per field). Every other record - a batch, an invalid or duplicate sample,
anything the scan declines, and every record while the partition has inputs an earlier run
routed - is routed by `Router.route`, which names the reason.

The fast path only ever accepts what the router would accept, with the same output bytes,
headers and memory change (tested against the router on fuzzed records).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.ingestion import scan
from services.ingestion.dedup import PartitionMemory
from services.ingestion.limits import HEADER_OVERHEAD, RECORD_OVERHEAD, headers_size
from services.ingestion.router import Output, RawRecord, Router
from services.ingestion.scan import Col
from shared import samples
from streamlearn.v1 import stream_pb2

KIND = stream_pb2.LabelKind
_EXPECTED = {  # the label a stream's samples carry (multi-labels: the router's path)
    KIND.LABEL_KIND_REGRESSION: scan.REGRESSION,
    KIND.LABEL_KIND_BINARY: scan.CLASS_INDEX,
    KIND.LABEL_KIND_MULTICLASS: scan.CLASS_INDEX,
}
# Our three headers of a training sample, less their values' variable parts.
_OUR_HEADERS = 3 * HEADER_OVERHEAD + sum(
    len(name) for name in (samples.CONTENT_TYPE, samples.SOURCE, samples.EVENT_ID)
)
_SAMPLE_HEADERS_SIZE = headers_size(samples.SAMPLE_HEADERS)  # the common case's


# A valid sample's training record accepted by the fast path: key, value, headers.
Accepted = tuple[bytes | None, bytes, samples.Headers]
Routed = Accepted | list[Output]


@dataclass
class Routing:
    """What a batch gave, record by record, and the samples accepted per stream."""

    routed: list[Routed]
    accepted: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Incoming:
    """Records of one raw partition, in offset order, as parallel columns."""

    topic: str
    partition: int
    offsets: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None]
    written_at: Sequence[float]  # seconds

    def record(self, i: int) -> RawRecord:
        """Record `i` as the router takes it."""
        headers = self.headers[i]
        return RawRecord(
            self.topic,
            self.partition,
            self.offsets[i],
            self.keys[i],
            self.values[i],
            [(k, v or b"") for k, v in headers] if headers else [],
            self.written_at[i],
        )


class BatchRouter:
    """`Router.route` for a batch of one partition, valid samples on the compiled path."""

    def __init__(self, router: Router, compiled: bool = scan.AVAILABLE) -> None:
        """Route with `router`; `compiled` False routes every record with it (no numba)."""
        self._router = router
        self._compiled = compiled

    def route(self, batch: Incoming, memory: PartitionMemory) -> Routing:
        """What `Router.route` gives for each record of `batch`, in order.

        An `Accepted` (a tuple) stands for the one training `Output` the router would give;
        the samples it accepted are counted per stream in `Routing.accepted`, those of the
        router's outputs are not.
        """
        count = len(batch.offsets)
        if not self._compiled or memory.any_routed_before or not count:
            return Routing([self._router.route(batch.record(i), memory) for i in range(count)])
        now = self._router.now()
        event_ids, streams = self._valid(batch, now)
        routed: list[Routed] = []
        accepted: dict[str, int] = {}
        i = 0
        while i < count:
            if event_ids[i] is None:
                routed.append(self._router.route(batch.record(i), memory))
                i += 1
                continue
            end = i + 1  # a run of valid samples, de-duplicated at once
            while end < count and event_ids[end] is not None:
                end += 1
            self._accept_run(batch, memory, i, end, event_ids, streams, now, routed, accepted)
            i = end
        return Routing(routed, accepted)

    def _accept_run(
        self,
        batch: Incoming,
        memory: PartitionMemory,
        start: int,
        end: int,
        event_ids: list[bytes | None],
        streams: list[str],
        now: float,
        routed: list[Routed],
        accepted: dict[str, int],
    ) -> None:
        """Accept records [start, end) (valid samples) unless duplicates: the router names those."""
        ids: list[bytes] = event_ids[start:end]  # type: ignore[assignment]
        offsets = list(batch.offsets[start:end])
        hashes = [hash(e.decode()) for e in ids]
        prefix = f"{batch.topic}:{batch.partition}:"
        keys, values = batch.keys, batch.values
        content_type = (samples.CONTENT_TYPE, samples.SAMPLE_TYPE)
        source, event_id = samples.SOURCE, samples.EVENT_ID  # names looked up once a run
        at = 0
        while at < len(ids):
            new = memory.accept_new(hashes, offsets, now, at)
            for j in range(at, new):
                i = start + j
                headers = [
                    content_type,
                    (source, f"{prefix}{offsets[j]}".encode()),
                    (event_id, ids[j]),
                ]
                routed.append((keys[i], values[i] or b"", headers))
                stream = streams[i]
                accepted[stream] = accepted.get(stream, 0) + 1
            if new < len(ids):  # a duplicate, in its turn: its dead letter is the router's
                routed.append(self._router.route(batch.record(start + new), memory))
                new += 1
            at = new

    def _valid(self, batch: Incoming, now: float) -> tuple[list[bytes | None], list[str]]:
        """Per record, its event id when it is a valid sample (duplicates aside), and stream."""
        count = len(batch.offsets)
        values = [v or b"" for v in batch.values]
        joined, rows = scan.scan(values)
        columns = rows.T.tolist()  # Python ints: cheaper than numpy scalars in the loops
        simple = np.flatnonzero(rows[:, Col.SIMPLE]).tolist()
        starts, stops = columns[Col.STREAM_START], columns[Col.STREAM_STOP]
        names: dict[bytes, int] = {}
        code_list = [-1] * count
        for i in simple:
            code_list[i] = names.setdefault(joined[starts[i] : stops[i]], len(names))
        codes = np.asarray(code_list, dtype=np.int64)
        ok = self._acceptable(rows, codes, names, max(batch.written_at), now)
        event_ids: list[bytes | None] = [None] * count
        streams = [""] * count
        spare = self._router.max_bytes - RECORD_OVERHEAD - _OUR_HEADERS - len(batch.topic) - 42
        ours = len(samples.SAMPLE_TYPE)
        stream_names = {code: name.decode() for name, code in names.items()}
        id_starts, id_stops = columns[Col.EVENT_ID_START], columns[Col.EVENT_ID_STOP]
        keys, all_headers = batch.keys, batch.headers
        for i in np.flatnonzero(ok).tolist():
            headers = all_headers[i]
            theirs = 0
            if headers == samples.SAMPLE_HEADERS:  # the common case: one comparison
                theirs = _SAMPLE_HEADERS_SIZE
            elif headers:
                if not _sample_headers(headers):
                    continue
                theirs = headers_size(headers)
            event_id = joined[id_starts[i] : id_stops[i]]
            size = len(values[i]) + len(keys[i] or b"") + max(theirs, len(event_id) + ours)
            if size <= spare:  # within the limit with room for our headers: never cut
                event_ids[i] = event_id
                streams[i] = stream_names[code_list[i]]
        return event_ids, streams

    def _acceptable(
        self,
        rows: np.ndarray,
        codes: np.ndarray,
        names: dict[bytes, int],
        written: float,
        now: float,
    ) -> np.ndarray:
        """Which scanned rows pass every rule of their stream (array operations)."""
        # Per stream (the last entry: none): dense dim, expected label, classes, the text
        # limit (0: not a text stream); -1 unknown.
        table = np.full((len(names) + 1, 4), -1, dtype=np.int64)
        for name, code in names.items():
            definition = self._router.lookup(name.decode(), written)
            expected = _expected_label(definition) if definition is not None else None
            if definition is not None and expected is not None:
                binary = definition.label_kind == KIND.LABEL_KIND_BINARY
                classes = 2 if binary else definition.num_classes
                limit = definition.text.max_bytes
                table[code] = definition.dense_dim, expected, classes, limit
        per_row = table[codes]
        limits, now_ms = self._router.limits, int(now * 1000)
        times = rows[:, Col.EVENT_MS]
        labels = rows[:, Col.LABEL]
        dense, text, text_max = rows[:, Col.DENSE], rows[:, Col.TEXT], per_row[:, 3]
        return np.asarray(
            (rows[:, Col.SIMPLE] == 1)
            & (per_row[:, 1] >= 0)
            & (rows[:, Col.SCHEMA] <= 1)
            & (rows[:, Col.EVENT_ID_STOP] > rows[:, Col.EVENT_ID_START])
            # A text stream's samples may have no features; they need text within its limit.
            & ((dense == per_row[:, 0]) | ((text_max > 0) & (dense == 0)))
            & ((text_max == 0) | ((text > 0) & (text <= text_max)))
            & (rows[:, Col.NON_FINITE] == 0)
            & (rows[:, Col.NEGATIVE_WEIGHT] == 0)
            & (labels == per_row[:, 1])
            & ((labels != scan.CLASS_INDEX) | (rows[:, Col.CLASS] < per_row[:, 2]))
            & (
                (times == 0)
                | ((times <= now_ms + limits.max_future_ms) & (times >= now_ms - limits.max_age_ms))
            )
        )


def _expected_label(definition: stream_pb2.StreamDefinition) -> int | None:
    """The label the scan must find on the stream's samples; None: the router decides."""
    if definition.label_kind == KIND.LABEL_KIND_UNSPECIFIED and definition.text.max_bytes > 0:
        return scan.NO_LABEL  # a text stream without a label kind refuses labels
    return _EXPECTED.get(definition.label_kind)


def _sample_headers(headers: Sequence[tuple[str, bytes | None]]) -> bool:
    """Whether the headers mark a `Sample` (no content type, or only ours for a sample)."""
    return all(v == samples.SAMPLE_TYPE for k, v in headers if k == samples.CONTENT_TYPE)
