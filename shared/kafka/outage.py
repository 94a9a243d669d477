"""librdkafka's log lines through Python `logging`, with a broker outage reported once.

librdkafka logs a `FAIL` line (and calls `error_cb`) for every reconnect attempt: a broker
restart prints dozens. `ConnectionLog` stands in as the client's `logger`: the first
failure of an outage is one WARNING on `streamlearn.kafka`, the attempts that follow are
DEBUG, and the end of the outage (a delivery, or statistics showing a broker up again) is
one WARNING with the time it lasted. Everything else librdkafka logs passes through, on
the child logger `streamlearn.kafka.client` (which a CLI may quiet on its own).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError

LOGGER = "streamlearn.kafka"
CLIENT_LOGGER = f"{LOGGER}.client"
# librdkafka facilities and error texts that mean "cannot reach a broker".
_FAIL_FACILITIES = frozenset({"FAIL", "ERROR"})
_FAIL_TEXTS = ("Connect to", "Disconnected", "brokers are down", "Connection refused", "timed out")
# Without statistics, a quiet gap this long between failures ends an outage silently, so
# that the next one is reported again (librdkafka retries at least every 10 s by default).
QUIET_GAP_S = 30.0
_TRANSPORT_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})


class ConnectionLog:
    """The `logger` (and optionally `error_cb`, `stats_cb`) of one librdkafka client."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(LOGGER)
        self._client_log = logging.getLogger(f"{self._log.name}.client")
        self._lock = threading.Lock()  # librdkafka may call from its own threads
        self._down_since: float | None = None  # monotonic start of the current outage
        self._last_failure = 0.0
        self._attempts = 0
        self._up: bool | None = None  # what the last statistics said; None: not known yet

    @property
    def connected(self) -> bool:
        """A broker was reachable at the last sign (statistics or a delivery), none failed since."""
        return self._down_since is None and bool(self._up)

    @property
    def in_outage(self) -> bool:
        """A connection failure was seen and no recovery since."""
        return self._down_since is not None

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """The method librdkafka calls: `log(level, "%s [%s] %s", facility, client, text)`."""
        facility, text = (args[0], args[-1]) if len(args) >= 3 else ("", fmt % args)
        if facility in _FAIL_FACILITIES and any(t in str(text) for t in _FAIL_TEXTS):
            self.failed(str(text))
        else:
            self._client_log.log(level, fmt, *args)

    def error(self, err: Any) -> None:
        """An `error_cb`: transport errors are outage signs, others are logged as errors."""
        text = err.str()
        if any(t in text for t in _FAIL_TEXTS) or err.code() in _TRANSPORT_CODES:
            self.failed(text)
        else:
            self._log.error("Kafka error: %s", text)

    def stats(self, document: str) -> None:
        """A `stats_cb`: a broker in state UP ends an outage."""
        brokers = json.loads(document).get("brokers", {}).values()
        self._up = any(b.get("state") == "UP" for b in brokers)
        if self._up:
            self.recovered()

    def failed(self, reason: str) -> None:
        """A connection attempt failed: the first of an outage is logged, the rest counted."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is not None and now - self._last_failure > QUIET_GAP_S:
                self._down_since = None  # an old outage nobody saw end: a new one starts
            self._last_failure = now
            self._up = False
            if self._down_since is not None:
                self._attempts += 1
                first = False
            else:
                self._down_since, self._attempts, first = now, 1, True
        if first:
            self._log.warning(
                "Kafka unreachable: %s (retrying; reported once until it is back)", reason
            )
        else:
            self._log.debug("Kafka still unreachable: %s", reason)

    def recovered(self) -> None:
        """A broker answered (a delivery, statistics): log the end of an outage, if any."""
        with self._lock:
            self._up = True
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            attempts, self._down_since = self._attempts, None
        self._log.warning(
            "Kafka reachable again after %.1f s (%d failed connection attempts)",
            lasted,
            attempts,
            extra={"outage_s": round(lasted, 3), "attempts": attempts},
        )

    def client_config(self, statistics_ms: int = 1000) -> dict[str, Any]:
        """The librdkafka properties that route this client's logs, errors and statistics here."""
        return {
            "logger": self,
            "error_cb": self.error,
            "stats_cb": self.stats,
            "statistics.interval.ms": statistics_ms,
        }
