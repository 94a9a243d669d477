"""librdkafka's log lines through Python `logging`, with a broker outage reported once.

librdkafka logs a `FAIL` line (and calls `error_cb`) for every reconnect attempt: a broker
restart prints dozens. `ConnectionLog` stands in as the client's `logger` (and `error_cb`,
`stats_cb` where given): the first failure of an outage is one WARNING on
`streamlearn.kafka`, the attempts that follow are DEBUG, and the end of the outage (a
delivery, or statistics showing a broker up) is one WARNING with the time it lasted.
Everything else librdkafka logs passes through, on the child logger `streamlearn.kafka.client`
(which a CLI may quiet on its own).

State is kept per broker (`host:port`): an outage is a failure while no broker is known to
be up. One broker of several failing is one INFO line, and its return another; routine
disconnects (a broker closing an idle connection) only mark that broker not connected.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

from confluent_kafka import KafkaError

LOGGER = "streamlearn.kafka"
CLIENT_LOGGER = f"{LOGGER}.client"
# librdkafka facilities and error texts that mean "a connection to a broker failed".
_FAIL_FACILITIES = frozenset({"FAIL", "ERROR"})
_FAIL_TEXTS = ("Connect to", "brokers are down", "Connection refused", "timed out")
# A closed connection: routine when the broker reaps an idle one; a real outage is followed
# by failed connects, so this alone never starts one.
_DISCONNECTED = "Disconnected"
# `[thrd:...]: [scheme://]host:port/id: text`, how librdkafka names the broker of a line.
_BROKER = re.compile(r"^(?:\[thrd:[^\]]*\]: )?(?:[a-z_]+://)?(?P<node>[^\s/]+:\d+)/\S*: ")
# Without a positive sign (statistics, deliveries), a quiet gap this long between failures
# ends an outage silently, so that the next one is reported again (librdkafka retries at
# least every 10 s by default).
QUIET_GAP_S = 30.0
# Statistics interval of service consumers: they poll all the time, so statistics cost a
# JSON document per interval and tell when brokers are back.
SERVICE_STATISTICS_MS = 5000
_TRANSPORT_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})


def broker_of(text: str) -> str | None:
    """The `host:port` a librdkafka line is about, None when it names no broker."""
    found = _BROKER.match(text)
    return found.group("node") if found else None


class ConnectionLog:
    """The `logger` (and optionally `error_cb`, `stats_cb`) of librdkafka clients."""

    def __init__(
        self, logger: logging.Logger | None = None, quiet_gap_s: float | None = QUIET_GAP_S
    ) -> None:
        """Report on `logger` (default `streamlearn.kafka`).

        Args:
            logger: Where outage lines go; librdkafka's other lines go to its `.client` child.
            quiet_gap_s: A gap this long between failures ends an outage silently (for
                clients that see no deliveries or statistics); None: only a sign of a
                broker up ends one. Events are served when the client polls, so a client
                not polled for a while sees its failures late, in a burst.

        """
        self._quiet_gap_s = quiet_gap_s
        self._log = logger or logging.getLogger(LOGGER)
        self._client_log = logging.getLogger(f"{self._log.name}.client")
        self._lock = threading.Lock()  # librdkafka may call from its own threads
        self._down_since: float | None = None  # monotonic start of the current outage
        self._last_failure = 0.0
        self._attempts = 0
        self._up: set[str] = set()  # brokers the last statistics showed UP
        self._down: set[str] = set()  # brokers failing while others were up
        self._answered = False  # a delivery since the last failure

    @property
    def connected(self) -> bool:
        """A broker answered at the last sign (statistics or a delivery), none failed since."""
        with self._lock:
            return self._down_since is None and (bool(self._up) or self._answered)

    @property
    def in_outage(self) -> bool:
        """A connection failure was seen while no broker was up, and no recovery since."""
        return self._down_since is not None

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """The method librdkafka calls: `log(level, "%s [%s] %s", facility, client, text)`."""
        facility, text = (args[0], str(args[-1])) if len(args) >= 3 else ("", fmt % args)
        if facility in _FAIL_FACILITIES and _DISCONNECTED in text:
            self.disconnected(text)
            self._client_log.debug(fmt, *args)
        elif facility in _FAIL_FACILITIES and any(t in text for t in _FAIL_TEXTS):
            self.failed(text)
        else:
            self._client_log.log(level, fmt, *args)

    def error(self, err: Any) -> None:
        """An `error_cb`: transport errors are outage signs, others are logged as errors."""
        text = err.str()
        if _DISCONNECTED in text:
            self.disconnected(text)
        elif any(t in text for t in _FAIL_TEXTS) or err.code() in _TRANSPORT_CODES:
            self.failed(text)
        else:
            self._log.error("Kafka error: %s", text)

    def stats(self, document: str) -> None:
        """A `stats_cb`: each broker's state; one UP ends an outage."""
        brokers = json.loads(document).get("brokers", {}).values()
        states: dict[str, bool] = {}
        for b in brokers:
            node = b.get("nodename") or str(b.get("name", "")).split("/")[0]
            states[node] = states.get(node, False) or b.get("state") == "UP"
        back: list[str] = []
        with self._lock:
            self._up = {node for node, up in states.items() if up}
            back = sorted(self._down & self._up)
            self._down -= self._up
        for node in back:
            self._log.info("Kafka broker %s reachable again", node)
        if self._up:
            self.recovered()

    def disconnected(self, text: str) -> None:
        """A connection closed (e.g. an idle one reaped): that broker is no longer known up."""
        node = broker_of(text)
        with self._lock:
            self._up.discard(node or "")

    def failed(self, reason: str) -> None:
        """A connection attempt failed: an outage when no other broker is up.

        The first failure of an outage is logged, the rest counted.
        """
        node = broker_of(reason)
        now = time.monotonic()
        first = first_of_broker = False
        with self._lock:
            if node is not None:
                self._up.discard(node)
            if self._up:  # another broker serves: this one's failure is no outage
                first_of_broker = node is not None and node not in self._down
                if node is not None:
                    self._down.add(node)
                outage = False
            else:
                outage = True
                if node is not None:
                    self._down.discard(node)
                gap = self._quiet_gap_s
                if self._down_since is not None and gap and now - self._last_failure > gap:
                    self._down_since = None  # an old outage nobody saw end: a new one starts
                self._last_failure = now
                self._answered = False
                if self._down_since is not None:
                    self._attempts += 1
                else:
                    self._down_since, self._attempts, first = now, 1, True
        if not outage:
            level = logging.INFO if first_of_broker else logging.DEBUG
            self._log.log(level, "Kafka broker %s unreachable (others are up): %s", node, reason)
        elif first:
            self._log.warning(
                "Kafka unreachable: %s (retrying; reported once until it is back)", reason
            )
        else:
            self._log.debug("Kafka still unreachable: %s", reason)

    def recovered(self) -> None:
        """A broker answered (a delivery, statistics): log the end of an outage, if any."""
        with self._lock:
            self._answered = True
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

    def client_config(self, statistics_ms: int = 0) -> dict[str, Any]:
        """The librdkafka properties that route this client's logs and errors here.

        Args:
            statistics_ms: Also statistics every this many ms (0: none). Only for a client
                that polls all the time: librdkafka queues each statistics event until the
                next poll, so an idle client would pile them up.

        """
        config: dict[str, Any] = {"logger": self, "error_cb": self.error}
        if statistics_ms:
            config |= {"stats_cb": self.stats, "statistics.interval.ms": statistics_ms}
        return config


_PROCESS_LOG: ConnectionLog | None = None
_PROCESS_LOCK = threading.Lock()


def process_log() -> ConnectionLog:
    """The one `ConnectionLog` of a service process: one outage line for all its clients."""
    global _PROCESS_LOG
    with _PROCESS_LOCK:
        if _PROCESS_LOG is None:
            _PROCESS_LOG = ConnectionLog()
        return _PROCESS_LOG
