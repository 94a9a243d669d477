"""`python -m services.inference`: settings -> logging -> build -> run (SIGTERM drains)."""

from __future__ import annotations

import logging

from services.inference.app import build, run
from services.inference.follower import FollowerFailed
from services.inference.settings import InferenceSettings
from services.inference.workers import WorkerDied, supervise
from shared.errors import ConfigError
from shared.lifecycle import settle_heap, stop_on_signals
from shared.logs import configure_logging

log = logging.getLogger("services.inference")


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = InferenceSettings()
    configure_logging("inference", settings.log_level, json_format=settings.log_json)
    stop = stop_on_signals()
    if settings.workers > 1:
        try:
            supervise(settings, stop)
        except (WorkerDied, ConfigError) as exc:
            log.critical("inference workers stopped", extra={"error": str(exc)})
            raise SystemExit(f"inference workers stopped: {exc}") from None
        return
    try:
        service = build(settings)
        settle_heap()
        run(service, stop)
    except FollowerFailed:  # logged; the supervisor (or Kubernetes) restarts the process
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
