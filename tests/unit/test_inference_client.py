"""The SDK's inference client without a server: balancing options and named records on the wire;
and the service's drain order (readiness, delay, then the server) on fakes."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2

from inference import grpc_service_pb2 as pb
from services.inference import app as inference_app
from shared.errors import InvalidArgument
from streamlearn.client.inference import InferenceClient, channel_options


def service_config(options: list[tuple[str, Any]]) -> Any:
    found = [json.loads(v) for k, v in options if k == "grpc.service_config"]
    return found[0] if found else None


@pytest.mark.parametrize(
    "target", ["dns:///inference-headless:8001", "dns:inference:8001", "ipv4:10.0.0.1:1,10.0.0.2:1"]
)
def test_resolver_targets_are_balanced_round_robin(target: str) -> None:
    assert service_config(channel_options(target)) == {"loadBalancingConfig": [{"round_robin": {}}]}


@pytest.mark.parametrize("target", ["127.0.0.1:8001", "inference:8001", "unix:/tmp/s"])
def test_plain_targets_keep_grpcs_default_policy(target: str) -> None:
    assert service_config(channel_options(target)) is None


def test_the_clients_channel_carries_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, list[tuple[str, Any]]]] = []
    real = grpc.insecure_channel

    def recording(target: str, options: Any = None, **kw: Any) -> grpc.Channel:
        opened.append((target, list(options or [])))
        return real(target, options=options, **kw)

    monkeypatch.setattr(grpc, "insecure_channel", recording)
    with InferenceClient("dns:///inference-headless:8001"):
        pass
    assert opened[-1][0] == "dns:///inference-headless:8001"
    assert service_config(opened[-1][1]) == {"loadBalancingConfig": [{"round_robin": {}}]}
    assert ("grpc.max_receive_message_length", 64 * 1024 * 1024) in opened[-1][1]


class FakeStub:
    """Answers ModelInfer with one FP32 score per row and keeps the request."""

    def __init__(self) -> None:
        self.requests: list[pb.ModelInferRequest] = []

    def ModelInfer(self, request: pb.ModelInferRequest, timeout: float) -> Any:
        self.requests.append(request)
        rows = request.inputs[0].shape[0]
        reply = pb.ModelInferResponse(model_name=request.model_name, model_version="3")
        reply.outputs.add(name="score", datatype="FP32", shape=[rows, 1])
        reply.raw_output_contents.append(np.arange(rows, dtype=np.float32).tobytes())
        return reply


def split_bytes(raw: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        elements.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return elements


def test_records_travel_as_one_bytes_input_of_json_objects() -> None:
    client = InferenceClient("127.0.0.1:1")
    stub = FakeStub()
    client._stub = stub  # type: ignore[assignment]
    rows: list[dict[str, Any]] = [
        {"age": np.float32(31.5), "city": "paris", "n": np.int64(7)},
        {"age": math.nan, "city": None},
    ]
    scores, version = client.predict("m", records=rows, version=3, request_id="imp-1")
    client.close()
    assert (scores.tolist(), version) == ([[0.0], [1.0]], 3)
    request = stub.requests[0]
    assert (request.model_version, len(request.inputs)) == ("3", 1)
    assert request.id == "imp-1"  # the prediction log's event ids: imp-1/0, imp-1/1
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("records", "BYTES", [2])
    decoded = [json.loads(e) for e in split_bytes(request.raw_input_contents[0])]
    assert decoded == [{"age": 31.5, "city": "paris", "n": 7}, {"age": None, "city": None}]


def test_predict_takes_features_or_records_and_records_must_be_json() -> None:
    client = InferenceClient("127.0.0.1:1")
    client._stub = FakeStub()  # type: ignore[assignment]
    try:
        with pytest.raises(InvalidArgument, match="either features or records"):
            client.predict("m")
        with pytest.raises(InvalidArgument, match="either features or records"):
            client.predict("m", np.ones((1, 2), np.float32), records=[{}])
        with pytest.raises(InvalidArgument, match="not JSON-able"):
            client.predict("m", records=[{"age": math.inf}])
        with pytest.raises(InvalidArgument, match="not JSON-able"):
            client.predict("m", records=[{"when": object()}])
    finally:
        client.close()


# --- the drain on SIGTERM ---------------------------------------------------------------------


class RecordingServer:
    """Records when `stop` was called, with which grace, and what health said then."""

    def __init__(self, health_servicer: health.HealthServicer) -> None:
        self._health = health_servicer
        self.stopped: list[tuple[float, float | None, Any]] = []

    def stop(self, grace: float | None) -> Any:
        request = health_pb2.HealthCheckRequest(service=inference_app.SERVICE)
        self.stopped.append((time.monotonic(), grace, self._health.Check(request, None).status))
        return SimpleNamespace(wait=lambda timeout=None: True)


def test_drain_turns_readiness_off_waits_the_delay_then_stops_with_the_grace() -> None:
    health_servicer = health.HealthServicer()
    health_servicer.set(inference_app.SERVICE, health_pb2.HealthCheckResponse.SERVING)
    server = RecordingServer(health_servicer)
    app = SimpleNamespace(
        health=health_servicer, server=server, settings=SimpleNamespace(drain_grace_s=7.0)
    )
    started = time.monotonic()
    inference_app.drain(app, delay_s=0.3)  # type: ignore[arg-type]
    [(stopped_at, grace, status)] = server.stopped
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert stopped_at - started >= 0.3 and grace == 7.0
    # Once draining, a late "serving" (e.g. from the follower guard) changes nothing.
    health_servicer.set(inference_app.SERVICE, health_pb2.HealthCheckResponse.SERVING)
    request = health_pb2.HealthCheckRequest(service=inference_app.SERVICE)
    assert health_servicer.Check(request, None).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_the_drain_delay_is_a_setting_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.inference.settings import InferenceSettings

    assert InferenceSettings().drain_delay_s > 0  # production default: some seconds
    monkeypatch.setenv("INFERENCE_DRAIN_DELAY_S", "0.25")
    assert InferenceSettings().drain_delay_s == 0.25


def fake_app(delay_s: float) -> tuple[Any, RecordingServer]:
    health_servicer = health.HealthServicer()
    health_servicer.set(inference_app.SERVICE, health_pb2.HealthCheckResponse.SERVING)
    server = RecordingServer(health_servicer)
    server.start = lambda: None  # type: ignore[attr-defined]
    nothing = SimpleNamespace(
        start=lambda: None,
        stop=lambda: None,
        close=lambda: None,
        reconcile_all=lambda: None,
        alive=lambda: True,
        following=lambda: True,
    )
    app = SimpleNamespace(
        settings=SimpleNamespace(
            metrics_port=0, drain_delay_s=delay_s, drain_grace_s=3.0, reuse_port=False
        ),
        server=server,
        health=health_servicer,
        watcher=nothing,
        registry=nothing,
        engine=SimpleNamespace(repository=SimpleNamespace(ready=lambda: True), close=lambda: None),
        port=0,
        prediction_log=None,  # INFERENCE_LOG_PREDICTIONS off
        log_producer=None,
    )
    return app, server


def test_run_drains_with_the_configured_delay_when_asked_to_stop() -> None:
    import threading

    app, server = fake_app(delay_s=0.3)
    stop = threading.Event()
    stop.set()  # SIGTERM before the first loop
    started = time.monotonic()
    inference_app.run(app, stop)
    [(stopped_at, grace, status)] = server.stopped
    assert stopped_at - started >= 0.3 and grace == 3.0
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
