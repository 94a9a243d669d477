"""`streamlearn --version`: this package's version, and with --verbose what it runs on.

Versions come from installed distributions' metadata and the broker pom: nothing heavy
(torch, onnxruntime) is imported to learn its version.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata

# Distributions whose versions explain a bug report (onnxruntime ships as -gpu here).
_VERBOSE = (
    ("torch", ("torch",)),
    ("onnxruntime", ("onnxruntime-gpu", "onnxruntime")),
    ("confluent-kafka", ("confluent-kafka",)),
    ("grpcio", ("grpcio",)),
    ("numpy", ("numpy",)),
)


def versions(verbose: bool) -> str:
    """`streamlearn X.Y.Z`, then one `name version` line per component when verbose."""
    lines = [f"streamlearn {_installed(('streamlearn',))}"]
    if verbose:
        lines.append(f"python {platform.python_version()}")
        lines.append(f"kafka (local broker) {kafka_version()}")
        lines.append(f"librdkafka {_librdkafka()}")
        lines += [f"{name} {_installed(dists)}" for name, dists in _VERBOSE]
    return "\n".join(lines)


def kafka_version() -> str:
    """The Apache Kafka version the local broker's pom pins."""
    from shared.errors import BrokerError
    from shared.kafka.local.jars import find_pom

    try:
        found = re.search(r"<kafka.version>([^<]+)<", find_pom().read_text())
    except (BrokerError, OSError):
        return "unknown (no broker pom)"
    return found.group(1) if found else "unknown"


def _librdkafka() -> str:
    import confluent_kafka  # a C extension that loads in milliseconds

    return str(confluent_kafka.libversion()[0])


def _installed(names: tuple[str, ...]) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"
