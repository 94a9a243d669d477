"""`python -m services.ingestion`: settings -> logging -> build -> run (SIGTERM drains)."""

from __future__ import annotations

from services.ingestion.app import build, run
from services.ingestion.settings import IngestionSettings
from shared.lifecycle import STREAM_YOUNG_THRESHOLD, settle_heap, stop_on_signals
from shared.logs import configure_logging


def main() -> None:
    """Route raw samples until SIGTERM or SIGINT."""
    settings = IngestionSettings()
    configure_logging("ingestion", settings.log_level, json_format=settings.log_json)
    stop = stop_on_signals()  # (the faust engine installs its own handlers)
    app = build(settings, stop)
    settle_heap(STREAM_YOUNG_THRESHOLD)
    run(app, stop)


if __name__ == "__main__":
    main()
