"""Resolve the Kafka broker's jars from Maven Central into a cache keyed by the pom."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import shared
from shared.errors import BrokerError

log = logging.getLogger(__name__)

_COMPLETE = ".complete"


def find_pom() -> Path:
    """The broker pom: deploy/local/kafka/pom.xml in a checkout, or the copy in a wheel."""
    package_dir = Path(shared.__file__).resolve().parent
    for candidate in (
        package_dir.parent / "deploy" / "local" / "kafka" / "pom.xml",
        package_dir / "kafka" / "pom.xml",
    ):
        if candidate.is_file():
            return candidate
    raise BrokerError("the Kafka broker pom (deploy/local/kafka/pom.xml) is missing")


def jar_dir(cache_dir: Path, pom: Path) -> Path:
    """Where the jars of this exact pom live; a changed pom gets a fresh directory."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    return cache_dir / "kafka-jars" / digest


def ensure_jars(
    cache_dir: Path, mvn: str = "mvn", mvn_args: tuple[str, ...] = (), timeout: float = 900.0
) -> Path:
    """Return a directory holding every runtime jar of the broker, downloading once if needed.

    Raises:
        BrokerError: Maven is missing, or it could not resolve the jars (e.g. no network).

    """
    pom = find_pom()
    target = jar_dir(cache_dir, pom)
    if (target / _COMPLETE).exists():
        return target
    executable = shutil.which(mvn)
    if executable is None:
        raise BrokerError(f"Maven ('{mvn}') is not installed: it is needed once to fetch Kafka")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        log.info("resolving Kafka jars with Maven", extra={"pom": str(pom), "into": str(target)})
        _copy_dependencies([executable, *mvn_args], pom, staging, timeout)
        (staging / _COMPLETE).write_text(pom.read_text())
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: a half-downloaded set is never used
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    return target


def _copy_dependencies(mvn: list[str], pom: Path, out: Path, timeout: float) -> None:
    command = [
        *mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out}",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"Maven did not finish resolving Kafka within {timeout:.0f}s") from exc
    if result.returncode != 0 or not any(out.glob("kafka_2.13-*.jar")):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise BrokerError(
            "Maven could not resolve the Kafka broker jars (is Maven Central reachable?):\n" + tail
        )
