"""The learning loop through a running compose stack, from the host: samples in, a prediction out.

Defines the trainer's stream (the compose trainer learns the default `demo` model: logistic,
32 features), sends labelled samples through the SDK's `SampleProducer` to the raw topic,
waits until the inference server serves a version of the model over KServe V2 (asked with
tritonclient, the client users bring), and checks a prediction. Used by
scripts/compose-test.sh; exits non-zero when the loop does not close within `--timeout`.

    python scripts/compose-loop.py --kafka 127.0.0.1:9092 --inference 127.0.0.1:8001

With `--secrets DIR` (scripts/compose-secrets.py's directory; docker-compose.secure.yml) the
loop runs as the roles a user would take: the stream is defined as the admin, the samples are
sent with the producer's SCRAM credentials over TLS, the model is asked for over TLS with a
reader's token; and it checks what must be refused: a plaintext Kafka client, inference
called without a token, and the producer writing anything but the raw topic (its ACLs).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton  # type: ignore[import-untyped]
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from services.trainer.settings import TrainerSettings
from shared.errors import Conflict
from shared.kafka.config import producer_config
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import publish_definition
from streamlearn.cli.streams import streams_topic
from streamlearn.client import SampleProducer
from streamlearn.client.datasets import Synthetic
from streamlearn.system.secure import KAFKA_PRINCIPAL, LocalSecrets


@dataclass(frozen=True)
class Access:
    """How the loop reaches the stack: as whom on Kafka, and how it calls inference."""

    admin: KafkaSettings  # defines the stream
    producer: KafkaSettings  # sends the samples
    inference: dict[str, object] = field(default_factory=dict)  # tritonclient's TLS arguments
    headers: dict[str, str] | None = None  # the reader's token
    secured: bool = False


def access(kafka: str, secrets: Path | None) -> Access:
    """Plaintext, or the roles of a secured stack's secrets directory.

    Raises:
        SystemExit: `secrets` holds no secrets made by scripts/compose-secrets.py.

    """
    if secrets is None:
        plain = KafkaSettings(bootstrap_servers=kafka)
        return Access(admin=plain, producer=plain)
    found = LocalSecrets.of(secrets)
    if found is None:
        raise SystemExit(f"loop: {secrets} holds no secrets (scripts/compose-secrets.py)")
    reader = found.client_security("reader")
    token = reader.token.get_secret_value() if reader.token is not None else ""
    return Access(
        admin=found.kafka(found.broker.admin_user, kafka),
        producer=found.kafka(KAFKA_PRINCIPAL["producer"], kafka),
        inference={"ssl": True, "root_certificates": str(reader.ca_file)},
        headers={"authorization": f"Bearer {token}"},
        secured=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--inference", default="127.0.0.1:8001")
    parser.add_argument("--secrets", type=Path, help="a secured stack's secrets directory")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    trainer = TrainerSettings()  # the compose trainer's model and stream are the defaults
    model, features = trainer.model_name, trainer.config.model.features
    how = access(args.kafka, args.secrets)
    if how.secured and not _refused(args):
        return 1
    dataset = Synthetic("binary", features=features, seed=7)
    try:
        publish_definition(how.admin, streams_topic(how.admin), dataset.definition(trainer.stream))
        print(f"loop: stream {trainer.stream!r} defined ({features} features)")
    except Conflict:
        print(f"loop: stream {trainer.stream!r} exists already")

    started = time.monotonic()
    with SampleProducer(kafka=how.producer, stream=trainer.stream) as producer:
        for x, y in dataset.chunks(args.samples):
            producer.send_columns(x, y)
        delivered = producer.flush(60)  # raises when records are left or refused
    who = f" as {how.producer.sasl_username!r} over SASL_SSL" if how.secured else ""
    print(f"loop: {delivered} samples delivered through the SDK{who}")
    if how.secured and not _producer_kept_off_the_training_topic(how.producer):
        return 1

    client = triton.InferenceServerClient(args.inference, **how.inference)
    deadline = started + args.timeout
    version = ""
    while time.monotonic() < deadline:
        try:
            if client.is_model_ready(model, headers=how.headers):
                versions = client.get_model_metadata(model, headers=how.headers).versions
                version = versions[-1] if versions else "(unnamed)"
                break
        except triton.InferenceServerException:
            pass
        time.sleep(1)
    if not version:
        print(f"loop: FAILED: no version of {model!r} served within {args.timeout:.0f}s")
        return 1
    over = " over TLS with a reader's token" if how.secured else ""
    print(f"loop: {model!r} version {version} served{over} after {time.monotonic() - started:.1f}s")

    metadata = client.get_model_metadata(model, headers=how.headers)
    (spec,) = metadata.inputs
    # 64 rows: the server's max_batch_size
    x, y = next(Synthetic("binary", features=features, seed=7).chunks(64, chunk=64))
    batch = triton.InferInput(spec.name, list(x.shape), spec.datatype)
    batch.set_data_from_numpy(x.astype(np.float32))
    reply = client.infer(model, [batch], headers=how.headers)
    scores = np.asarray(reply.as_numpy(metadata.outputs[0].name), dtype=np.float64).reshape(
        len(x), -1
    )[:, -1]
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        print(f"loop: FAILED: predictions are not probabilities: {scores[:5]}")
        return 1
    accuracy = float(np.mean((scores > 0.5) == (y > 0)))
    print(
        f"loop: prediction OK: {len(scores)} rows, mean p={scores.mean():.3f}, "
        f"accuracy {accuracy:.2f} on fresh samples of the stream"
    )
    return 0


def _refused(args: argparse.Namespace) -> bool:
    """Whether a plaintext Kafka client and a token-less inference call are both refused."""
    plaintext = AdminClient({"bootstrap.servers": args.kafka, "log_level": 0})
    try:
        plaintext.list_topics(timeout=5)
    except KafkaException:
        print("loop: a plaintext Kafka client is refused")
    else:
        print("loop: FAILED: a plaintext Kafka client listed the topics")
        return False
    found = LocalSecrets.of(args.secrets)
    assert found is not None  # checked by access()
    anonymous = triton.InferenceServerClient(
        args.inference, ssl=True, root_certificates=str(found.ca_file)
    )
    try:
        anonymous.is_server_ready()
    except triton.InferenceServerException as exc:
        if "UNAUTHENTICATED" not in str(exc.status()):
            print(f"loop: FAILED: inference without a token: {exc.status()}, not UNAUTHENTICATED")
            return False
        print("loop: inference over TLS without a token is refused (UNAUTHENTICATED)")
        return True
    print("loop: FAILED: inference answered a call without a token")
    return False


def _producer_kept_off_the_training_topic(kafka: KafkaSettings) -> bool:
    """Whether the broker's ACLs refuse the producer a write to the validated samples."""
    errors: list[str] = []
    producer = Producer(producer_config(kafka))
    producer.produce(
        TopicSettings().train, b"forged", on_delivery=lambda err, _: errors.append(str(err))
    )
    producer.flush(30)
    if errors and "TOPIC_AUTHORIZATION_FAILED" in errors[0]:
        print("loop: the producer may not write the training topic (TOPIC_AUTHORIZATION_FAILED)")
        return True
    print(f"loop: FAILED: the producer's write to the training topic gave {errors or 'nothing'}")
    return False


if __name__ == "__main__":
    sys.exit(main())
