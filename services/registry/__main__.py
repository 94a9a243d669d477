"""`python -m services.registry`: settings -> logging -> build -> run (SIGTERM drains)."""

from __future__ import annotations

from services.registry.app import build, run
from services.registry.settings import RegistrySettings
from shared.lifecycle import settle_heap, stop_on_signals
from shared.logs import configure_logging


def main() -> None:
    """Run the registry until SIGTERM or SIGINT."""
    settings = RegistrySettings()
    configure_logging("registry", settings.log_level, json_format=settings.log_json)
    stop = stop_on_signals()
    service = build(settings)
    settle_heap()
    run(service, stop)


if __name__ == "__main__":
    main()
