"""Serving overhead: the inference service over gRPC vs ONNX Runtime called in-process.

For the demo model (logistic regression, 32 features, batch of 1 row per request) at
concurrency 1, 8 and 32, with dynamic batching off and on, the service's p50/p99 latency and
throughput are reported beside ONNX Runtime's `session.run` on the same inputs from the same
number of threads, and its throughput beside a bare grpcio server answering the same request
with a fixed response of the same shape (`echo.py`, as many worker threads, its own process,
the same client): what the protocol and model path cost beyond Python gRPC. Registry and
inference run as separate processes, like in production; the service is measured again
with `INFERENCE_WORKERS` processes sharing its port. Each client thread has a connection of
its own. Every server runs side by side for the whole measure and the rounds alternate
between them (medians of three). On a 2-core box the load generator shares the cores with
the servers: a second worker process has no core of its own to run on.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from bench.core import BenchContext, Figure
from bench.processes import service
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc
from shared.clients.registry import RegistryClient
from shared.net import free_port
from shared.onnx_models import INPUT, OUTPUT, linear_model
from shared.ort import make_session

FEATURES = 32
LEVELS = (1, 8, 32)
WORKERS = 2


ROUNDS = 3
ECHO = "echo"
UNBATCHED = "unbatched"
WORKERS_LABEL = f"unbatched, INFERENCE_WORKERS={WORKERS}"
CONFIGURATIONS = {
    UNBATCHED: {"INFERENCE_MAX_QUEUE_DELAY_US": "0"},
    "batched": {"INFERENCE_MAX_QUEUE_DELAY_US": "500"},
    WORKERS_LABEL: {"INFERENCE_MAX_QUEUE_DELAY_US": "0", "INFERENCE_WORKERS": str(WORKERS)},
}


def run(ctx: BenchContext) -> list[Figure]:
    """Measure ORT in-process, then the echo and the service configurations side by side.

    Every server runs for the whole measure; each round loads each of them at every
    concurrency, one server further on each round, and the medians over `ROUNDS` are
    reported: the box's slow and fast minutes fall on all of them alike.
    """
    seconds = max(0.5, 3.0 * ctx.scale)
    model = linear_model(np.linspace(-1, 1, FEATURES).astype(np.float32), 0.1)
    x = np.random.default_rng(0).normal(size=(1, FEATURES)).astype(np.float32)
    session = make_session(model, "auto")

    def ort_call() -> Callable[[], object]:
        return lambda: session.run([OUTPUT], {INPUT: x})

    direct = {c: _load(c, seconds, ort_call) for c in LEVELS}
    with contextlib.ExitStack() as servers:
        addresses = {ECHO: servers.enter_context(_echo_server())} | {
            label: servers.enter_context(served(ctx, model, settings))
            for label, settings in CONFIGURATIONS.items()
        }
        measured = _alternated(addresses, x, seconds)
    echo = measured.pop(ECHO)
    figures = []
    for label, served_ in measured.items():
        for c in LEVELS:
            baselines = [("bare grpcio echo (one process)", echo[c]["rps"])]
            if label == WORKERS_LABEL:  # and against the one process of the same run
                baselines.append(("unbatched, 1 worker", measured[UNBATCHED][c]["rps"]))
            else:
                figures += _compare(f"c={c} {label}", served_[c], direct[c])
            figures += [
                Figure(f"throughput c={c} {label} (median of {ROUNDS})", served_[c]["rps"],
                       "req/s", base, rps)
                for base, rps in baselines
            ]  # fmt: skip
    return figures


def _alternated(
    addresses: dict[str, str], x: np.ndarray, seconds: float
) -> dict[str, dict[int, dict[str, float]]]:
    """Per server and concurrency, the median of each figure over alternated rounds."""
    names = list(addresses)
    rounds: dict[str, dict[int, list[dict[str, float]]]] = {
        name: {c: [] for c in LEVELS} for name in names
    }
    for round_ in range(ROUNDS):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            for c in LEVELS:
                rounds[name][c].append(_load(c, seconds, _grpc_call(addresses[name], x)))
    return {
        name: {
            c: {key: statistics.median(r[key] for r in per_c[c]) for key in per_c[c][0]}
            for c in LEVELS
        }
        for name, per_c in rounds.items()
    }


@contextlib.contextmanager
def _echo_server() -> Iterator[str]:
    """A bare grpcio server answering a fixed response (`echo.py`), its own process."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp, service(
        "bench.echo", {}, address, "inference.GRPCInferenceService", Path(tmp) / "echo.log",
        args=[str(port)],
    ):  # fmt: skip
        yield address


