"""The compose overrides and images of `make compose-test`, checked without a Docker engine.

docker-compose.local.yml (images built here) and docker-compose.host.yml (host networking)
must keep agreeing with docker-compose.yml, the Dockerfiles and the Kafka pom; the Kafka
image's entrypoint must turn the apache/kafka environment convention into server.properties.
The real run is `make compose-test` (scripts/compose-test.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import ROOT, SERVICES, settings_class


class _Loader(yaml.SafeLoader):
    """Reads compose's `!reset` tag (drop the merged value) as a marker."""


RESET = "<reset>"
_Loader.add_constructor("!reset", lambda loader, node: RESET)


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=_Loader)
    return loaded


BASE = _load("docker-compose.yml")
LOCAL = _load("docker-compose.local.yml")
HOST = _load("docker-compose.host.yml")
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
KAFKA_DOCKERFILE = (ROOT / "deploy" / "docker" / "kafka.Dockerfile").read_text()
PRIVATE = re.compile(r"\b(10\.\d+|172\.(1[6-9]|2\d|3[01])|192\.168)\.\d+\.\d+")


def _expand(value: str) -> str:
    """Compose's `${NAME:-default}` with every variable unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_overrides_name_exactly_the_compose_services() -> None:
    assert set(LOCAL["services"]) == set(BASE["services"]) == set(HOST["services"])
    assert set(BASE["services"]) == {*SERVICES, "kafka"}


def test_no_compose_file_declares_a_network_or_a_private_address() -> None:
    for name in ("docker-compose.yml", "docker-compose.gpu.yml", "docker-compose.local.yml"):
        assert "networks" not in _load(name)
    assert "networks" not in HOST
    for path in ROOT.glob("docker-compose*.yml"):
        assert not PRIVATE.search(path.read_text()), f"{path.name} names a private address"


def test_the_host_override_puts_every_service_on_the_host_network_only() -> None:
    for name, spec in HOST["services"].items():
        assert spec["network_mode"] == "host", name
        assert spec["ports"] == RESET, f"{name}: published ports mean nothing on the host network"
        assert "networks" not in spec


def test_host_mode_addresses_are_loopback_and_ports_agree() -> None:
    env = {name: spec["environment"] for name, spec in HOST["services"].items()}
    ports = {
        service: int(_expand(env[service][f"{service.upper()}_GRPC_PORT"])) for service in SERVICES
    }
    assert ports == {s: settings_class(s).model_fields["grpc_port"].default for s in SERVICES}
    kafka = env["kafka"]
    internal = _expand(kafka["KAFKA_ADVERTISED_LISTENERS"]).split(",")[0]
    assert internal == "PLAINTEXT://127.0.0.1:19092"
    for listener in _expand(kafka["KAFKA_LISTENERS"]).split(","):
        assert "://127.0.0.1:" in listener, listener
    for service in SERVICES:
        values = {k: _expand(str(v)) for k, v in env[service].items()}
        assert values[f"{service.upper()}_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
        for name, value in values.items():
            assert name.startswith(f"{service.upper()}_")
            if name.endswith("_ADDRESS"):
                host, port = value.split(":")
                assert host == "127.0.0.1"
                assert (
                    int(port)
                    == ports[name.removeprefix(f"{service.upper()}_").split("_")[0].lower()]
                )
        probe = [_expand(str(part)) for part in HOST["services"][service]["healthcheck"]["test"]]
        assert f"127.0.0.1:{ports[service]}" in probe
        # The probe checks the same health name the base file does.
        assert probe[-1] == BASE["services"][service]["healthcheck"]["test"][-1]


def test_every_host_mode_port_can_be_moved() -> None:
    text = (ROOT / "docker-compose.host.yml").read_text()
    body = text[text.index("services:") :]
    for match in re.finditer(r"127\.0\.0\.1:([^,\s\"]+)", body):
        assert match.group(1).startswith("${STREAMLEARN_"), match.group(0)


def test_the_local_override_uses_images_built_here() -> None:
    pom = (ROOT / "deploy" / "local" / "kafka" / "pom.xml").read_text()
    (version,) = re.findall(r"<kafka.version>(.+)</kafka.version>", pom)
    # The default stays the official image for users; the override selects the local one.
    assert BASE["services"]["kafka"]["image"] == f"apache/kafka:{version}"
    kafka = LOCAL["services"]["kafka"]
    assert kafka["image"] == f"streamlearn-kafka:{version}"
    assert kafka["pull_policy"] == "never"
    assert kafka["healthcheck"]["test"][:2] == ["CMD", "/opt/kafka/bin/healthcheck.sh"]
    for service in SERVICES:
        assert LOCAL["services"][service] == {"build": RESET, "pull_policy": "never"}


def test_only_the_trainer_runs_the_image_with_torch() -> None:
    for service in SERVICES:
        spec = BASE["services"][service]
        image, target = spec["image"], spec["build"]["target"]
        if service == "trainer":
            assert (image, target) == ("streamlearn:latest", "runtime")
        else:
            assert (image, target) == ("streamlearn:slim", "runtime-slim")
        assert f"AS {target}\n" in DOCKERFILE


def test_the_dockerfile_defaults_to_the_official_python_image() -> None:
    assert "ARG BASE_IMAGE=python:3.11-slim\n" in DOCKERFILE
    assert "ARG BASE_IMAGE=eclipse-temurin:17-jre\n" in KAFKA_DOCKERFILE
    # A `# syntax=` directive would pull the frontend from a registry.
    for text in (DOCKERFILE, KAFKA_DOCKERFILE):
        assert not re.search(r"^#\s*syntax=", text, re.MULTILINE)


def _stages(text: str) -> dict[str, str]:
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].split(" AS ")[-1].strip(): part for part in parts}


def test_runtime_stages_are_non_root_labelled_and_without_build_tools() -> None:
    stages = _stages(DOCKERFILE)
    base = stages["runtime-base"]
    assert re.search(r"^USER 10001:10001$", base, re.MULTILINE)
    for label in ("title", "description", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in base
    for name in ("runtime-slim", "runtime"):
        stage = stages[name]
        assert stage.startswith("runtime-base AS")
        # Only the virtual environment and the installed project cross over: no uv, no
        # wheels, no source tree.
        deps = "deps-slim" if name == "runtime-slim" else "deps-full"
        assert re.findall(r"^COPY .*$", stage, re.MULTILINE) == [
            f"COPY --from={deps} /opt/venv /opt/venv",
            "COPY --from=project /opt/streamlearn /opt/streamlearn",
        ]
        assert "RUN " not in stage
    assert "USER 1000:1000" in KAFKA_DOCKERFILE
    assert "org.opencontainers.image.title" in KAFKA_DOCKERFILE


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    ]
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()  # an allowlist
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.MULTILINE):
        for source in line.split()[:-1]:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_kafka_entrypoint_writes_server_properties_from_the_environment(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    java = fake / "java"
    java.write_text('#!/bin/sh\necho "$@" >> "$STREAMLEARN_KAFKA_RUN_DIR/java.calls"\n')
    java.chmod(0o755)
    env = {
        "PATH": f"{fake}:{os.environ['PATH']}",
        "STREAMLEARN_KAFKA_RUN_DIR": str(tmp_path / "run"),
        "CLUSTER_ID": "test-cluster",
        "KAFKA_HEAP_OPTS": "-Xmx1m",
        **{k: str(v) for k, v in BASE["services"]["kafka"]["environment"].items()},
        "KAFKA_SOME___DASHED__UNDER_SCORE": "x",
    }
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "docker" / "kafka" / "entrypoint.sh")],
        env=env,
        check=True,
        timeout=30,
    )
    run = tmp_path / "run"
    properties = dict(
        line.split("=", 1) for line in (run / "server.properties").read_text().splitlines()
    )
    assert properties["node.id"] == "1"
    assert properties["controller.quorum.voters"] == "1@kafka:9093"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["some-dashed_under.score"] == "x"
    assert "heap.opts" not in properties
    format_call, broker_call = (run / "java.calls").read_text().splitlines()
    assert "kafka.tools.StorageTool format --ignore-formatted -t test-cluster" in format_call
    assert "--standalone" not in format_call  # the voters are configured
    assert broker_call.startswith("-Xmx1m ")
    assert broker_call.endswith(f"kafka.Kafka {run / 'server.properties'}")
