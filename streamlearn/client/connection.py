"""How an SDK program reaches a (secured) streamlearn: from the `STREAMLEARN_*` environment.

`streamlearn up --secure` writes `<state>/secrets/<role>.env`; a program started with it
sourced connects as that role:

    connection = from_env()
    producer = SampleProducer(kafka=connection.kafka, stream="clicks")
    client = InferenceClient("127.0.0.1:8001", security=connection.security)
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import GrpcSecurity, KafkaSettings


@dataclass(frozen=True)
class Connection:
    """Kafka settings (SASL, TLS) and gRPC security (TLS, token) of one client."""

    kafka: KafkaSettings
    security: GrpcSecurity
    registry_address: str


def from_env() -> Connection:
    """The connection the environment describes (plaintext to the local defaults if empty).

    Only what the environment says: unlike the CLI, an SDK program never borrows the local
    system's admin credentials.
    """
    from streamlearn.cli.settings import CliSettings

    settings = CliSettings()
    return Connection(
        kafka=settings.kafka(local_admin=False).model_copy(update={"client_id": "streamlearn-sdk"}),
        security=settings.security,
        registry_address=settings.registry_address,
    )
