"""`python -m services.trainer`: settings -> logging -> build -> run (SIGTERM checkpoints)."""

from __future__ import annotations

import logging

from services.trainer.app import run
from services.trainer.settings import TrainerSettings
from shared.errors import ConfigError, Conflict
from shared.lifecycle import stop_on_signals
from shared.logs import configure_logging

log = logging.getLogger("services.trainer")


def main() -> None:
    """Train until SIGTERM or SIGINT; exit non-zero when refused (settings, a second instance)."""
    settings = TrainerSettings()
    configure_logging("trainer", settings.log_level, json_format=settings.log_json)
    try:
        run(settings, stop_on_signals())
    except (ConfigError, Conflict) as exc:
        log.critical("trainer refused to run", extra={"error": str(exc)})
        raise SystemExit(f"trainer refused to run: {exc}") from None


if __name__ == "__main__":
    main()
