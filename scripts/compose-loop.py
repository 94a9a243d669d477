"""The learning loop through a running compose stack, from the host: samples in, a prediction out.

Defines the trainer's stream (the compose trainer learns the default `demo` model: logistic,
32 features), sends labelled samples through the SDK's `SampleProducer` to the raw topic,
waits until the inference server serves a version of the model over KServe V2 (asked with
tritonclient, the client users bring), and checks a prediction. Used by
scripts/compose-test.sh; exits non-zero when the loop does not close within `--timeout`.

    python scripts/compose-loop.py --kafka 127.0.0.1:9092 --inference 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import tritonclient.grpc as triton

from services.trainer.settings import TrainerSettings
from shared.errors import Conflict
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.cli.streams import streams_topic
from streamlearn.client import SampleProducer
from streamlearn.client.datasets import Synthetic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--inference", default="127.0.0.1:8001")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    trainer = TrainerSettings()  # the compose trainer's model and stream are the defaults
    model, features = trainer.model_name, trainer.config.model.features
    kafka = KafkaSettings(bootstrap_servers=args.kafka)
    dataset = Synthetic("binary", features=features, seed=7)
    try:
        publish_definition(kafka, streams_topic(kafka), dataset.definition(trainer.stream))
        print(f"loop: stream {trainer.stream!r} defined ({features} features)")
    except Conflict:
        print(f"loop: stream {trainer.stream!r} exists already")

    started = time.monotonic()
    with SampleProducer(kafka=kafka, stream=trainer.stream) as producer:
        for x, y in dataset.chunks(args.samples):
            producer.send_columns(x, y)
        delivered = producer.flush(60)  # raises when records are left or refused
    print(f"loop: {delivered} samples delivered through the SDK")

    client = triton.InferenceServerClient(args.inference)
    deadline = started + args.timeout
    version = ""
    while time.monotonic() < deadline:
        try:
            if client.is_model_ready(model):
                versions = client.get_model_metadata(model).versions
                version = versions[-1] if versions else "(unnamed)"
                break
        except triton.InferenceServerException:
            pass
        time.sleep(1)
    if not version:
        print(f"loop: FAILED: no version of {model!r} served within {args.timeout:.0f}s")
        return 1
    print(f"loop: {model!r} version {version} served after {time.monotonic() - started:.1f}s")

    metadata = client.get_model_metadata(model)
    (spec,) = metadata.inputs
    # 64 rows: the server's max_batch_size
    x, y = next(Synthetic("binary", features=features, seed=7).chunks(64, chunk=64))
    batch = triton.InferInput(spec.name, list(x.shape), spec.datatype)
    batch.set_data_from_numpy(x.astype(np.float32))
    reply = client.infer(model, [batch])
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


if __name__ == "__main__":
    sys.exit(main())
