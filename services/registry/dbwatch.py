"""Follows whether the registry's database answers, so its health says NOT_SERVING while not.

Transport-free: the app turns each change into the gRPC health status of the registry
service, which a readiness probe or a load balancer reads to stop sending calls that could
only fail. The process itself stays up (the liveness status is untouched): the connection
pool reconnects on its own once the database is back, which a restart could not hasten.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shared.errors import Unavailable

log = logging.getLogger(__name__)


class DatabaseWatch:
    """Pings the database every `interval_s` and calls `on_change(reachable)` on each change.

    Args:
        ping: Returns quietly while the database answers; raises Unavailable otherwise.
        on_change: Told True when the database answers again, False when it stops.
        interval_s: Seconds between pings.

    """

    def __init__(
        self,
        ping: Callable[[], None],
        on_change: Callable[[bool], None],
        interval_s: float = 1.0,
    ) -> None:
        self._ping = ping
        self._on_change = on_change
        self._interval_s = interval_s
        self.reachable = True  # the store connected (and migrated) before the watch starts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="database-watch", daemon=True)

    def start(self) -> None:
        """Start pinging in the background."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop pinging (no change is reported after this returns)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def check(self) -> bool:
        """Ping once; report a change of reachability. Returns whether the database answered."""
        try:
            self._ping()
            reachable, why = True, ""
        except Unavailable as exc:
            reachable, why = False, str(exc)
        if reachable != self.reachable:
            self.reachable = reachable
            if reachable:
                log.info("registry database reachable again: serving")
            else:
                log.warning("registry database unreachable: not serving", extra={"error": why})
            self._on_change(reachable)
        return reachable

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.check()
            except Exception:  # a bug in a callback must not end the watch silently
                log.exception("database health check failed")
