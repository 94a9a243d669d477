"""The inference service driven by the unmodified tritonclient, with versions from the registry."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from prometheus_client import REGISTRY

from services.inference import app as inference_app
from services.inference.settings import InferenceSettings
from services.registry.settings import RegistrySettings
from shared.clients.registry import RegistryClient
from shared.onnx_models import INPUT, OUTPUT, linear_model
from tests.helpers import wait_until
from tests.integration.conftest import Running

FEATURES = 8
BASE = np.linspace(-1, 1, FEATURES).astype(np.float32)


def weights(version: int) -> np.ndarray:
    return BASE * (1 + version / 10)


def publish(
    client: RegistryClient, version_hint: int, alias: str = "production", model: str = "demo"
) -> int:
    v = client.register(model, linear_model(weights(version_hint), 0.05)).version
    client.set_alias(model, alias, v)
    return v


def two_models(client: RegistryClient) -> None:
    """`demo` at v1 and `second` (weights of hint 9): the server serves both."""
    client.create_model("demo")
    client.create_model("second")
    publish(client, 1)
    publish(client, 9, model="second")


def refusals() -> float:
    sample = REGISTRY.get_sample_value(
        "streamlearn_inference_swaps_total", {"model": "demo", "outcome": "refused"}
    )
    return sample or 0.0


def start_inference(registry: Running, settings: RegistrySettings, **overrides: Any) -> Running:
    inference = InferenceSettings(
        grpc_port=0,
        metrics_port=0,
        registry_address=registry.address,
        kafka=settings.kafka,
        topics=settings.topics,
        model_names=["demo", "second"],
        resync_s=60.0,
        **{"drain_delay_s": 0.05, **overrides},
    )
    return Running(inference, inference_app.build, inference_app.run)


@pytest.fixture
def served(
    registry_service: Running, registry_client: RegistryClient, registry_settings: RegistrySettings
) -> Iterator[tuple[Running, RegistryClient]]:
    two_models(registry_client)
    service = start_inference(registry_service, registry_settings)
    client = triton.InferenceServerClient(url=service.address)
    wait_until(lambda: client.is_server_ready())
    yield service, registry_client
    service.close()


def infer(client: triton.InferenceServerClient, x: np.ndarray, **kw: Any) -> Any:
    tensor = triton.InferInput(INPUT, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer("demo", [tensor], outputs=[triton.InferRequestedOutput(OUTPUT)], **kw)


def test_tritonclient_sees_metadata_config_and_ort_equal_outputs(
    served: tuple[Running, RegistryClient],
) -> None:
    client = triton.InferenceServerClient(url=served[0].address)
    assert client.is_server_live() and client.is_model_ready("demo")
    metadata = client.get_model_metadata("demo")
    assert metadata.platform == "onnxruntime_onnx" and metadata.versions == ["1"]
    assert (metadata.inputs[0].name, list(metadata.inputs[0].shape)) == (INPUT, [-1, FEATURES])
    config = client.get_model_config("demo").config
    assert config.max_batch_size == 64 and list(config.input[0].dims) == [FEATURES]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert "statistics" in client.get_server_metadata().extensions
    x = np.random.default_rng(1).normal(size=(5, FEATURES)).astype(np.float32)
    result = infer(client, x, request_id="req-9")
    direct = ort.InferenceSession(linear_model(weights(1), 0.05)).run([OUTPUT], {INPUT: x})[0]
    np.testing.assert_allclose(result.as_numpy(OUTPUT), direct, rtol=1e-6)
    response = result.get_response()
    assert (response.id, response.model_version) == ("req-9", "1")
    stats = client.get_inference_statistics("demo").model_stats[0]
    assert stats.inference_stats.success.count >= 1


def test_async_stream_infer_answers_every_request_in_order(
    served: tuple[Running, RegistryClient],
) -> None:
    client = triton.InferenceServerClient(url=served[0].address)
    answers: list[Any] = []
    done = threading.Event()

    def callback(result: Any, error: Any) -> None:
        answers.append(error or result)
        if len(answers) == 10:
            done.set()

    client.start_stream(callback=callback)
    for i in range(10):
        tensor = triton.InferInput(INPUT, [1, FEATURES], "FP32")
        tensor.set_data_from_numpy(np.full((1, FEATURES), i, np.float32))
        client.async_stream_infer("demo", [tensor], request_id=str(i))
    assert done.wait(20)
    client.stop_stream()
    assert [a.get_response().id for a in answers] == [str(i) for i in range(10)]


def test_bad_requests_get_clear_status_codes(served: tuple[Running, RegistryClient]) -> None:
    client = triton.InferenceServerClient(url=served[0].address)
    wrong_name = triton.InferInput("x", [1, FEATURES], "FP32")
    wrong_name.set_data_from_numpy(np.zeros((1, FEATURES), np.float32))
    wrong_shape = triton.InferInput(INPUT, [1, 3], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3), np.float32))
    wrong_type = triton.InferInput(INPUT, [1, FEATURES], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, FEATURES), np.float64))
    cases = [
        (wrong_name, "INVALID_ARGUMENT", "no input 'x'"),
        (wrong_shape, "INVALID_ARGUMENT", f"expected [-1, {FEATURES}]"),
        (wrong_type, "INVALID_ARGUMENT", "expected FP32"),
    ]
    for tensor, code, text in cases:
        with pytest.raises(triton.InferenceServerException) as raised:
            client.infer("demo", [tensor])
        assert raised.value.status() == f"StatusCode.{code}" and text in raised.value.message()
    with pytest.raises(triton.InferenceServerException) as raised:
        infer(client, np.zeros((1, FEATURES), np.float32), model_version="99")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(triton.InferenceServerException) as raised:
        client.get_model_metadata("ghost")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(triton.InferenceServerException) as raised:
        infer(client, np.zeros((600_000, FEATURES), np.float32))  # ~19 MB > 16 MB limit
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_a_version_that_fails_to_load_is_refused_and_the_old_one_keeps_serving(
    served: tuple[Running, RegistryClient],
) -> None:
    service, registry = served
    client = triton.InferenceServerClient(url=service.address)
    refused_before = refusals()
    bad = registry.register("demo", b"not an onnx model").version
    registry.set_alias("demo", "production", bad)
    wait_until(lambda: refusals() > refused_before)  # the event arrived and the load failed
    result = infer(client, np.ones((1, FEATURES), np.float32))
    assert result.get_response().model_version == "1"
    good = publish(registry, 3)
    wait_until(
        lambda: (
            infer(client, np.ones((1, FEATURES), np.float32)).get_response().model_version
            == str(good)
        )
    )


@pytest.mark.parametrize("delay_us", [0, 500], ids=["unbatched", "batched"])
def test_fifty_swaps_under_load_fail_no_request_and_never_go_backwards(
    registry_service: Running,
    registry_client: RegistryClient,
    registry_settings: RegistrySettings,
    delay_us: int,
) -> None:
    two_models(registry_client)
    service = start_inference(registry_service, registry_settings, max_queue_delay_us=delay_us)
    try:
        probe = triton.InferenceServerClient(url=service.address)
        wait_until(lambda: probe.is_server_ready())
        stop, failures, seen = threading.Event(), [], {}

        def load(worker: int) -> None:
            client = triton.InferenceServerClient(url=service.address)
            versions, x = [], np.ones((2, FEATURES), np.float32)
            while not stop.is_set():
                try:
                    result = infer(client, x)
                except Exception as exc:
                    failures.append(repr(exc))
                    continue
                version = int(result.get_response().model_version)
                expected = 1 / (1 + np.exp(-(x @ weights(version) + 0.05)))
                np.testing.assert_allclose(result.as_numpy(OUTPUT).ravel(), expected, rtol=1e-5)
                versions.append(version)
            seen[worker] = versions

        workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        for _ in range(50):
            version = publish(registry_client, registry_client.get_version("demo").version + 1)
            wait_until(
                lambda v=version: (
                    infer(probe, np.ones((1, FEATURES), np.float32)).get_response().model_version
                    == str(v)
                )
            )
        stop.set()
        for w in workers:
            w.join(30)
    finally:
        service.close()
    assert failures == []
    assert all(v == sorted(v) for v in seen.values())  # never backwards for a client
    assert max(max(v) for v in seen.values()) == 51
    assert sum(len(v) for v in seen.values()) > 200


def test_the_sdk_client_predicts_and_reports_the_version(
    served: tuple[Running, RegistryClient],
) -> None:
    from shared.errors import InvalidArgument, NotFound
    from streamlearn.client import InferenceClient

    with InferenceClient(served[0].address) as client:
        assert client.ready() and client.ready("demo")
        x = np.ones((3, FEATURES), np.float32)
        scores, version = client.predict("demo", x)
        assert version == 1 and scores.shape == (3, 1)
        np.testing.assert_allclose(
            scores.ravel(), 1 / (1 + np.exp(-(x @ weights(1) + 0.05))), rtol=1e-6
        )
        with pytest.raises(InvalidArgument):
            client.predict("demo", np.ones((1, 3), np.float32))
        with pytest.raises(NotFound):
            client.predict("ghost", x)


def test_each_model_follows_its_own_alias(served: tuple[Running, RegistryClient]) -> None:
    from streamlearn.client import InferenceClient

    service, registry = served
    x = np.ones((1, FEATURES), np.float32)
    with InferenceClient(service.address) as client:
        first, v_first = client.predict("second", x)
        assert client.served() == {"demo": 1, "second": 1}
        newer = publish(registry, 4)  # only demo moves
        wait_until(lambda: client.predict("demo", x)[1] == newer)
        assert client.served() == {"demo": newer, "second": 1}
        again, v_again = client.predict("second", x)
        registry.set_alias("demo", "production", 1)  # back: v1 serves though newer stays loaded
        wait_until(lambda: client.served()["demo"] == 1)
        assert client.predict("demo", x)[1] == 1
    assert v_first == v_again == 1
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first.ravel(), 1 / (1 + np.exp(-(x @ weights(9) + 0.05))), rtol=1e-6)
