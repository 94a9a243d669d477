"""`python -m services.trainer`: settings -> logging -> build -> run (SIGTERM checkpoints)."""

from __future__ import annotations

from services.trainer.app import run
from services.trainer.settings import TrainerSettings
from shared.lifecycle import stop_on_signals
from shared.logs import configure_logging


def main() -> None:
    """Train until SIGTERM or SIGINT."""
    settings = TrainerSettings()
    configure_logging("trainer", settings.log_level, json_format=settings.log_json)
    run(settings, stop_on_signals())


if __name__ == "__main__":
    main()
