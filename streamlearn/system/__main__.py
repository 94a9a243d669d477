"""`python -m streamlearn.system`: the supervisor that `streamlearn up` starts in the background."""

from __future__ import annotations

import os

from shared.lifecycle import stop_on_signals
from shared.logs import configure_logging
from streamlearn.cli.settings import CliSettings
from streamlearn.system.plan import Layout, local_plan
from streamlearn.system.supervisor import Supervisor


def main() -> None:
    """Supervise the services until SIGTERM or SIGINT, then stop them in reverse order."""
    settings = CliSettings()
    configure_logging("supervisor", "INFO", json_format=True)
    layout = Layout(settings.state_dir)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    layout.pid_file.write_text(str(os.getpid()))
    stop = stop_on_signals()
    try:
        specs = local_plan(settings.state_dir, settings.kafka(), settings.secrets())
        Supervisor(specs, layout.state_file, layout.logs_dir).run(stop)
    finally:
        layout.pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
