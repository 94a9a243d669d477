"""Inference hardening: a follower that survives bad events, requests bound to their version."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2
from prometheus_client import REGISTRY

from inference import grpc_service_pb2 as pb
from services.inference import app as inference_app
from services.inference import follower as follower_module
from services.inference import model as model_module
from services.inference.engine import Engine
from services.inference.follower import EventWatcher, FollowerFailed
from services.inference.model import LoadedModel
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from shared.errors import InferenceFailed, InvalidArgument, StreamlearnError, Unavailable
from shared.fakes import FakeBroker, FakeConsumer
from shared.grpc.status import status_code_for
from shared.onnx_models import linear_model
from streamlearn.v1 import events_pb2
from tests.helpers import lookup_model

TOPIC = "model-events"
BAD_EVENT = b"\xff\xff\xff\xff"  # not a ModelEvent: an invalid wire type


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def event(model: str) -> bytes:
    return events_pb2.ModelEvent(
        model=model, type=events_pb2.MODEL_EVENT_TYPE_ALIAS_SET, version=2
    ).SerializeToString()


class AssignableConsumer(FakeConsumer):
    """A fake consumer that also takes `assign` (the watcher pins the topic's end)."""

    def __init__(self, broker: FakeBroker, fail_polls: int = 0) -> None:
        super().__init__(broker, "inference")
        self.fail_polls = fail_polls
        self.closed = False

    def assign(self, partitions: list[Any]) -> None:
        self.subscribe([p.topic for p in partitions])

    def close(self) -> None:
        self.closed = True

    def poll(self, timeout: float = -1) -> Any:
        if self.fail_polls:
            self.fail_polls -= 1
            raise RuntimeError("consumer broke")
        time.sleep(0.001)  # a fake returns at once; do not spin a core
        return super().poll(timeout)


class CountingFollower:
    """Stands in for a VersionFollower: counts reconciles."""

    def __init__(self, name: str) -> None:
        self.served = SimpleNamespace(name=name)
        self.reconciled = threading.Event()
        self.count = 0

    def reconcile(self) -> bool:
        self.count += 1
        self.reconciled.set()
        return True


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    fake.create_topic(TOPIC)
    # The fake has no watermarks to ask for: the watcher starts at offset 0.
    monkeypatch.setattr(follower_module, "high_watermarks", lambda consumer, topic: {0: 0})
    return fake


def watcher_for(consumer: FakeConsumer, follower: CountingFollower, **kw: Any) -> EventWatcher:
    return EventWatcher([follower], consumer, TOPIC, resync_s=3600, **kw)  # type: ignore[list-item, arg-type]


def test_an_undecodable_event_is_skipped_counted_and_later_events_still_apply(
    broker: FakeBroker,
) -> None:
    follower = CountingFollower("demo")
    watcher = watcher_for(AssignableConsumer(broker), follower)
    bad_before = sample("streamlearn_inference_bad_events_total")
    broker.append(TOPIC, b"demo", BAD_EVENT)
    watcher.start()
    try:
        broker.append(TOPIC, b"demo", event("demo"))
        assert follower.reconciled.wait(5), "the event after the bad one was never applied"
        assert watcher.alive()
        assert sample("streamlearn_inference_bad_events_total") == bad_before + 1
    finally:
        watcher.stop()


def _served_repository() -> Repository:
    repository = Repository(["demo"])
    repository.model("demo").swap(LoadedModel("demo", 1, linear_model(np.ones(2)), device="cpu"))
    return repository


def _until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def test_a_dead_follower_is_restarted_on_a_new_consumer_and_serves_once_it_polled(
    broker: FakeBroker,
) -> None:
    follower = CountingFollower("demo")
    first = AssignableConsumer(broker, fail_polls=1)
    built: list[AssignableConsumer] = []

    def new_consumer() -> AssignableConsumer:
        built.append(AssignableConsumer(broker))
        return built[-1]

    health_servicer = health.HealthServicer()
    watcher = watcher_for(first, follower, new_consumer=new_consumer)
    watcher.on_failure = inference_app.health_reporter(health_servicer)
    guard = inference_app.FollowerGuard(watcher, health_servicer, _served_repository())
    restarts_before = sample("streamlearn_inference_follower_restarts_total")
    watcher.start()
    try:
        assert _until(lambda: not watcher.alive())
        assert status(health_servicer) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert guard.check() is True
        assert len(built) == 1 and first.closed  # the failed consumer is not reused
        # Not SERVING on the restart itself: only once the new follower completed a poll.
        assert status(health_servicer) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _until(watcher.following)
        assert guard.check() is False
        assert status(health_servicer) == health_pb2.HealthCheckResponse.SERVING
        assert sample("streamlearn_inference_follower_restarts_total") == restarts_before + 1
        follower.reconciled.clear()
        broker.append(TOPIC, b"demo", event("demo"))
        assert follower.reconciled.wait(5), "the restarted follower does not follow"
    finally:
        watcher.stop()


class BlockedConsumer(AssignableConsumer):
    """A consumer whose polls hang until released: its thread lives but never cycles."""

    def __init__(self, broker: FakeBroker) -> None:
        super().__init__(broker)
        self.release = threading.Event()

    def poll(self, timeout: float = -1) -> Any:
        self.release.wait()
        return super().poll(timeout)


def test_health_is_serving_only_once_the_follower_completed_a_poll(broker: FakeBroker) -> None:
    consumer = BlockedConsumer(broker)
    health_servicer = health.HealthServicer()
    health_servicer.set(inference_app.SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    watcher = watcher_for(consumer, CountingFollower("demo"))
    guard = inference_app.FollowerGuard(watcher, health_servicer, _served_repository())
    watcher.start()
    try:
        assert watcher.alive()
        assert guard.check() is False
        assert status(health_servicer) == health_pb2.HealthCheckResponse.NOT_SERVING
        consumer.release.set()
        assert _until(watcher.following)
        guard.check()
        assert status(health_servicer) == health_pb2.HealthCheckResponse.SERVING
    finally:
        consumer.release.set()
        watcher.stop()


def test_a_follower_that_keeps_dying_ends_the_process(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> AssignableConsumer:
        return AssignableConsumer(broker, fail_polls=1_000_000)

    health_servicer = health.HealthServicer()
    watcher = watcher_for(broken(), CountingFollower("demo"), new_consumer=broken)
    guard = inference_app.FollowerGuard(
        watcher, health_servicer, _served_repository(), max_restarts=2, window_s=3600
    )
    watcher.start()
    try:
        for _ in range(2):
            assert _until(lambda: not watcher.alive())
            assert guard.check() is True
        assert _until(lambda: not watcher.alive())
        with pytest.raises(FollowerFailed, match="3 times"):
            guard.check()
        assert status(health_servicer) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "exiting to be restarted" in caplog.text
    finally:
        watcher.stop()


def status(servicer: health.HealthServicer) -> Any:
    request = health_pb2.HealthCheckRequest(service=inference_app.SERVICE)
    return servicer.Check(request, None).status


# --- version binding and runtime errors in the batcher ---------------------------------------


def call_concurrently(engine: Engine, call: Callable[[int], None], n: int) -> None:
    """`call(0..n-1)` on n threads at once; the engine is closed afterwards."""
    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        engine.close()


def batching_engine(*models: LoadedModel, delay_s: float = 0.05) -> Engine:
    repository = Repository([models[0].name])
    for model in models:
        repository.model(model.name).swap(model)
    return Engine(repository, max_batch=64, max_delay_s=delay_s)


def test_a_batched_request_runs_on_the_version_it_was_checked_against() -> None:
    old = LoadedModel("m", 1, linear_model(np.ones(4)), device="cpu")
    new = LoadedModel("m", 2, linear_model(np.ones(8)), device="cpu")  # another input shape
    engine = batching_engine(old)
    try:
        resolved = engine.resolve("m")
        engine.repository.model("m").swap(new)  # a swap between check and run
        ran_on, out = engine.infer(resolved, {"features": np.ones((2, 4), np.float32)}, [], False)
        assert ran_on.version == 1 and out["score"].shape == (2, 1)
    finally:
        engine.close()


def test_requests_for_different_versions_are_never_batched_together() -> None:
    v1 = LoadedModel("m", 1, linear_model(np.ones(4)), device="cpu")
    v2 = LoadedModel("m", 2, linear_model(-np.ones(4)), device="cpu")
    engine = batching_engine(v1, v2, delay_s=0.05)
    results: dict[int, tuple[int, np.ndarray]] = {}
    x = np.ones((1, 4), np.float32)

    def call(i: int) -> None:
        model = v1 if i % 2 else v2
        ran_on, out = engine.infer(model, {"features": x}, [], False)
        results[i] = (ran_on.version, out["score"])

    call_concurrently(engine, call, 20)
    assert len(results) == 20
    for i, (version, score) in results.items():
        assert version == (1 if i % 2 else 2)
        np.testing.assert_allclose(
            score,
            v1.run({"features": x})["score"] if i % 2 else v2.run({"features": x})["score"],
            rtol=1e-6,
        )


def test_a_runtime_error_fails_only_its_own_request_as_internal() -> None:
    model = LoadedModel("lookup", 1, lookup_model(), device="cpu")
    engine = batching_engine(model, delay_s=0.1)
    outcomes: dict[int, object] = {}
    start = threading.Barrier(6)

    def call(i: int) -> None:
        idx = np.array([[7 if i == 0 else i % 3]], np.int64)
        start.wait()
        try:
            outcomes[i] = engine.infer(model, {"idx": idx}, [], False)[1]["score"]
        except Exception as exc:  # the test inspects the kind
            outcomes[i] = exc

    call_concurrently(engine, call, 6)
    assert isinstance(outcomes[0], InferenceFailed) and "lookup v1" in str(outcomes[0])
    for i in range(1, 6):
        np.testing.assert_array_equal(outcomes[i], [[float(i % 3 + 1)]])


def test_inline_runtime_errors_are_domain_errors_too() -> None:
    model = LoadedModel("lookup", 1, lookup_model(), device="cpu")
    with pytest.raises(InferenceFailed, match="indices"):
        model.run({"idx": np.array([[9]], np.int64)})
    assert issubclass(InferenceFailed, StreamlearnError)


def lookup_request(index: int, request_id: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="lookup", id=request_id)
    req.inputs.add(name="idx", datatype="INT64", shape=[1, 1])
    req.raw_input_contents.append(np.array([[index]], np.int64).tobytes())
    return req


@pytest.mark.parametrize("delay_s", [0.0, 0.001], ids=["inline", "batched"])
def test_a_stream_survives_a_request_that_fails_at_runtime(delay_s: float) -> None:
    model = LoadedModel("lookup", 1, lookup_model(), device="cpu")
    repository = Repository(["lookup"])
    repository.model("lookup").swap(model)
    engine = Engine(repository, max_batch=8, max_delay_s=delay_s)
    servicer = InferenceServicer(engine, 1 << 20)
    requests = [lookup_request(1, "a"), lookup_request(99, "b"), lookup_request(2, "c")]
    try:
        replies = list(servicer.ModelStreamInfer(iter(requests), None))
    finally:
        engine.close()
    assert len(replies) == 3
    assert replies[0].infer_response.id == "a" and replies[2].infer_response.id == "c"
    assert "indices" in replies[1].error_message and not replies[1].HasField("infer_response")
    assert servicer.counters["lookup"].fail_count == 1


class AbortingContext:
    """Records the status a unary servicer method aborts with."""

    code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise RuntimeError("aborted")


def test_a_unary_runtime_error_is_internal() -> None:
    repository = Repository(["lookup"])
    repository.model("lookup").swap(LoadedModel("lookup", 1, lookup_model(), device="cpu"))
    servicer = InferenceServicer(Engine(repository, max_batch=1, max_delay_s=0), 1 << 20)
    context = AbortingContext()
    with pytest.raises(RuntimeError, match="aborted"):
        servicer.ModelInfer(lookup_request(42, "x"), context)
    assert context.code == grpc.StatusCode.INTERNAL and "indices" in context.details


def test_a_scalar_input_is_an_invalid_argument_not_a_crash() -> None:
    repository = Repository(["m"])
    repository.model("m").swap(LoadedModel("m", 1, linear_model(np.ones(4)), device="cpu"))
    servicer = InferenceServicer(Engine(repository, max_batch=1, max_delay_s=0), 1 << 20)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="features", datatype="FP32", shape=[])
    request.raw_input_contents.append(np.float32(1).tobytes())
    context = AbortingContext()
    with pytest.raises(RuntimeError, match="aborted"):
        servicer.ModelInfer(request, context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT and "shape []" in context.details


class RecordingModel:
    """Stands in for a LoadedModel in the batcher: records each run's rows; a row < 0 fails it."""

    def __init__(self) -> None:
        self.runs: list[int] = []

    def run(self, feeds: dict[str, np.ndarray], _outputs: Any) -> dict[str, np.ndarray]:
        x = feeds["x"]
        self.runs.append(len(x))
        if (x < 0).any():
            raise InferenceFailed("negative input")
        return {"y": x * 2}


def test_a_failing_batch_is_bisected_and_only_the_bad_request_fails() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from services.inference.batching import DynamicBatcher

    model = RecordingModel()
    batcher = DynamicBatcher("m", max_batch=8, max_delay_s=30.0)  # closes when 8 rows wait
    values = [1.0, 2.0, 3.0, -1.0, 5.0, 6.0, 7.0, 8.0]

    def infer(v: float) -> Any:
        try:
            return batcher.infer(model, {"x": np.array([[v]], np.float32)}, ())[1]["y"][0, 0]  # type: ignore[arg-type]
        except InferenceFailed as exc:
            return exc

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(infer, values))
        assert model.runs[0] == 8  # the eight requests really ran as one batch
        assert [isinstance(r, InferenceFailed) for r in results] == [v < 0 for v in values]
        assert [r for r in results if not isinstance(r, InferenceFailed)] == [
            2 * v for v in values if v >= 0
        ]
        # Halves, not one rerun per request: 8, 4+4, 2+2, 1+1.
        assert sorted(model.runs) == sorted([8, 4, 4, 2, 2, 1, 1])
        assert batcher.batch_sizes == []  # neither the failed batch nor its retries count
        model.runs.clear()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(infer, [abs(v) for v in values]))
        assert model.runs == [8] and batcher.batch_sizes == [8]
    finally:
        batcher.close()


def _ort_error(kind: str) -> type[Exception]:
    """An exception class named like ONNX Runtime's (they live in a private module)."""
    return type(kind, (Exception,), {})


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (_ort_error("InvalidProtobuf")("protobuf parsing failed"), InvalidArgument),
        (_ort_error("InvalidGraph")("bad node"), InvalidArgument),
        (_ort_error("Fail")("Load model from memory failed: IR version"), InvalidArgument),
        (_ort_error("RuntimeException")("CUDA failure 2: out of memory"), Unavailable),
        (_ort_error("EPFail")("provider failed"), Unavailable),
        (MemoryError("std::bad_alloc"), Unavailable),
    ],
)
def test_only_decode_and_graph_errors_call_a_model_unloadable(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, expected: type[Exception]
) -> None:
    def failing(*_a: Any) -> Any:
        raise raised

    monkeypatch.setattr(model_module, "make_session", failing)
    with pytest.raises(StreamlearnError) as caught:
        LoadedModel("m", 3, b"bytes", device="cpu")
    assert type(caught.value) is expected
    assert ("not a loadable ONNX model" in str(caught.value)) == (expected is InvalidArgument)


