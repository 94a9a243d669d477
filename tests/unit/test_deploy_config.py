"""docker-compose.yml must agree with the code: service names, ports and env variable names."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy import ROOT, SERVICES, resolves, settings_class

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_one_compose_service_per_service_folder_plus_kafka() -> None:
    assert SERVICES == ["inference", "ingestion", "joiner", "registry", "trainer"]
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


def test_the_gpu_override_runs_the_cuda_trainer() -> None:
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    assert set(gpu["services"]) == {"trainer"}
    trainer = gpu["services"]["trainer"]
    assert trainer["build"]["target"] == "runtime-cuda"
    assert "FROM runtime AS runtime-cuda" in (ROOT / "deploy" / "Dockerfile").read_text()
    assert trainer["environment"]["TRAINER_DEVICE"] == "auto"  # the GPU for models that gain
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_every_volume_is_named_and_mounted_at_the_state_directory() -> None:
    mounts = {
        name: spec.get("volumes", [])
        for name, spec in COMPOSE["services"].items()
        if name in ("registry", "trainer", "kafka")
    }
    assert set(COMPOSE["volumes"]) == {"kafka-data", "registry-data", "trainer-checkpoints"}
    for name, volumes in mounts.items():
        (volume,) = volumes
        source, target = volume.split(":")
        assert source in COMPOSE["volumes"]
        if name != "kafka":
            env = COMPOSE["services"][name]["environment"]
            assert env[f"{name.upper()}_STATE_DIR"] == target


@pytest.mark.parametrize("service", SERVICES)
def test_the_secure_override_sets_only_settings_fields(service: str) -> None:
    """docker-compose.secure.yml: every variable is a field of the service's settings."""
    secure = yaml.load((ROOT / "docker-compose.secure.yml").read_text(), Loader=_ResetLoader)
    cls = settings_class(service)
    prefix = cls.model_config["env_prefix"]
    for name in secure["services"][service]["environment"]:
        assert name.startswith(prefix), f"{service}: {name} lacks the {prefix} prefix"
        assert resolves(cls, name.removeprefix(prefix).lower()), f"{service}: no setting for {name}"
    # The values that are secrets are named by the env file the secrets script writes.
    for field in ("kafka__sasl_password", "security__token"):
        assert resolves(cls, field)


class _ResetLoader(yaml.SafeLoader):
    """Reads compose's `!reset` tag (the override files use it) as null."""


_ResetLoader.add_constructor("!reset", lambda loader, node: None)
