"""Hardened serving over real gRPC and the real broker: bad events, bad requests, many watchers."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from confluent_kafka import Producer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc
from services.inference import app as inference_app
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from services.inference.settings import InferenceSettings
from services.registry.settings import RegistrySettings
from shared.clients.registry import RegistryClient
from shared.errors import Conflict, InvalidArgument
from shared.grpc.server import ServiceBinding, build_server, mark_serving
from shared.kafka.config import producer_config
from shared.net import free_port
from shared.onnx_models import INPUT, OUTPUT, linear_model
from streamlearn.client import InferenceClient
from streamlearn.v1 import registry_pb2, registry_pb2_grpc
from tests.helpers import lookup_model, wait_until
from tests.integration.conftest import Running

FEATURES = 4


def start_inference(
    registry: Running, settings: RegistrySettings, names: list[str], **overrides: Any
) -> Running:
    inference = InferenceSettings(
        grpc_port=0,
        metrics_port=0,
        registry_address=registry.address,
        kafka=settings.kafka,
        topics=settings.topics,
        model_names=names,
        resync_s=600.0,  # only events can make it swap within the test
        **{"drain_delay_s": 0.05, **overrides},
    )
    return Running(inference, inference_app.build, inference_app.run)


def health_status(address: str, service: str) -> Any:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


@pytest.fixture
def demo(
    registry_service: Running, registry_client: RegistryClient, registry_settings: RegistrySettings
) -> Iterator[Running]:
    _publish_demo(registry_client)
    service = start_inference(registry_service, registry_settings, ["demo"])
    client = triton.InferenceServerClient(url=service.address)
    wait_until(lambda: client.is_server_ready())
    yield service
    service.close()


def served_version(address: str) -> str:
    client = triton.InferenceServerClient(url=address)
    tensor = triton.InferInput(INPUT, [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(np.ones((1, FEATURES), np.float32))
    return str(client.infer("demo", [tensor]).get_response().model_version)


def test_an_undecodable_model_event_does_not_stop_the_follower(
    demo: Running, registry_client: RegistryClient, registry_settings: RegistrySettings
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    wait_until(lambda: health_status(demo.address, inference_app.SERVICE) == serving)
    bad_before = REGISTRY.get_sample_value("streamlearn_inference_bad_events_total") or 0.0
    producer = Producer(producer_config(registry_settings.kafka, linger_ms=0))
    producer.produce(registry_settings.topics.model_events, b"\xff\xff\xff\xff", key=b"demo")
    assert producer.flush(10) == 0
    wait_until(
        lambda: (
            (REGISTRY.get_sample_value("streamlearn_inference_bad_events_total") or 0.0)
            > bad_before
        )
    )
    newer = registry_client.register("demo", linear_model(-np.ones(FEATURES), 0.0)).version
    registry_client.set_alias("demo", "production", newer)
    wait_until(lambda: served_version(demo.address) == str(newer))
    assert health_status(demo.address, inference_app.SERVICE) == serving


def test_a_stream_survives_a_request_that_fails_at_runtime(
    registry_service: Running, registry_client: RegistryClient, registry_settings: RegistrySettings
) -> None:
    registry_client.create_model("lookup")
    version = registry_client.register("lookup", lookup_model()).version
    registry_client.set_alias("lookup", "production", version)
    service = start_inference(registry_service, registry_settings, ["lookup"])
    try:
        client = triton.InferenceServerClient(url=service.address)
        wait_until(lambda: client.is_server_ready())
        answers: list[Any] = []
        done = threading.Event()

        def callback(result: Any, error: Any) -> None:
            answers.append(error or result)
            if len(answers) == 3:
                done.set()

        client.start_stream(callback=callback)
        for request_id, index in (("a", 1), ("b", 99), ("c", 2)):
            tensor = triton.InferInput("idx", [1, 1], "INT64")
            tensor.set_data_from_numpy(np.array([[index]], np.int64))
            client.async_stream_infer("lookup", [tensor], request_id=request_id)
        assert done.wait(20), f"only {len(answers)} answers: the stream broke"
        client.stop_stream()
        assert isinstance(answers[1], triton.InferenceServerException)
        assert "indices" in answers[1].message()
        assert [answers[0].get_response().id, answers[2].get_response().id] == ["a", "c"]
        assert answers[2].as_numpy("score").tolist() == [[3.0]]
        with pytest.raises(triton.InferenceServerException) as raised:
            tensor = triton.InferInput("idx", [1, 1], "INT64")
            tensor.set_data_from_numpy(np.array([[7]], np.int64))
            client.infer("lookup", [tensor])
        assert raised.value.status() == "StatusCode.INTERNAL"
    finally:
        service.close()


def test_watchers_over_the_cap_are_refused_and_other_calls_keep_answering(
    registry_settings: RegistrySettings,
) -> None:
    service = Running(registry_settings.model_copy(update={"grpc_workers": 2, "max_watchers": 2}))
    channel = grpc.insecure_channel(service.address)
    try:
        stub = registry_pb2_grpc.ModelRegistryStub(channel)  # type: ignore[no-untyped-call]
        for name in ("w", "w1"):  # events 1 and 2: a watcher after 1 gets one at once
            stub.CreateModel(registry_pb2.CreateModelRequest(name=name), timeout=10)
        streams, codes = [], []
        for _ in range(5):  # more watchers than the cap, and than the free workers
            streams.append(stub.Watch(registry_pb2.WatchRequest(after_sequence=1), timeout=30))
        for call in streams:
            try:
                next(call)
                codes.append("streaming")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        assert sorted(codes) == ["RESOURCE_EXHAUSTED"] * 3 + ["streaming"] * 2
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert stub.GetModel(registry_pb2.GetModelRequest(name="w"), timeout=5).name == "w"
        for call in streams:
            call.cancel()
        # Cancelled watchers free their slots: as many new ones stream, and one more is refused.
        fresh = _watchers_admitted(stub, 2)
        extra = stub.Watch(registry_pb2.WatchRequest(after_sequence=1), timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            next(extra)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in fresh:
            call.cancel()
    finally:
        channel.close()
        service.close()


def _watchers_admitted(stub: Any, count: int, timeout: float = 30.0) -> list[Any]:
    """`count` Watch streams that each got an event, once the server freed enough slots."""
    deadline = time.monotonic() + timeout
    while True:
        calls = [
            stub.Watch(registry_pb2.WatchRequest(after_sequence=1), timeout=30)
            for _ in range(count)
        ]
        try:
            for call in calls:
                next(call)
            return calls
        except grpc.RpcError as exc:
            for call in calls:
                call.cancel()
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert time.monotonic() < deadline, "cancelled watchers never freed their slots"
            # Longer than a watcher's wait for changes (1 s): the calls this round cancelled
            # have let their slots go, so rounds do not keep colliding with their own leftovers.
            time.sleep(1.5)


def test_uploads_over_the_cap_are_cut_off_and_leave_nothing(
    registry_settings: RegistrySettings,
) -> None:
    settings = registry_settings.model_copy(update={"max_artifact_bytes": 1024 * 1024})
    service = Running(settings)
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = registry_pb2_grpc.ModelRegistryStub(channel)  # type: ignore[no-untyped-call]
            stub.CreateModel(registry_pb2.CreateModelRequest(name="big"), timeout=10)
            data = b"x" * (3 * 1024 * 1024)
            for declared in (len(data), 1024 * 1024):  # honest header, then an understated one
                header = registry_pb2.RegisterVersionHeader(
                    model="big", sha256=hashlib.sha256(data).hexdigest(), size_bytes=declared
                )
                parts = [registry_pb2.RegisterVersionRequest(header=header)] + [
                    registry_pb2.RegisterVersionRequest(chunk=data[i : i + 512 * 1024])
                    for i in range(0, len(data), 512 * 1024)
                ]
                with pytest.raises(grpc.RpcError) as raised:
                    stub.RegisterVersion(iter(parts), timeout=30)
                assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        leftovers = [p for p in settings.resolved_artifact_dir.rglob("*") if p.is_file()]
        assert leftovers == []
    finally:
        service.close()


def test_live_metrics_must_be_finite_and_rollbacks_walk_back(
    registry_settings: RegistrySettings,
) -> None:
    service = Running(registry_settings.model_copy(update={"policy_metric": "logloss"}))
    try:
        with RegistryClient(service.address) as client:
            client.create_model("p")
            for loss in (0.5, 0.4, 0.3):
                v = client.register(
                    "p", f"{loss}".encode(), lineage=registry_pb2.Lineage(metrics={"logloss": loss})
                )
                client.set_alias("p", "candidate", v.version)
            assert client.get_version("p", alias="production").version == 3
            for value in (math.nan, math.inf):
                with pytest.raises(InvalidArgument, match="finite"):
                    client.report_live_metric("p", 3, "logloss", value)
            assert client.get_version("p", alias="production").version == 3
            assert client.rollback("p").to_version == 2
            assert client.rollback("p").to_version == 1
            with pytest.raises(Conflict, match="nothing to roll back to"):
                client.rollback("p")
    finally:
        service.close()


DRAIN_DELAY_S = 2.0


def infer_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="demo")
    request.inputs.add(name=INPUT, datatype="FP32", shape=[1, FEATURES])
    request.raw_input_contents.append(np.ones((1, FEATURES), np.float32).tobytes())
    return request


def test_sigterm_turns_readiness_off_first_and_drops_no_request(
    registry_service: Running,
    registry_client: RegistryClient,
    registry_settings: RegistrySettings,
    tmp_path: Path,
) -> None:
    _publish_demo(registry_client)
    port = free_port()
    address = f"127.0.0.1:{port}"
    settings = {
        "INFERENCE_MAX_QUEUE_DELAY_US": "20000",  # requests wait in the batcher: in flight
        "INFERENCE_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
        "INFERENCE_DRAIN_GRACE_S": "10",
    }
    process = _spawn_inference(registry_service, registry_settings, port, tmp_path, settings)
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        wait_until(lambda: _health_or_none(address) == serving, timeout=60)
        calls: list[tuple[float, float, str]] = []  # (start, end, status code name)
        done = threading.Event()

        def call() -> None:
            with grpc.insecure_channel(address) as channel:
                stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
                while not done.is_set():
                    start = time.monotonic()
                    try:
                        stub.ModelInfer(infer_request(), timeout=10)
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = exc.code().name
                        time.sleep(0.01)
                    calls.append((start, time.monotonic(), code))

        clients = [threading.Thread(target=call) for _ in range(4)]
        for client in clients:
            client.start()
        wait_until(lambda: sum(c[2] == "OK" for c in calls) >= 20)
        sigterm = time.monotonic()
        process.send_signal(signal.SIGTERM)
        draining = health_pb2.HealthCheckResponse.NOT_SERVING
        wait_until(lambda: _health_or_none(address) == draining, timeout=10)
        not_serving = time.monotonic()
        assert process.wait(60) == 0
        time.sleep(0.2)  # clients see the server gone
        done.set()
        for client in clients:
            client.join(30)
    finally:
        if process.poll() is None:
            process.kill()
    failed = [c for c in calls if c[2] != "OK"]
    # Readiness went first: requests kept being answered after health said NOT_SERVING ...
    assert any(start > not_serving and code == "OK" for start, _, code in calls)
    # ... no request failed before the drain delay had passed, and only the server's
    # absence failed any: in-flight requests finished. A call that reaches the connection
    # while the server stops is refused as UNAVAILABLE or, when its stream was already
    # open, CANCELLED (gRPC core's shutdown of unmatched calls); both started after the
    # drain delay, when a real client's balancer had long stopped sending here.
    assert failed, "the clients never saw the server go"
    assert min(start for start, _, _ in failed) >= sigterm + DRAIN_DELAY_S
    assert Counter(code for _, _, code in failed).keys() <= {"UNAVAILABLE", "CANCELLED"}


def _health_or_none(address: str) -> Any:
    try:
        return health_status(address, inference_app.SERVICE)
    except grpc.RpcError:
        return None


def _loopback_server(host: str, port: int, scale: float) -> tuple[grpc.Server, InferenceServicer]:
    """An inference server of `demo` on host:port whose weights tell the servers apart."""
    repository = Repository(["demo"])
    repository.model("demo").swap(
        LoadedModel("demo", 1, linear_model(np.full(FEATURES, scale), 0.0, sigmoid=False))
    )
    servicer = InferenceServicer(Engine(repository, 64, 0.0), 1 << 20)
    binding = ServiceBinding(
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer,
        inference_app.SERVICE,
    )
    server, health, _ = build_server(f"{host}:{port}", [binding], max_workers=4)
    mark_serving(health, [inference_app.SERVICE])
    server.start()
    return server, servicer


def test_the_sdk_client_spreads_calls_over_every_address_of_its_target() -> None:
    port = free_port()
    first, _ = _loopback_server("127.0.0.1", port, 1.0)
    try:
        second, _ = _loopback_server("127.0.0.2", port, 2.0)
    except Exception as exc:  # no 127.0.0.2 on this host: nothing to balance over
        first.stop(0)
        pytest.fail(f"127.0.0.2 is not a usable loopback address here: {exc}")
    try:
        x = np.ones((1, FEATURES), np.float32)
        with InferenceClient(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}") as client:
            seen: set[float] = set()

            def score() -> float:
                return float(client.predict("demo", x, output=OUTPUT)[0][0, 0])

            # Round robin picks among connected servers: the second may connect a bit later.
            def both_answered() -> bool:
                seen.add(score())
                return len(seen) == 2

            wait_until(both_answered)
            answers = Counter(score() for _ in range(20))
    finally:
        first.stop(0)
        second.stop(0)
    # Both connected, each server (score 4 or 8) answers every other call.
    assert answers == {4.0: 10, 8.0: 10}


def _publish_demo(registry_client: RegistryClient) -> int:
    """A "demo" model with one version, aliased `production`; returns the version."""
    registry_client.create_model("demo")
    version = registry_client.register("demo", linear_model(np.ones(FEATURES), 0.0)).version
    registry_client.set_alias("demo", "production", version)
    return int(version)


def _spawn_inference(
    registry: Running,
    registry_settings: RegistrySettings,
    port: int,
    tmp_path: Path,
    settings: dict[str, str],
) -> subprocess.Popen[bytes]:
    """`python -m services.inference` serving "demo" on `port`, with more INFERENCE_ settings."""
    env = {
        "INFERENCE_GRPC_PORT": str(port),
        "INFERENCE_METRICS_PORT": "0",
        "INFERENCE_REGISTRY_ADDRESS": registry.address,
        "INFERENCE_KAFKA__BOOTSTRAP_SERVERS": registry_settings.kafka.bootstrap_servers,
        "INFERENCE_TOPICS__MODEL_EVENTS": registry_settings.topics.model_events,
        "INFERENCE_MODEL_NAMES": json.dumps(["demo"]),
    } | settings
    with (tmp_path / "inference.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.inference"],
            env=os.environ | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_workers_share_the_port_and_go_down_together(
    registry_service: Running,
    registry_client: RegistryClient,
    registry_settings: RegistrySettings,
    tmp_path: Path,
) -> None:
    """INFERENCE_WORKERS=2: two processes answer on one port; a dead one stops the set."""
    version = _publish_demo(registry_client)
    port, metrics = free_port(), _free_pair()  # workers 0 and 1 export on metrics, metrics + 1
    address = f"127.0.0.1:{port}"
    settings = {
        "INFERENCE_WORKERS": "2",
        "INFERENCE_METRICS_PORT": str(metrics),
        "INFERENCE_DRAIN_DELAY_S": "0.05",
    }
    process = _spawn_inference(registry_service, registry_settings, port, tmp_path, settings)
    try:
        wait_until(lambda: len(_children(process.pid)) == 2, timeout=30)
        workers = _children(process.pid)
        serving = health_pb2.HealthCheckResponse.SERVING
        wait_until(lambda: _health_or_none(address) == serving, timeout=60)

        def ask() -> None:  # a connection of its own: the kernel picks the worker
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(address, options=options) as channel:
                stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
                reply = stub.ModelInfer(infer_request(), timeout=10, wait_for_ready=True)
                assert reply.model_version == str(version)

        def answered(metrics_port: int) -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as page:
                text = page.read().decode()
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("streamlearn_inference_requests_total{")
            )

        def both_answered() -> bool:
            ask()
            return answered(metrics) > 0 and answered(metrics + 1) > 0

        wait_until(both_answered, timeout=60)
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait(60) == 1  # the set goes down: its manager restarts it whole
        wait_until(lambda: not Path(f"/proc/{workers[1]}").exists(), timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


def _free_pair() -> int:
    """A port p with p + 1 free too (bound and released here)."""
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return int(port)
