"""Which records a trainer learns, and how they are cut into mini-batches (transport-free).

A trainer learns the streams it is configured for; the training topic may carry others,
whose records are skipped and counted, never learned. Mini-batches are cut per partition
from that partition's learned records alone, so a mini-batch never mixes partitions and
its boundaries are a function of the partition's records, whatever the fetch sizes or the
interleaving of partitions: a restart from a checkpoint (whose offsets always fall on a
cut of every partition) repeats every mini-batch exactly. The order in which mini-batches
of *different* partitions are learned follows the fetches, as Kafka orders nothing across
partitions. The live trainer and replay both go through `Batcher`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf.message import DecodeError

from services.trainer import wire
from shared import samples
from streamlearn.v1 import sample_pb2

if TYPE_CHECKING:  # records arrive as confluent-kafka messages; this module never reads Kafka
    from confluent_kafka import Message

log = logging.getLogger(__name__)

# Stream names of skipped records become metric labels: past this many distinct names
# (garbage on the topic) they share one label, so label cardinality stays bounded.
MAX_STREAM_LABELS = 64
OTHER_STREAMS = "<other>"


def partition_key(msg: Message) -> str:
    """`topic:partition`, the key of offsets in checkpoints."""
    return f"{msg.topic()}:{msg.partition()}"


class StreamFilter:
    """Keeps the records of the wanted streams; reports the others by stream name.

    A record whose stream cannot be read (it is not a valid Sample/SampleBatch) is kept:
    the decoder turns it into a row the learner's guard skips and counts, as before.
    """

    def __init__(
        self, streams: Collection[str], on_skip: Callable[[str, int], None] | None = None
    ) -> None:
        encoded = [s.encode() for s in streams]
        self.streams = frozenset(streams)
        self._wanted = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._wanted_ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self._on_skip = on_skip
        self._seen: set[str] = set()  # streams already logged as skipped

    def keep(self, records: Sequence[Message]) -> list[bool]:
        """Per record, whether it is to be learned."""
        return self.keep_array(records).tolist()  # type: ignore[no-any-return]

    def keep_array(self, records: Sequence[Message]) -> np.ndarray:
        """`keep` as a boolean array (no Python object per record)."""
        n = len(records)
        if n == 0:
            return np.zeros(0, dtype=bool)
        values = [m.value() or b"" for m in records]
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        ends = np.cumsum(lengths)
        batch = samples.batch_flags(records)
        fields = np.where(batch, wire.BATCH_STREAM, wire.SAMPLE_STREAM).astype(np.int64)
        buf = np.frombuffer(b"".join(values), dtype=np.uint8)
        found = np.empty(n, dtype=np.int64)
        spans = np.empty((n, 2), dtype=np.int64)
        wire.match_streams(
            buf, ends - lengths, ends, fields, self._wanted, self._wanted_ends, found, spans
        )
        keep = found >= 0
        skipped: dict[str, int] = {}
        for i in map(int, np.flatnonzero(~keep)):
            stream = _scanned_name(buf, spans[i]) if found[i] != wire.UNREADABLE else None
            if stream is None:  # protobuf is the judge of what the scan could not read
                stream = _stream_slowly(values[i], batch[i])
                if stream is None or stream in self.streams:
                    keep[i] = True  # undecodable (the guard counts it) or ours after all
                    continue
            skipped[stream] = skipped.get(stream, 0) + 1
        for stream, count in skipped.items():
            self._skipped(stream, count)
        return keep

    def _skipped(self, stream: str, count: int) -> None:
        if stream not in self._seen and len(self._seen) < MAX_STREAM_LABELS:
            self._seen.add(stream)
            log.warning(
                "skipping records of a stream this trainer does not learn",
                extra={"stream": stream, "learns": sorted(self.streams)},
            )
        label = stream if stream in self._seen else OTHER_STREAMS
        if self._on_skip is not None:
            self._on_skip(label, count)


def _scanned_name(buf: np.ndarray, span: np.ndarray) -> str | None:
    """The stream name the scan found, or None when it is not UTF-8.

    Protobuf refuses such a record, so it is no other stream's: the guard counts it.
    """
    try:
        return bytes(buf[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _stream_slowly(value: bytes, batch: bool) -> str | None:
    """The stream of a record the wire scanner could not read, or None if undecodable."""
    kind = sample_pb2.SampleBatch if batch else sample_pb2.Sample
    try:
        return kind.FromString(value).stream
    except DecodeError:  # undecodable: the decoder makes it a row the guard counts
        return None


class Batcher:
    """Messages in consume order -> mini-batch segments to learn, cut per partition.

    Messages not learned yet (an incomplete mini-batch) are held per partition. A partition
    with nothing held is `settled`: every record read from it was learned or skipped, so
    its position may move past skipped records.
    """

    def __init__(self, size: int, streams: StreamFilter | None) -> None:
        """Mini-batches of `size` from the records `streams` keeps (None: every record)."""
        self.size = size
        self.streams = streams
        self._pending: dict[str, list[Message]] = {}
        self._read_to: dict[str, int] = {}  # per partition: offset after the last record read

    def add(self, records: Sequence[Message]) -> list[list[Message]]:
        """Segments of whole mini-batches ready to learn, partition by partition."""
        if not records:
            return []
        wanted = self.streams.keep_array(records) if self.streams else None
        segments: list[list[Message]] = []
        for key, kept, read_to in _by_partition(records, wanted):
            self._read_to[key] = read_to
            if kept:
                cut, self._pending[key] = mini_batch_cut(
                    self._pending.get(key, []) + kept, self.size
                )
                segments += cut
        return segments

    def settled(self) -> dict[str, int]:
        """Per partition with nothing held back: the offset after everything read from it."""
        return {k: o for k, o in self._read_to.items() if not self._pending.get(k)}

    def drop(self, keys: Collection[str] | None = None) -> None:
        """Forget what was read of these partitions (all if None): they will be re-read."""
        for key in list(self._read_to if keys is None else keys):
            self._pending.pop(key, None)
            self._read_to.pop(key, None)
        if keys is None:
            self._pending.clear()

    @property
    def pending(self) -> int:
        """Messages held back, all partitions together."""
        return sum(len(p) for p in self._pending.values())


def _by_partition(
    records: Sequence[Message], wanted: np.ndarray | None
) -> list[tuple[str, list[Message], int]]:
    """Per partition: its key, its wanted records, the offset after its last record read.

    Partitions come in the order of their first wanted record (those with none last).

    Reads each record's partition (and topic) once: at a million records a second, a key
    string per record cost more than learning them.
    """
    partitions = np.fromiter((m.partition() for m in records), dtype=np.int64, count=len(records))
    topics = {m.topic() for m in records}
    if len(topics) == 1:
        topic = topics.pop()
        codes = partitions
        names = {int(p): f"{topic}:{p}" for p in np.unique(partitions)}
    else:  # several topics: one code per topic:partition (rare: a trainer reads one topic)
        keys = [partition_key(m) for m in records]
        names = dict(enumerate(dict.fromkeys(keys)))
        index = {k: i for i, k in names.items()}
        codes = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    out: list[tuple[str, list[Message], int]] = []
    first_kept: list[int] = []  # per partition: the index of its first wanted record
    for code in dict.fromkeys(codes.tolist()):
        rows = np.flatnonzero(codes == code)
        chosen = rows if wanted is None else rows[wanted[rows]]
        kept = (
            list(records) if len(chosen) == len(records) else [records[i] for i in chosen.tolist()]
        )
        first_kept.append(int(chosen[0]) if len(chosen) else len(records))
        out.append((names[code], kept, int(records[int(rows[-1])].offset() or 0) + 1))
    if len(out) > 1:  # learned in order of each partition's first record learned
        order = sorted(range(len(out)), key=first_kept.__getitem__)
        out = [out[i] for i in order]
    return out


def mini_batch_cut(
    ready: Sequence[Message], size: int
) -> tuple[list[list[Message]], list[Message]]:
    """(segments to learn now, records to hold back) so mini-batches never depend on polling.

    Mini-batches are counted from the last cut: held-back single samples wait for a full
    mini-batch, and a batch record (many rows) always ends a segment, its last mini-batch
    possibly short. The grouping is thus a function of the records alone, and a restart from
    a checkpoint (always taken at a cut) repeats it exactly. Give it one partition's records
    (as `Batcher` does): across partitions, the order of records depends on the fetches.
    """
    ready = list(ready)
    if size == 1:
        return ([ready] if ready else []), []
    segments, start = [], 0
    for i, message in enumerate(ready):
        if samples.is_batch(samples.headers_of(message)):
            segments.append(ready[start : i + 1])
            start = i + 1
    tail = ready[start:]
    usable = len(tail) - len(tail) % size
    if usable:
        segments.append(tail[:usable])
    return segments, tail[usable:]
