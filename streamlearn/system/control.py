"""`streamlearn up` / `down`: the local broker, then the supervisor, until all are ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.errors import ConfigError, Unavailable
from shared.kafka.local import process
from streamlearn.system.status import SUPERVISOR_MODULE as SUPERVISOR_MODULE

# The broker, gRPC and the supervisor are imported by the methods that use them.
if TYPE_CHECKING:
    from shared.settings import KafkaSettings
    from streamlearn.cli.settings import CliSettings
    from streamlearn.system.plan import Layout, ServiceSpec
    from streamlearn.system.secure import LocalSecrets

CRASH_LOOP = 3  # restarts while `up` waits that mean a service cannot start (port taken, ...)


class LocalSystem:
    """The system whose state lives under `settings.state_dir`."""

    def __init__(self, settings: CliSettings) -> None:
        from streamlearn.system.plan import Layout

        self.settings = settings
        self.layout: Layout = Layout(settings.state_dir)

    def plan(self) -> list[ServiceSpec]:
        """The services, with the addresses they listen on."""
        from streamlearn.system.plan import local_plan

        return local_plan(self.settings.state_dir, self.settings.kafka(), self.settings.secrets())

    def supervisor_pid(self) -> int | None:
        """The running supervisor's pid, or None."""
        return process.read_pid(self.layout.pid_file, SUPERVISOR_MODULE)

    def up(
        self,
        timeout_s: float = 300.0,
        secure: bool = False,
        defaults: Mapping[str, str] | None = None,
    ) -> list[ServiceSpec]:
        """Start what is not running and wait until every service reports SERVING.

        Args:
            timeout_s: How long to wait for every service.
            secure: Set the state directory up secured first (`streamlearn.system.secure`);
                one set up so before stays secured without it.
            defaults: Environment variables the services get unless the caller's
                environment sets them (e.g. the demo's prediction log); a system already
                running keeps its own.

        Raises:
            Unavailable: The supervisor exited or a service was not ready in time (with the
                tail of its log).
            ConfigError: `secure` with an external cluster, or on a state directory whose
                broker was formatted without security.

        """
        from streamlearn.cli.kafka_access import kafka_for_cli
        from streamlearn.system.secure import ensure

        if secure and self.settings.secrets() is None:
            self._check_securable()
        # Made, or renewed (certificates near expiry, tokens minted again), before the plan
        # hands them to the services.
        secured = secure or self.settings.secrets() is not None
        secrets = ensure(self.settings.state_dir) if secured else None
        kafka = kafka_for_cli(self.settings)  # starts the local broker unless one is given
        specs = self.plan()
        if secrets is not None:
            self._prepare_secured(secrets, kafka, specs)
        if self.supervisor_pid() is None:
            self._spawn_supervisor(defaults or {})
        self._wait_ready(specs, timeout_s)
        return specs

    def _check_securable(self) -> None:
        if self.settings.kafka_bootstrap:
            raise ConfigError(
                "--secure secures the project's own broker: unset STREAMLEARN_KAFKA_BOOTSTRAP "
                "(an external cluster comes with its own STREAMLEARN_KAFKA_SASL_* settings)"
            )
        data = self.settings.broker_config().data_dir
        if (data / "meta.properties").exists():
            raise ConfigError(
                f"the broker in {data.parent} was formatted without security: use another "
                "STREAMLEARN_STATE_DIR for --secure, or remove that directory (its data too)"
            )

    def _prepare_secured(
        self, secrets: LocalSecrets, kafka: KafkaSettings, specs: list[ServiceSpec]
    ) -> None:
        """Principals, ACLs and topics (the services may not create any), the role files."""
        from streamlearn.system.secure import provision_kafka, write_env_files

        provision_kafka(secrets, kafka.bootstrap_servers)
        address = {s.name: s.address for s in specs}
        write_env_files(secrets, kafka.bootstrap_servers, address["registry"], address["inference"])

    def down(self, stop_kafka: bool = True, timeout_s: float = 180.0) -> bool:
        """Stop the services (each drains on SIGTERM) and the local broker. False: none ran."""
        pid = self.supervisor_pid()
        if pid is not None:
            process.terminate(pid, timeout_s)
        if stop_kafka and not self.settings.kafka_bootstrap:
            from shared.kafka.local.broker import LocalBroker

            LocalBroker(self.settings.broker_config()).stop()
        return pid is not None

    def _spawn_supervisor(self, defaults: Mapping[str, str]) -> None:
        self.layout.logs_dir.mkdir(parents=True, exist_ok=True)
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        self.layout.state_file.unlink(missing_ok=True)  # a past run's restarts are not ours
        with (self.layout.logs_dir / "supervisor.log").open("ab") as out:
            subprocess.Popen(
                [sys.executable, "-m", SUPERVISOR_MODULE],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # The supervisor hands its environment on to every service.
                env={**defaults, **os.environ},
                start_new_session=True,  # outlives this command and its terminal
            )
        deadline = time.monotonic() + 30
        while self.supervisor_pid() is None:
            if time.monotonic() > deadline:
                raise Unavailable(f"the supervisor did not start:\n{self._tail('supervisor')}")
            time.sleep(0.1)

    def _wait_ready(self, specs: list[ServiceSpec], timeout_s: float) -> None:
        from shared.grpc.probe import check

        deadline = time.monotonic() + timeout_s
        waiting = list(specs)
        while waiting:
            waiting = [s for s in waiting if not check(s.address, s.up_health, 1.0, s.probe)]
            if not waiting:
                return
            if self.supervisor_pid() is None:
                raise Unavailable(f"the supervisor exited:\n{self._tail('supervisor')}")
            failing = self._crash_looping()
            if failing:
                raise Unavailable(
                    f"{failing} keeps exiting (see `streamlearn status`, `streamlearn down`); "
                    f"its log:\n{self._tail(failing)}"
                )
            if time.monotonic() > deadline:
                first = waiting[0].name
                raise Unavailable(
                    f"not ready after {timeout_s:.0f}s: {', '.join(s.name for s in waiting)}; "
                    f"{first} log:\n{self._tail(first)}"
                )
            time.sleep(0.3)

    def _crash_looping(self) -> str | None:
        """The first service the supervisor restarted CRASH_LOOP times, if any."""
        from streamlearn.system.supervisor import read_state

        state = read_state(self.layout.state_file) or {}
        looping = [s["name"] for s in state.get("services", []) if s["restarts"] >= CRASH_LOOP]
        return looping[0] if looping else None

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.layout.logs_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {path})"
