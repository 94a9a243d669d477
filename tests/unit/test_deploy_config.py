"""docker-compose.yml must agree with the code: service names, ports and env variable names."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(
    p.name for p in (ROOT / "services").iterdir() if p.is_dir() and (p / "settings.py").exists()
)
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    found = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, ServiceSettings) and c is not ServiceSettings
    ]
    assert len(found) == 1, f"services/{service}/settings.py must define one settings class"
    return found[0]


def resolves(model: type[BaseModel], name: str) -> bool:
    head, _, rest = name.partition("__")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    annotation: Any = field.annotation
    return (
        inspect.isclass(annotation)
        and issubclass(annotation, BaseModel)
        and resolves(annotation, rest)
    )


def test_one_compose_service_per_service_folder_plus_kafka() -> None:
    assert SERVICES == ["inference", "ingestion", "registry", "trainer"]
    assert set(COMPOSE["services"]) == {*SERVICES, "kafka"}


@pytest.mark.parametrize("service", SERVICES)
def test_environment_names_are_settings_fields(service: str) -> None:
    cls = settings_class(service)
    prefix = cls.model_config["env_prefix"]
    assert prefix == f"{service.upper()}_"
    for name in COMPOSE["services"][service]["environment"]:
        assert name.startswith(prefix), f"{service}: {name} lacks the {prefix} prefix"
        assert resolves(cls, name.removeprefix(prefix).lower()), f"{service}: no setting for {name}"


@pytest.mark.parametrize("service", SERVICES)
def test_ports_and_commands_match_settings(service: str) -> None:
    spec = COMPOSE["services"][service]
    cls = settings_class(service)
    env = {k.removeprefix(f"{service.upper()}_").lower(): v for k, v in spec["environment"].items()}
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    assert env["kafka__bootstrap_servers"] == "kafka:19092"
    assert (
        "PLAINTEXT://kafka:19092"
        in COMPOSE["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    if "grpc_port" in cls.model_fields:
        port = int(env.get("grpc_port", cls.model_fields["grpc_port"].default))
        assert f"{port}:{port}" in spec["ports"]
        assert f"127.0.0.1:{port}" in spec["healthcheck"]["test"]


@pytest.mark.parametrize("service", SERVICES)
def test_addresses_of_other_services_point_at_their_ports(service: str) -> None:
    env = COMPOSE["services"][service]["environment"]
    for name, value in env.items():
        if name.endswith("_ADDRESS"):
            host, port = value.split(":")
            target = settings_class(host)
            assert int(port) == target.model_fields["grpc_port"].default
            assert host in COMPOSE["services"][service]["depends_on"]
