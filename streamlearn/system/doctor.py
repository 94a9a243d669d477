"""`streamlearn doctor`: what a newcomer trips on, checked one by one, each with its fix.

Every check returns a `Check` and never raises: a broken machine is what doctor is for.
Order: the interpreter and the environment, the broker's prerequisites, ports and disk,
then what runs (the broker, each service). Prerequisites are required; what runs is
required only while a system is up (its supervisor runs) or Kafka is external: with
nothing started, it is reported as not running, with how to start it, and fails nothing.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from shared.errors import StreamlearnError
from shared.grpc.probe import check as grpc_check
from shared.kafka.local.broker import LocalBroker
from shared.kafka.local.files import BrokerConfig
from shared.kafka.local.jars import find_pom, jar_dir
from streamlearn.cli.settings import CliSettings
from streamlearn.system.control import LocalSystem
from streamlearn.system.plan import ServiceSpec

PYTHON = (3, 11)  # pyproject: requires-python >=3.11,<3.12
JAVA_MAJOR = 17  # Kafka 4 brokers need Java 17+
MIN_FREE_BYTES = 2 * 1024**3  # the broker's log segments and model artifacts grow here
SERVICE_BIND_HOST = "0.0.0.0"  # services' gRPC servers bind f"0.0.0.0:{port}"
_JAVA_FIX = f"install a Java {JAVA_MAJOR}+ runtime, e.g. `apt-get install openjdk-17-jre-headless`"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    # False: reported, but its failure does not fail doctor (what runs, when nothing was started).
    required: bool = True

    def as_json(self) -> dict[str, Any]:
        """For `doctor --json`."""
        return asdict(self)


def run_checks(settings: CliSettings) -> list[Check]:
    """Every check, in the order a newcomer needs them fixed."""
    system = LocalSystem(settings)
    broker = settings.broker_config()
    specs = system.plan()
    supervised = system.supervisor_pid() is not None
    checks = [python_version(), virtualenv()]
    if not settings.kafka_bootstrap:  # an external cluster needs no Java, Maven or jars here
        checks += [java(broker.java), maven(broker), kafka_jars(broker)]
        checks += broker_ports(broker)
    checks += [service_port(s, supervised) for s in specs]
    checks.append(disk_space(settings.state_dir))
    running = [broker_running(settings)] + [
        service_health(s, system.layout.logs_dir) for s in specs
    ]
    if not supervised:
        running = [_not_started(c, external=bool(settings.kafka_bootstrap)) for c in running]
    return checks + running


def _not_started(check: Check, external: bool) -> Check:
    """A check of what runs, with nothing started: it says so and fails nothing.

    An external cluster is not ours to start: whether it answers stays required.
    """
    if check.ok or (external and check.name == "kafka"):
        return check
    return replace(
        check,
        detail=f"not running ({check.detail})",
        fix="start it with `streamlearn up`",
        required=False,
    )


def python_version(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    """The interpreter is the one pyproject asks for."""
    shown = ".".join(map(str, version))
    if tuple(version[:2]) == PYTHON:
        return Check("python", True, shown)
    return Check(
        "python", False, f"{shown} (streamlearn needs {PYTHON[0]}.{PYTHON[1]})", "run `make setup`"
    )


def virtualenv(prefix: str = sys.prefix, base: str = sys.base_prefix) -> Check:
    """Which environment runs, and which clone's code it imports."""
    import streamlearn

    code = Path(next(iter(streamlearn.__path__))).resolve().parent
    here = _clone_of(Path.cwd())
    where = f"{prefix} runs the code in {code}"
    if prefix == base:
        return Check("virtualenv", False, f"none: {where}", "run `make setup`, then use .venv/bin")
    if here is not None and here != code:
        return Check(
            "virtualenv",
            False,
            f"{where}, not the clone you are in ({here})",
            f"run `make setup` in {here} and use its .venv/bin/streamlearn",
        )
    return Check("virtualenv", True, where)


def _clone_of(path: Path) -> Path | None:
    """The streamlearn checkout containing `path`, if any."""
    for directory in (path.resolve(), *path.resolve().parents):
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and 'name = "streamlearn"' in pyproject.read_text(errors="replace"):
            return directory
    return None


def java(executable: str = "java") -> Check:
    """A Java runtime new enough for the Kafka broker."""
    path = shutil.which(executable)
    if path is None:
        return Check("java", False, f"'{executable}' not found on PATH", _JAVA_FIX)
    try:
        done = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("java", False, f"{path} does not run: {exc}", _JAVA_FIX)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        return Check("java", False, f"{path}: unknown version", _JAVA_FIX)
    major = int(found.group(1) if found.group(1) != "1" else found.group(2) or 0)
    if major < JAVA_MAJOR:
        return Check("java", False, f"{path} is Java {major}", _JAVA_FIX)
    return Check("java", True, f"{path} (Java {major})")


