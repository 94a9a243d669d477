"""`python -m services.inference`: settings -> logging -> build -> run (SIGTERM drains)."""

from __future__ import annotations

from services.inference.app import build, run
from services.inference.follower import FollowerFailed
from services.inference.settings import InferenceSettings
from shared.lifecycle import settle_heap, stop_on_signals
from shared.logs import configure_logging


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = InferenceSettings()
    configure_logging("inference", settings.log_level, json_format=settings.log_json)
    stop = stop_on_signals()
    try:
        service = build(settings)
        settle_heap()
        run(service, stop)
    except FollowerFailed:  # logged; the supervisor (or Kubernetes) restarts the process
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
