"""`streamlearn up` on the test broker, with a test's own topics, ports and state."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from bench.processes import topics_env
from shared.net import free_port
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.system.control import LocalSystem
from streamlearn.system.status import collect

SERVICES = ("registry", "ingestion", "trainer", "joiner", "inference")
TOPIC_NAMES = (
    *("raw", "train", "dlq", "streams", "metrics", "model_events"),
    *("predictions", "feedback", "joiner_state"),
)


def logistic_config(features: int) -> str:
    """TRAINER_CONFIG of a logistic model learning with Adagrad."""
    return json.dumps(
        {
            "model": {"kind": "logistic", "features": features},
            "optimizer": {"name": "adagrad", "lr": 0.1},
        }
    )


def system_env(
    kafka: KafkaSettings, state: Path, stream: str = "e2e", features: int = 8
) -> tuple[dict[str, str], TopicSettings]:
    """The environment of `streamlearn up` whose trainer learns `stream` as model `stream`."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(**{n: f"e2e.{suffix}.{n}" for n in TOPIC_NAMES})
    env = {
        "STREAMLEARN_STATE_DIR": str(state),
        "STREAMLEARN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "TRAINER_CONFIG": logistic_config(features),
        "TRAINER_STREAM": stream,
        "TRAINER_MODEL_NAME": stream,
        "TRAINER_VERSION_EVERY_S": "0.5",
        "TRAINER_CHECKPOINT_EVERY_EVENTS": "500",
        "INFERENCE_MODEL_NAMES": json.dumps([stream]),
        "INFERENCE_MAX_BATCH_SIZE": "4096",
        "INGESTION_CONSUMER_GROUP": f"e2e-ingestion-{suffix}",
        "TRAINER_CONSUMER_GROUP": f"e2e-trainer-{suffix}",
        # Static membership and transactions go by these: a test's joiner shares them with
        # no other test's.
        "JOINER_CONSUMER_GROUP": f"e2e-joiner-{suffix}",
        "JOINER_TRANSACTIONAL_ID": f"e2e-joiner-{suffix}",
    }
    for service in SERVICES:
        prefix = service.upper()
        env[f"{prefix}_GRPC_PORT"] = str(free_port())
        env[f"{prefix}_METRICS_PORT"] = "0"
        env |= topics_env(f"{prefix}_", topics)
    return env, topics


def service_state(local: LocalSystem, name: str) -> dict[str, object]:
    """What `streamlearn status` says of one service."""
    return next(s for s in collect(local)["services"] if s["name"] == name)


def restarts(local: LocalSystem) -> dict[str, object]:
    """How often the supervisor restarted each service."""
    return {s["name"]: s["restarts"] for s in collect(local)["services"]}