def maven(broker: BrokerConfig) -> Check:
    """Maven, which the first broker start needs to fetch Kafka's jars."""
    path = shutil.which(broker.mvn)
    if path is not None:
        return Check("maven", True, path)
    if _jars_ready(broker):
        return Check("maven", True, "not installed, not needed: the jars are cached")
    return Check(
        "maven",
        False,
        f"'{broker.mvn}' not found on PATH and Kafka's jars are not cached",
        "install Maven (`apt-get install maven`): it fetches the broker's jars once",
    )


def kafka_jars(broker: BrokerConfig) -> Check:
    """The broker's jars in the cache (resolved once per pom)."""
    try:
        target = jar_dir(broker.cache_dir, find_pom())
    except (StreamlearnError, OSError) as exc:
        return Check("kafka jars", False, str(exc), "reinstall streamlearn (`make setup`)")
    if (target / ".complete").exists():
        return Check("kafka jars", True, str(target))
    return Check(
        "kafka jars",
        False,
        f"not fetched yet (into {target})",
        "run `streamlearn kafka start` once with network access (Maven downloads them)",
    )


def _jars_ready(broker: BrokerConfig) -> bool:
    try:
        return (jar_dir(broker.cache_dir, find_pom()) / ".complete").exists()
    except (StreamlearnError, OSError):
        return False


def broker_ports(broker: BrokerConfig) -> list[Check]:
    """The local broker's two ports: free, or held by the broker itself."""
    running = LocalBroker(broker).status().state == "running"
    named = (
        ("kafka port", broker.port, "STREAMLEARN_KAFKA_PORT"),
        ("kafka controller", broker.controller_port, "STREAMLEARN_KAFKA_CONTROLLER_PORT"),
    )
    return [_port(name, broker.host, port, variable, running) for name, port, variable in named]


def service_port(spec: ServiceSpec, supervised: bool) -> Check:
    """A service's gRPC port: free, or held by that service (our supervisor runs it)."""
    port = int(spec.address.rpartition(":")[2])
    ours = supervised and grpc_check(spec.address, "", timeout=1.0, security=spec.probe)
    # Probed where the service binds (every interface), not where clients dial it: a port
    # held on one other address still blocks the service.
    name, variable = f"{spec.name} port", f"{spec.name.upper()}_GRPC_PORT"
    return _port(name, SERVICE_BIND_HOST, port, variable, ours)


def _port(name: str, host: str, port: int, variable: str, ours: bool) -> Check:
    where = f"{host}:{port}"
    if ours:
        return Check(name, True, f"{where} (in use by streamlearn itself)")
    error = _bind_error(host, port)
    if error is None:
        return Check(name, True, f"{where} free")
    return Check(
        name,
        False,
        f"{where} is taken by another process ({error})",
        f"stop that process (`ss -ltnp | grep :{port}`) or set {variable} to a free port",
    )


def _bind_error(host: str, port: int) -> str | None:
    """Why binding host:port fails, or None when it would work (as the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def disk_space(state_dir: Path, minimum: int = MIN_FREE_BYTES) -> Check:
    """Free space where the broker's data and the registry's artifacts live."""
    existing = next(p for p in (state_dir, *state_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    detail = f"{free / 1024**3:.1f} GiB free at {existing}"
    if free >= minimum:
        return Check("disk", True, detail)
    return Check(
        "disk",
        False,
        f"{detail} (below {minimum / 1024**3:.0f} GiB)",
        "free space there or set STREAMLEARN_STATE_DIR to a larger disk",
    )


def broker_running(settings: CliSettings) -> Check:
    """A broker that answers: the external cluster, or the local one."""
    if settings.kafka_bootstrap:
        from shared.errors import Unavailable
        from shared.kafka.admin import probe_admin, wait_for_broker

        try:
            wait_for_broker(probe_admin(settings.kafka_bootstrap), timeout=5.0)
        except Unavailable:
            return Check(
                "kafka",
                False,
                f"{settings.kafka_bootstrap} does not answer",
                "start that cluster, or unset STREAMLEARN_KAFKA_BOOTSTRAP for the local broker",
            )
        return Check("kafka", True, f"{settings.kafka_bootstrap} answers")
    status = LocalBroker(settings.broker_config()).status()
    if status.state == "running":
        return Check("kafka", True, f"running at {status.bootstrap} (pid {status.pid})")
    fix = "`streamlearn kafka stop`, then `streamlearn up`" if status.pid else "`streamlearn up`"
    detail = f"{status.state} at {status.bootstrap}" + (
        f": {status.detail}" if status.detail else ""
    )
    return Check("kafka", False, detail, f"run {fix}")


def service_health(spec: ServiceSpec, logs_dir: Path) -> Check:
    """The service reports SERVING (inference: answers at all) on gRPC health."""
    name = spec.name
    if grpc_check(spec.address, spec.up_health, timeout=1.0, security=spec.probe):
        return Check(name, True, f"serving at {spec.address}")
    log = logs_dir / f"{name}.log"
    hint = f"; its log: {log}" if log.exists() else ""
    return Check(name, False, f"not answering at {spec.address}", f"run `streamlearn up`{hint}")
