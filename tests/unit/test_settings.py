from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from services.inference.settings import InferenceSettings
from services.registry.settings import RegistrySettings
from services.trainer.settings import TrainerSettings
from shared.settings import KafkaSettings


def test_service_settings_read_their_own_prefix_and_nested_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRAINER_KAFKA__BOOTSTRAP_SERVERS", "kafka:19092")
    monkeypatch.setenv("TRAINER_TOPICS__PARTITIONS", "6")
    monkeypatch.setenv("INFERENCE_GRPC_PORT", "9001")
    trainer = TrainerSettings()
    assert trainer.kafka.bootstrap_servers == "kafka:19092"
    assert trainer.topics.partitions == 6
    assert InferenceSettings().grpc_port == 9001
    assert InferenceSettings().kafka.bootstrap_servers == "127.0.0.1:9092"  # not TRAINER_'s


def test_settings_are_frozen() -> None:
    settings = TrainerSettings()
    with pytest.raises(ValidationError):
        settings.model_name = "other"  # type: ignore[misc]


def test_invalid_values_are_refused_with_the_field_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_DEVICE", "tpu")
    with pytest.raises(ValidationError, match="device"):
        TrainerSettings()


def test_secrets_stay_hidden_in_reprs_but_reach_librdkafka() -> None:
    kafka = KafkaSettings(
        sasl_mechanism="PLAIN", sasl_username="u", sasl_password=SecretStr("s3cret")
    )
    assert "s3cret" not in repr(kafka)
    assert kafka.client_config()["sasl.password"] == "s3cret"


def test_registry_artifacts_default_under_the_state_dir(tmp_path: object) -> None:
    settings = RegistrySettings(state_dir=tmp_path)  # type: ignore[arg-type]
    assert settings.resolved_artifact_dir == tmp_path / "registry" / "artifacts"  # type: ignore[operator]
