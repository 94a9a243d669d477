"""Start, stop and inspect the project's own single-node Kafka broker (KRaft, loopback)."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from shared.errors import BrokerError, Unavailable
from shared.kafka.admin import probe_admin, wait_for_broker
from shared.kafka.local import process
from shared.kafka.local.files import BrokerConfig, log4j2_properties, server_properties
from shared.kafka.local.jars import ensure_jars
from shared.security.pki import write_private

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerStatus:
    """What `status` found: a live process that answers, or why not."""

    state: str  # "running" | "unresponsive" | "stopped"
    pid: int | None
    bootstrap: str
    detail: str = ""


class LocalBroker:
    """The broker whose data, logs and pid file live in `config.state_dir`."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._pid_file = config.state_dir / "broker.pid"
        self._layout_file = config.state_dir / "broker.json"

    def start(self) -> BrokerStatus:
        """Start the broker and wait until it answers; do nothing when it already runs.

        Raises:
            BrokerError: Java or Maven missing, jars unresolvable, a port taken, or the
                broker exited or stayed silent during start-up (its log tail is included).

        """
        current = self.status()
        if current.state == "running":
            return current
        if current.state == "unresponsive":
            raise BrokerError(
                f"a broker process (pid {current.pid}) runs but does not answer; "
                "run `streamlearn kafka stop` first"
            )
        java = self._java()
        jars = ensure_jars(self.config.cache_dir, self.config.mvn, self.config.mvn_args)
        self._check_layout()
        self._check_ports_free()
        self._write_files()
        self._format_once(java, jars)
        pid = self._launch(java, jars)
        return self._wait_ready(pid)

    def stop(self) -> bool:
        """SIGTERM the broker and wait for its clean shutdown. Returns False if none ran."""
        pid = process.read_pid(self._pid_file, "kafka.Kafka")
        if pid is None:
            return False
        clean = process.terminate(pid, self.config.stop_timeout_s)
        self._pid_file.unlink(missing_ok=True)
        if not clean:
            log.warning("broker ignored SIGTERM and was killed", extra={"pid": pid})
        return True

    def status(self) -> BrokerStatus:
        """Ask the process table and the broker itself."""
        bootstrap = self.config.bootstrap
        pid = process.read_pid(self._pid_file, "kafka.Kafka")
        if pid is None:
            return BrokerStatus("stopped", None, bootstrap)
        try:
            wait_for_broker(self._probe(), timeout=3.0)
        except Unavailable as exc:
            return BrokerStatus("unresponsive", pid, bootstrap, str(exc))
        return BrokerStatus("running", pid, bootstrap)

    def _java(self) -> str:
        java = shutil.which(self.config.java)
        if java is None:
            raise BrokerError(
                f"Java ('{self.config.java}') is not installed: "
                "Kafka 4 needs a Java 17+ runtime (e.g. apt-get install openjdk-17-jre)"
            )
        return java

    def _probe(self) -> AdminClient:
        """A readiness probe that connects as the admin when the broker is secure."""
        secure = self.config.security is not None
        return probe_admin(self.config.bootstrap, self.config.client_settings() if secure else None)

    def _check_layout(self) -> None:
        """KRaft stores the controller's address at format time: it must not change later.

        Nor may the security mode: a secure broker's admin credential is written at format
        time, and a plain directory's metadata has neither it nor the ACLs.
        """
        layout = self._layout()
        stored = self._stored_layout()
        if stored is None or stored == layout:
            return
        was, wants = _mode(stored), _mode(layout)
        if was != wants:
            raise BrokerError(
                f"{self.config.state_dir} holds a {was} broker's data; it cannot start as a "
                f"{wants} broker: start it as a {was} broker again, or remove the directory "
                f"for a fresh {wants} broker"
            )
        if not stored:  # formatted before layouts were recorded: nothing more to compare
            return
        raise BrokerError(
            f"{self.config.state_dir} was formatted for controller {stored}; "
            f"use those settings or remove the directory for a fresh broker"
        )

    def _stored_layout(self) -> dict[str, object] | None:
        """The layout the data was formatted with; None for a directory never formatted."""
        if self._layout_file.exists():
            try:
                stored = json.loads(self._layout_file.read_text())
            except (OSError, ValueError) as exc:
                raise BrokerError(f"{self._layout_file} is unreadable ({exc})") from exc
            if not isinstance(stored, dict):
                raise BrokerError(f"{self._layout_file} is not a broker layout")
            return stored
        if (self.config.data_dir / "meta.properties").exists():
            return {}  # formatted before layouts were recorded: plain
        return None

    def _layout(self) -> dict[str, object]:
        """What formatting fixes for good: the controller's address (and the admin, if secure)."""
        layout: dict[str, object] = {
            "host": self.config.host,
            "controller_port": self.config.controller_port,
        }
        if self.config.security is not None:
            layout |= {"security": "SASL_SSL", "admin": self.config.security.admin_user}
        return layout

    def _check_ports_free(self) -> None:
        for port in (self.config.port, self.config.controller_port):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.config.host, port))
                except OSError as exc:
                    raise BrokerError(
                        f"port {self.config.host}:{port} is taken by another "
                        f"process ({exc.strerror}); choose other ports"
                    ) from exc

    def _write_files(self) -> None:
        for directory in (self.config.data_dir, self.config.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        properties = self.config.state_dir / "server.properties"
        if self.config.security is None:
            properties.write_text(server_properties(self.config))
        else:
            # The broker's own SCRAM login (inter-broker) is in this file: its owner's alone.
            write_private(properties, server_properties(self.config).encode())
            if properties.stat().st_mode & 0o077:
                raise BrokerError(
                    f"{properties} holds passwords but others may read it (its file system "
                    "ignores permissions): put the state directory elsewhere"
                )
        (self.config.state_dir / "log4j2.properties").write_text(
            log4j2_properties(self.config.logs_dir)
        )

    def _format_once(self, java: str, jars: Path) -> None:
        if (self.config.data_dir / "meta.properties").exists():
            return
        cluster_id = self._run_tool(java, jars, ["kafka.tools.StorageTool", "random-uuid"]).strip()
        security = self.config.security
        # The admin's SCRAM credential goes into the first metadata: the broker authenticates
        # itself (inter-broker) and the operator with it before any user could be created.
        scram = ["--add-scram", security.scram_argument()] if security is not None else []
        self._run_tool(
            java,
            jars,
            [
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.config.state_dir / "server.properties"),
                *scram,
            ],
        )
        self._layout_file.write_text(json.dumps(self._layout()))

    def _run_tool(self, java: str, jars: Path, args: list[str]) -> str:
        result = subprocess.run(
            [java, "-cp", f"{jars}/*", *args], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            error = self._redact(result.stderr.strip()[-2000:])
            raise BrokerError(f"{args[0]} {args[1]} failed: {error}")
        return result.stdout

    def _redact(self, text: str) -> str:
        """`text` without the admin's password (a tool may echo its arguments)."""
        security = self.config.security
        if security is None:
            return text
        return text.replace(security.admin_password.get_secret_value(), "**********")

    def _launch(self, java: str, jars: Path) -> int:
        heap = self.config.heap
        command = [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.config.state_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.config.logs_dir}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(self.config.state_dir / "server.properties"),
        ]
        with open(self.config.logs_dir / "stdout.log", "ab") as out:
            # A session of its own: the broker outlives the CLI that started it.
            child = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid_file.write_text(str(child.pid))
        return child.pid

    def _wait_ready(self, pid: int) -> BrokerStatus:
        deadline = time.monotonic() + self.config.start_timeout_s
        admin = self._probe()
        while time.monotonic() < deadline:
            if not process.alive(pid):
                self._pid_file.unlink(missing_ok=True)
                raise BrokerError(f"the broker exited during start-up:\n{self._log_tail()}")
            try:
                wait_for_broker(admin, timeout=2.0)
                return BrokerStatus("running", pid, self.config.bootstrap)
            except Unavailable:
                continue
        self.stop()
        raise BrokerError(
            f"the broker did not answer within {self.config.start_timeout_s:.0f}s:\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 15) -> str:
        found = []
        for name in ("stdout.log", "server.log"):
            path = self.config.logs_dir / name
            if path.exists():
                found += path.read_text(errors="replace").splitlines()[-lines:]
        return self._redact("\n".join(found)) or "(no broker output)"


def _mode(layout: dict[str, object]) -> str:
    return "secure (SASL_SSL)" if layout.get("security") else "plain-text"