def _compare(label: str, served: dict[str, float], direct: dict[str, float]) -> list[Figure]:
    return [
        Figure(f"p50 {label}", served["p50"], "ms", "ORT in-process", direct["p50"], False),
        Figure(f"p99 {label}", served["p99"], "ms", "ORT in-process", direct["p99"], False),
        Figure(f"throughput {label}", served["rps"], "req/s", "ORT in-process", direct["rps"]),
    ]


@contextlib.contextmanager
def served(
    ctx: BenchContext, model: bytes, settings: dict[str, str] | None = None, name: str = "demo"
) -> Iterator[str]:
    """A registry and an inference service (own processes) serving `model` as `name`.

    Yields the inference address; `settings`: more INFERENCE_ variables.
    """
    registry_port, inference_port = free_port(), free_port()
    events = f"bench.inference.events.{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        common = {
            "KAFKA__BOOTSTRAP_SERVERS": ctx.kafka.bootstrap_servers,
            "TOPICS__MODEL_EVENTS": events,
            "LOG_JSON": "true",
            "STATE_DIR": tmp,
        }
        registry_env = {f"REGISTRY_{k}": v for k, v in common.items()} | {
            "REGISTRY_GRPC_PORT": str(registry_port),
            "REGISTRY_METRICS_PORT": "0",
        }
        inference_env = (
            {f"INFERENCE_{k}": v for k, v in common.items()}
            | {
                "INFERENCE_GRPC_PORT": str(inference_port),
                "INFERENCE_METRICS_PORT": "0",
                "INFERENCE_REGISTRY_ADDRESS": f"127.0.0.1:{registry_port}",
                "INFERENCE_MODEL_NAMES": json.dumps([name]),
            }
            | (settings or {})
        )
        with service(
            "services.registry",
            registry_env,
            f"127.0.0.1:{registry_port}",
            "streamlearn.v1.ModelRegistry",
            Path(tmp) / "registry.log",
        ):
            with RegistryClient(f"127.0.0.1:{registry_port}") as registry:
                registry.create_model(name)
                version = registry.register(name, model).version
                registry.set_alias(name, "production", version)
            address = f"127.0.0.1:{inference_port}"
            with service(
                "services.inference",
                inference_env,
                address,
                "inference.GRPCInferenceService",
                Path(tmp) / "inference.log",
            ):
                yield address


def _grpc_call(address: str, x: np.ndarray) -> Callable[[], Callable[[], object]]:
    request = pb.ModelInferRequest(model_name="demo", raw_input_contents=[x.tobytes()])
    request.inputs.add(name=INPUT, datatype="FP32", shape=list(x.shape))

    def per_thread() -> Callable[[], object]:
        # A connection per thread (gRPC would share one between channels to one target):
        # the kernel spreads connections over INFERENCE_WORKERS processes, not requests.
        channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        return lambda: stub.ModelInfer(request)

    return per_thread


def _load(
    concurrency: int, seconds: float, make_call: Callable[[], Callable[[], object]]
) -> dict[str, float]:
    """Run `concurrency` closed-loop threads for `seconds`; latency percentiles and rate."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        call = make_call()  # one client per thread
        call()  # warm up
        start.wait()
        while time.perf_counter() < deadline[0]:
            t = time.perf_counter()
            call()
            latencies[i].append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds + 0.05
    start.wait()
    for t in threads:
        t.join()
    flat = sorted(v for per in latencies for v in per)
    return {
        "p50": statistics.median(flat) * 1e3,
        "p99": flat[int(len(flat) * 0.99)] * 1e3,
        "rps": len(flat) / seconds,
    }
