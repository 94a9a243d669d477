"""`python -m services.joiner`: settings -> logging -> build -> run (SIGTERM drains)."""

from __future__ import annotations

import logging

from services.joiner.app import build, run
from services.joiner.settings import JoinerSettings
from shared.errors import StreamlearnError
from shared.lifecycle import settle_heap, stop_on_signals
from shared.logs import configure_logging

log = logging.getLogger("services.joiner")


def main() -> None:
    """Join until SIGTERM or SIGINT; exit 1 when a transaction fails or settings are refused."""
    settings = JoinerSettings()
    configure_logging("joiner", settings.log_level, json_format=settings.log_json)
    stop = stop_on_signals()
    try:
        joiner = build(settings, stop)
        settle_heap()
        run(joiner, stop)
    except StreamlearnError as exc:
        log.critical("joiner stopped on an error", extra={"error": str(exc)})
        raise SystemExit(f"joiner stopped: {exc}") from None


if __name__ == "__main__":
    main()