def test_a_generic_failure_on_a_model_the_checker_accepts_is_internal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ORT's generic Fail means a bad model only when the ONNX checker refuses the bytes too.
    def failing(*_a: Any) -> Any:
        raise _ort_error("Fail")("something in the runtime")

    monkeypatch.setattr(model_module, "make_session", failing)
    good = linear_model(np.ones(3, dtype=np.float32), 0.0)
    with pytest.raises(StreamlearnError) as caught:
        LoadedModel("m", 3, good, device="cpu")
    assert type(caught.value) is StreamlearnError
    with pytest.raises(InvalidArgument, match="not a loadable ONNX model"):
        LoadedModel("m", 3, good[: len(good) // 2], device="cpu")


def test_an_unknown_session_failure_is_internal_not_a_bad_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(*_a: Any) -> Any:
        raise _ort_error("Weird")("something else")

    monkeypatch.setattr(model_module, "make_session", failing)
    with pytest.raises(StreamlearnError) as caught:
        LoadedModel("m", 3, b"bytes", device="cpu")
    assert status_code_for(caught.value) == grpc.StatusCode.INTERNAL
    monkeypatch.undo()
    with pytest.raises(InvalidArgument):  # real garbage is still a bad model
        LoadedModel("m", 3, b"garbage", device="cpu")
