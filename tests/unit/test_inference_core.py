"""Inference core without a network: specs, checks, tensors, swaps and batching."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from inference import grpc_service_pb2 as pb
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.repository import Repository, ServedModel
from services.inference.tensors import decode_inputs, encode_response
from shared.errors import IntegrityError, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from shared.onnx_models import linear_model

W = np.linspace(-1, 1, 4).astype(np.float32)


def loaded(version: int = 1, scale: float = 1.0) -> LoadedModel:
    return LoadedModel("m", version, linear_model(W * scale, 0.1), device="cpu")


def expected(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return 1 / (1 + np.exp(-(x @ (W * scale).reshape(-1, 1) + 0.1)))


def test_specs_come_from_the_graph_with_a_free_batch_axis() -> None:
    model = loaded()
    assert [s.describe() for s in model.inputs] == ["features FP32 [-1, 4]"]
    assert [s.describe() for s in model.outputs] == ["score FP32 [-1, 1]"]
    assert model.warm_up(batch=3)["score"].shape == (3, 1)


def test_a_wrong_sha256_is_refused() -> None:
    with pytest.raises(IntegrityError):
        LoadedModel("m", 1, linear_model(W), sha256="0" * 64, device="cpu")


def test_checks_say_what_was_expected() -> None:
    model = loaded()
    with pytest.raises(InvalidArgument, match=r"has shape \[2, 3\]; expected \[-1, 4\]"):
        model.check({"features": np.zeros((2, 3), np.float32)}, [])
    with pytest.raises(InvalidArgument, match="no input 'x'; expected inputs: features FP32"):
        model.check({"x": np.zeros((2, 4), np.float32)}, [])
    with pytest.raises(InvalidArgument, match="unknown output"):
        model.check({"features": np.zeros((2, 4), np.float32)}, ["nope"])


def request(x: np.ndarray, datatype: str = "FP32", raw: bool = True) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", id="r-1")
    tensor = req.inputs.add(name="features", datatype=datatype, shape=list(x.shape))
    if raw:
        req.raw_input_contents.append(x.tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return req


@pytest.mark.parametrize("raw", [True, False])
def test_raw_and_typed_inputs_decode_to_the_same_array(raw: bool) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    feeds = decode_inputs(request(x, raw=raw), loaded(), 64)
    np.testing.assert_array_equal(feeds["features"], x)


def test_bad_tensors_are_invalid_arguments() -> None:
    model = loaded()
    with pytest.raises(InvalidArgument, match="datatype FP64; expected FP32"):
        decode_inputs(request(np.zeros((1, 4)), datatype="FP64"), model, 64)
    short = request(np.zeros((1, 4), np.float32))
    short.raw_input_contents[0] = b"\0" * 5
    with pytest.raises(InvalidArgument, match="5 bytes for shape"):
        decode_inputs(short, model, 64)


def test_response_echoes_id_version_and_raw_outputs() -> None:
    model = loaded(version=7)
    x = np.ones((2, 4), np.float32)
    response = encode_response(request(x), model, model.run({"features": x}))
    assert (response.id, response.model_version, response.model_name) == ("r-1", "7", "m")
    out = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 1)
    np.testing.assert_allclose(out, expected(x), rtol=1e-6)


def test_response_bytes_and_shapes_whatever_the_output_layout() -> None:
    model = loaded(version=7)
    (name,) = model.output_names
    for array, shape in (
        (np.arange(6, dtype=np.float32).reshape(2, 3).T, [3, 2]),  # not C-contiguous
        (np.float32(2.5).reshape(()), [1]),  # a scalar goes out as one element
        (np.arange(3, dtype=np.int64), [3]),
    ):
        response = encode_response(request(np.ones((1, 4), np.float32)), model, {name: array})
        out = response.outputs[0]
        assert list(out.shape) == shape
        assert response.raw_output_contents[0] == np.ascontiguousarray(array).tobytes()
        assert out.datatype == {"float32": "FP32", "int64": "INT64"}[array.dtype.name]


def test_swaps_keep_recent_versions_and_serve_the_newest() -> None:
    served = ServedModel("m", keep_loaded=2)
    with pytest.raises(Unavailable):
        served.get()
    first = loaded(1)
    assert served.swap(first) == 0
    assert served.swap(loaded(2)) == 1
    assert served.swap(loaded(3)) == 2
    assert served.get().version == 3 and served.versions() == [2, 3]
    with pytest.raises(NotFound, match=r"version 1 .* not loaded; loaded: \[2, 3\]"):
        served.get(1)
    x = np.ones((1, 4), np.float32)
    assert first.run({"features": x})["score"].shape == (1, 1)  # a holder keeps a working session


def test_batched_concurrent_requests_each_get_their_own_rows() -> None:
    repo = Repository(["m"])
    repo.model("m").swap(loaded(1))
    engine = Engine(repo, max_batch=64, max_delay_s=0.005)
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        x = np.full((i % 3 + 1, 4), i / 10, np.float32)
        _, out = engine.infer(engine.resolve("m"), {"features": x}, [], pinned=False)
        results[i] = out["score"]
        np.testing.assert_allclose(out["score"], expected(x), rtol=1e-6)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    assert max(engine.batch_sizes("m")) > 1  # requests were really coalesced
    with pytest.raises(ResourceExhausted):
        engine.infer(engine.resolve("m"), {"features": np.zeros((65, 4), np.float32)}, [], False)
    engine.close()
