"""Serving byte-level language models (issue #18): detection, scoring, generation, streaming.

A small TextLearner is trained for a few steps and exported by the trainer's own exporter;
its ONNX bytes are served by a real in-process gRPC inference server, so every request here
crosses the wire exactly as a client's would. Parity is checked against the learner itself:
scores against `predict_logprobs`, greedy continuations against `generate`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inference import _pool, grpc_service_pb2_grpc
from inference import grpc_service_pb2 as pb
from services.inference import app as inference_app
from services.inference import text
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from services.inference.text_requests import TextLimits
from services.trainer.text import windows as trainer_windows
from services.trainer.text.config import TextModelConfig
from services.trainer.text.export import TextOnnxExporter
from services.trainer.text.learner import TextLearner
from shared import text_windows
from shared.errors import InferenceFailed, InvalidArgument, StreamlearnError
from shared.grpc.server import ServiceBinding, build_server
from shared.onnx_models import INPUT, linear_model
from shared.text_generation import Decoding, continue_bytes, next_byte

CONFIG = TextModelConfig(layers=1, width=32, heads=2, context=16)
PATTERN = b"the cat sat on the mat. "
# Small bounds so that the limits themselves are cheap to cross.
LIMITS = TextLimits(max_text_bytes=64, max_new_bytes=48, max_response_bytes=1 << 20)
MAX_BATCH = 8


def grammar(events: int, seed: int = 0) -> list[bytes]:
    """Texts of 20-40 bytes cut from PATTERN repeated, each from a random offset."""
    rng = np.random.default_rng(seed)
    long = PATTERN * 4
    out = []
    for _ in range(events):
        start, length = int(rng.integers(len(PATTERN))), int(rng.integers(20, 41))
        out.append(long[start : start + length])
    return out


@pytest.fixture(scope="module")
def learner() -> TextLearner:
    model = TextLearner(CONFIG)
    model.learn(grammar(150))
    return model


@pytest.fixture(scope="module")
def onnx_bytes(learner: TextLearner) -> bytes:
    return TextOnnxExporter(learner).export()


@pytest.fixture(scope="module")
def lm(onnx_bytes: bytes) -> LoadedModel:
    model = LoadedModel("lm", 1, onnx_bytes, device="cpu")
    model.warm_up()
    return model


def tabular() -> LoadedModel:
    return LoadedModel("tab", 1, linear_model(np.ones(2)), device="cpu")


@contextmanager
def serving(
    models: Sequence[LoadedModel], limits: TextLimits = LIMITS, max_batch: int = MAX_BATCH
) -> Iterator[str]:
    """A real gRPC inference server of `models` on a free port; yields its address."""
    repository = Repository([m.name for m in models])
    for model in models:
        repository.model(model.name).swap(model)
    servicer = InferenceServicer(Engine(repository, max_batch, 0.0), 1 << 22, text_limits=limits)
    binding = ServiceBinding(
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer,
        inference_app.SERVICE,
        _pool.POOL,
    )
    server, _, port = build_server("127.0.0.1:0", [binding], max_workers=8)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def stub(lm: LoadedModel) -> Iterator[Any]:
    with serving([lm, tabular()]) as address, grpc.insecure_channel(address) as channel:
        yield grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def prefixed(texts: Sequence[bytes]) -> bytes:
    return b"".join(len(t).to_bytes(4, "little") + t for t in texts)


def text_request(
    texts: Sequence[bytes], model: str = "lm", typed: bool = False, **parameters: Any
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    if typed:
        tensor.contents.bytes_contents.extend(texts)
    else:
        request.raw_input_contents.append(prefixed(texts))
    for name, value in parameters.items():
        if isinstance(value, str):
            request.parameters[name].string_param = value
        elif isinstance(value, bool):
            request.parameters[name].bool_param = value
        elif isinstance(value, int):
            request.parameters[name].int64_param = value
        else:
            request.parameters[name].double_param = value
    return request


def outputs(reply: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": "<f4", "INT64": "<i8"}
    return {
        t.name: np.frombuffer(raw, dtypes[t.datatype]).reshape(tuple(t.shape))
        for t, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }


def generated(reply: pb.ModelInferResponse) -> bytes:
    (tensor,) = reply.outputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("generated", "BYTES", [1])
    raw = reply.raw_output_contents[0]
    length = int.from_bytes(raw[:4], "little")
    assert len(raw) == 4 + length
    return raw[4:]


def stream(stub: Any, *requests: pb.ModelInferRequest) -> list[pb.ModelStreamInferResponse]:
    return list(stub.ModelStreamInfer(iter(requests), timeout=30))


# -- the numpy pieces the server shares with the trainer ---------------------------------------


@pytest.mark.parametrize("context", [1, 2, 5, 16])
def test_texts_are_cut_into_context_sized_chunks_every_byte_once(context: int) -> None:
    for length in range(0, 40):
        data = bytes(range(length))
        chunks = text_windows.input_chunks(data, context)
        assert b"".join(c.tobytes() for c in chunks) == data  # every byte, in order, once
        assert all(len(c) == context for c in chunks[:-1])  # only the last may be shorter
        assert len(chunks) == -(-length // context)
        if chunks:  # the trainer pads the same chunks to the same batch, as int64 ids
            batch, lengths = text_windows.pad_chunks(chunks)
            reference, ref_lengths = trainer_windows.pad(chunks)
            assert batch.dtype == np.uint8 and lengths.tolist() == [len(c) for c in chunks]
            assert np.array_equal(batch, reference.numpy()) and np.array_equal(lengths, ref_lengths)
            assert all(not batch[r, n:].any() for r, n in enumerate(lengths))  # right-padded


def test_greedy_takes_the_first_most_probable_byte() -> None:
    scores = np.full(256, -10.0, np.float32)
    scores[[7, 200]] = -0.1
    assert next_byte(scores, Decoding(), np.random.default_rng(0)) == 7


def test_sampling_follows_softmax_and_never_leaves_the_top_k() -> None:
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(256))
    logprobs = np.log(probabilities).astype(np.float32)
    draws = [next_byte(logprobs, Decoding("sample"), rng) for _ in range(20_000)]
    counts = np.bincount(draws, minlength=256) / len(draws)
    assert np.abs(counts - probabilities).max() < 0.02
    top = set(np.argsort(probabilities)[-5:].tolist())
    cut = {next_byte(logprobs, Decoding("sample", top_k=5), rng) for _ in range(2000)}
    assert cut == top  # all five drawn, nothing else
    hot = [next_byte(logprobs, Decoding("sample", temperature=1e-6), rng) for _ in range(50)]
    assert set(hot) == {int(np.argmax(probabilities))}  # the temperature's limit is greedy


def test_zero_probability_bytes_are_never_sampled_and_nan_scores_fail() -> None:
    logprobs = np.full(256, -np.inf, np.float32)
    logprobs[[0, 255]] = np.log(0.5)
    rng = np.random.default_rng(2)
    assert {next_byte(logprobs, Decoding("sample"), rng) for _ in range(500)} == {0, 255}
    logprobs[3] = np.nan
    with pytest.raises(InferenceFailed):
        next_byte(logprobs, Decoding(), rng)


@pytest.mark.parametrize(
    "decoding",
    [
        Decoding("beam"),
        Decoding("sample", temperature=0.0),
        Decoding("sample", temperature=float("nan")),
        Decoding("sample", top_k=257),
        Decoding("sample", top_k=-1),
        Decoding("sample", seed=-1),
    ],
)
def test_decoding_settings_no_rule_can_follow_are_refused(decoding: Decoding) -> None:
    with pytest.raises(InvalidArgument):
        decoding.check()


# -- loading: which versions are language models -------------------------------------------------


def with_properties(onnx_bytes: bytes, **properties: str | None) -> bytes:
    model = onnx.load_from_string(onnx_bytes)
    kept = {p.key: p.value for p in model.metadata_props}
    for key, value in properties.items():
        kept.pop(key, None)
        if value is not None:
            kept[key] = value
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, kept)
    return model.SerializeToString()


def toy_text_graph(
    vocab: int = 256, extra_input: bool = False, context: str = "8", batch: str | int = "batch"
) -> bytes:
    """`logprobs` = the byte ids broadcast over `vocab` columns: a text graph's signature."""
    nodes = [
        helper.make_node("Cast", ["text"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["f", "axis"], ["u"]),
        helper.make_node("Expand", ["u", "wide"], ["logprobs"]),
    ]
    inputs = [helper.make_tensor_value_info("text", TensorProto.UINT8, [batch, "seq"])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, ["batch"]))
    graph = helper.make_graph(
        nodes,
        "toy",
        inputs,
        [helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, ["batch", "seq", vocab])],
        initializer=[
            helper.make_tensor("axis", TensorProto.INT64, [1], [2]),
            helper.make_tensor("wide", TensorProto.INT64, [3], [1, 1, vocab]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {text.CONTEXT_KEY: context})
    return model.SerializeToString()


def test_a_text_graph_is_detected_with_its_context_and_a_tabular_one_is_not(
    lm: LoadedModel,
) -> None:
    assert lm.text == text.TextGraph(context=16)
    assert lm.named is None
    assert tabular().text is None
    toy = LoadedModel("toy", 1, toy_text_graph(), device="cpu")
    assert toy.text == text.TextGraph(context=8)
    assert toy.warm_up()["logprobs"].shape == (1, 8, 256)


@pytest.mark.parametrize("context", [None, "", "abc", "0", "-3", "1e3", "١٢", str(1 << 17)])
def test_a_text_graph_without_a_valid_context_is_refused(
    onnx_bytes: bytes, context: str | None
) -> None:
    data = with_properties(onnx_bytes, **{text.CONTEXT_KEY: context})
    with pytest.raises(InvalidArgument, match=r"streamlearn\.text\.context"):
        LoadedModel("lm", 2, data, device="cpu")


def test_a_context_beyond_what_the_graph_takes_fails_its_warm_up(onnx_bytes: bytes) -> None:
    """The learned positions end at 16: a version claiming 64 is refused before serving."""
    claims_more = LoadedModel("lm", 2, with_properties(onnx_bytes, **{text.CONTEXT_KEY: "64"}))
    with pytest.raises(StreamlearnError):
        claims_more.warm_up()


@pytest.mark.parametrize(
    ("graph", "match"),
    [
        (lambda: toy_text_graph(vocab=10), "FP32 \\[batch, seq, 256\\]"),
        (lambda: toy_text_graph(extra_input=True), "one input 'text'"),
        (lambda: toy_text_graph(batch=1), "free batch and seq"),  # a request of 2 would fail
    ],
)
def test_a_text_graph_that_breaks_the_contract_is_refused(
    graph: Callable[[], bytes], match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        LoadedModel("toy", 1, graph(), device="cpu")


# -- scoring ------------------------------------------------------------------------------------


TEXTS = [b"t", b"the cat sat on ", b"the cat sat on t", b"the cat sat on th", PATTERN * 2 + b"x"]


@pytest.mark.parametrize("typed", [False, True])
def test_scores_match_predict_logprobs_in_chunks_beyond_the_context(
    stub: Any, learner: TextLearner, typed: bool
) -> None:
    reply = stub.ModelInfer(text_request(TEXTS, typed=typed), timeout=30)
    got = outputs(reply)
    assert [t.name for t in reply.outputs] == ["logprobs", "lengths"]
    assert (reply.model_name, reply.model_version, reply.id) == ("lm", "1", "r1")
    longest = max(len(t) for t in TEXTS)
    assert got["logprobs"].shape == (len(TEXTS), longest, 256)
    assert got["lengths"].tolist() == [len(t) for t in TEXTS]
    expected = learner.predict_logprobs(TEXTS)
    for row, (want, text_bytes) in enumerate(zip(expected, TEXTS, strict=True)):
        assert np.abs(got["logprobs"][row, : len(text_bytes)] - want).max() < 1e-4
        assert not got["logprobs"][row, len(text_bytes) :].any()  # padding rows are zeros


def test_chunks_are_scored_alone_as_the_trainer_scores_them(
    stub: Any, learner: TextLearner
) -> None:
    """Byte 16 of a 17-byte text starts a new chunk: its row equals a 1-byte text's."""
    reply = outputs(stub.ModelInfer(text_request([PATTERN[:17], PATTERN[16:17]]), timeout=30))
    assert np.abs(reply["logprobs"][0, 16] - reply["logprobs"][1, 0]).max() < 1e-5
    assert np.abs(reply["logprobs"][0, 15] - reply["logprobs"][1, 0]).max() > 1e-3


def test_outputs_come_as_asked(stub: Any) -> None:
    request = text_request([b"ab", b"abc"])
    request.outputs.add(name="lengths")
    reply = stub.ModelInfer(request, timeout=30)
    assert [t.name for t in reply.outputs] == ["lengths"]
    assert outputs(reply)["lengths"].tolist() == [2, 3]


def test_scoring_sees_each_text_as_its_bytes(stub: Any) -> None:
    """Any bytes are a text: invalid UTF-8 and NULs included."""
    hostile = [b"\x00\xff\xfe", "héllo".encode(), b"\x80" * 64]
    got = outputs(stub.ModelInfer(text_request(hostile), timeout=30))
    assert got["lengths"].tolist() == [3, 6, 64]
    assert np.isfinite(got["logprobs"]).all()


# -- generation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [b"t", b"the cat ", b"sat on the mat. the"])
def test_greedy_generation_is_the_trainers_byte_for_byte(
    stub: Any, learner: TextLearner, prompt: bytes
) -> None:
    """Prompt plus continuation exceed the context: every window slides as the trainer's."""
    reply = stub.ModelInfer(text_request([prompt], max_new_bytes=40), timeout=30)
    assert generated(reply) == learner.generate(prompt, 40, sampling="greedy")
    assert reply.parameters["final"].bool_param


def test_the_decoding_rule_over_onnx_matches_the_trainer_directly(
    lm: LoadedModel, learner: TextLearner
) -> None:
    """The shared rule over the served session, without the wire."""
    chosen = bytes(text.generate(lm, b"on the", 30, Decoding()))
    assert chosen == learner.generate(b"on the", 30)


def test_seeded_sampling_is_deterministic_and_seeds_differ(stub: Any) -> None:
    def sample(seed: int, **kw: Any) -> bytes:
        request = text_request([b"the "], max_new_bytes=40, sampling="sample", seed=seed, **kw)
        return generated(stub.ModelInfer(request, timeout=30))

    first = sample(7, temperature=1.5)
    assert sample(7, temperature=1.5) == first
    assert len({first, sample(8, temperature=1.5), sample(9, temperature=1.5)}) == 3
    greedy = generated(stub.ModelInfer(text_request([b"the "], max_new_bytes=40), timeout=30))
    assert sample(11, top_k=1) == greedy  # one candidate left: sampling is greedy


def test_integral_temperature_and_unsigned_integers_are_taken(stub: Any) -> None:
    request = text_request([b"the "], max_new_bytes=8, sampling="sample", temperature=2, seed=3)
    request.parameters["top_k"].uint64_param = 40
    first = generated(stub.ModelInfer(request, timeout=30))
    assert len(first) == 8 and generated(stub.ModelInfer(request, timeout=30)) == first


# -- streaming ----------------------------------------------------------------------------------


def test_a_stream_answers_a_generation_in_chunks_the_last_final(
    stub: Any, learner: TextLearner
) -> None:
    request = text_request([b"the c"], max_new_bytes=20, chunk_bytes=8)
    responses = stream(stub, request)
    assert all(not r.error_message for r in responses)
    pieces = [generated(r.infer_response) for r in responses]
    assert [len(p) for p in pieces] == [8, 8, 4]
    assert [r.infer_response.parameters["final"].bool_param for r in responses] == [
        False,
        False,
        True,
    ]
    assert b"".join(pieces) == learner.generate(b"the c", 20)


def test_a_stream_scores_and_generates_in_turn(stub: Any) -> None:
    responses = stream(
        stub,
        text_request([b"ab", b"c"]),
        text_request([b"the"], max_new_bytes=4),  # chunk_bytes 16: one piece
    )
    assert len(responses) == 2
    assert outputs(responses[0].infer_response)["lengths"].tolist() == [2, 1]
    assert len(generated(responses[1].infer_response)) == 4


class FailsAfter(LoadedModel):
    """A served language model whose runtime fails once, on its `fail_at`-th run."""

    calls = 0
    fail_at = 0

    def run(self, feeds: Any, outputs: Any = ()) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise InferenceFailed(f"{self.name}: the device went away")
        return super().run(feeds, outputs)


def test_an_error_mid_stream_follows_the_pieces_before_it_and_the_stream_goes_on(
    onnx_bytes: bytes,
) -> None:
    flaky = FailsAfter("flaky", 1, onnx_bytes, device="cpu")
    flaky.fail_at = 11  # the 11th byte fails: two pieces of 4 go out first
    with serving([flaky]) as address, grpc.insecure_channel(address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        good = text_request([b"ab"], model="flaky")
        responses = stream(
            stub, text_request([b"the"], "flaky", max_new_bytes=20, chunk_bytes=4), good
        )
    assert [len(generated(r.infer_response)) for r in responses[:2]] == [4, 4]
    assert "the device went away" in responses[2].error_message
    assert not responses[2].HasField("infer_response")
    assert responses[3].infer_response.outputs[0].name == "logprobs"  # the next request: answered
    assert len(responses) == 4


# -- refusals -----------------------------------------------------------------------------------


def _tensor(request: pb.ModelInferRequest, **fields: Any) -> pb.ModelInferRequest:
    for key, value in fields.items():
        if key == "shape":
            del request.inputs[0].shape[:]
            request.inputs[0].shape.extend(value)
        else:
            setattr(request.inputs[0], key, value)
    return request


def _tabular_to_lm() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="lm")
    request.inputs.add(name=INPUT, datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
    return request


def _ids_to_lm() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="lm")
    request.inputs.add(name="text", datatype="UINT8", shape=[1, 3])
    request.raw_input_contents.append(b"abc")
    return request


def _two_inputs() -> pb.ModelInferRequest:
    request = text_request([b"ab"])
    request.inputs.add(name="other", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(prefixed([b"x"]))
    return request


def _with_output(request: pb.ModelInferRequest, name: str) -> pb.ModelInferRequest:
    request.outputs.add(name=name)
    return request


BAD: dict[str, Callable[[], pb.ModelInferRequest]] = {
    "ids instead of texts": _ids_to_lm,
    "a tabular request": _tabular_to_lm,
    "two inputs": _two_inputs,
    "wrong name": lambda: _tensor(text_request([b"ab"]), name="prompt"),
    "shape [1, 1]": lambda: _tensor(text_request([b"ab"]), shape=[1, 1]),
    "shape []": lambda: _tensor(text_request([b"ab"]), shape=[]),
    "shape [0]": lambda: _tensor(text_request([]), shape=[0]),
    "negative batch": lambda: _tensor(text_request([b"ab"]), shape=[-1]),
    "fewer elements than the shape": lambda: _tensor(text_request([b"ab"]), shape=[2]),
    "a cut length prefix": lambda: _raw(text_request([b"ab"]), b"\x05\x00\x00\x00ab"),
    "a stray byte after the elements": lambda: _raw(
        text_request([b"ab"]), prefixed([b"ab"]) + b"!"
    ),
    "an empty text": lambda: text_request([b"ab", b""]),
    "an over-long text": lambda: text_request([b"a" * 65]),
    "an over-long prompt": lambda: text_request([b"a" * 65], max_new_bytes=1),
    "an empty prompt": lambda: text_request([b""], max_new_bytes=1),
    "two prompts": lambda: text_request([b"a", b"b"], max_new_bytes=1),
    "max_new_bytes 0": lambda: text_request([b"a"], max_new_bytes=0),
    "max_new_bytes negative": lambda: text_request([b"a"], max_new_bytes=-5),
    "max_new_bytes over the cap": lambda: text_request([b"a"], max_new_bytes=49),
    "max_new_bytes as text": lambda: text_request([b"a"], max_new_bytes="8"),
    "max_new_bytes as a float": lambda: text_request([b"a"], max_new_bytes=8.0),
    "max_new_bytes as a bool": lambda: text_request([b"a"], max_new_bytes=True),
    "unknown sampling": lambda: text_request([b"a"], max_new_bytes=4, sampling="beam"),
    "sampling as a number": lambda: text_request([b"a"], max_new_bytes=4, sampling=1),
    "temperature 0": lambda: text_request([b"a"], max_new_bytes=4, temperature=0.0),
    "temperature negative": lambda: text_request([b"a"], max_new_bytes=4, temperature=-1.0),
    "temperature nan": lambda: text_request([b"a"], max_new_bytes=4, temperature=float("nan")),
    "temperature inf": lambda: text_request([b"a"], max_new_bytes=4, temperature=float("inf")),
    "temperature as text": lambda: text_request([b"a"], max_new_bytes=4, temperature="hot"),
    "top_k 257": lambda: text_request([b"a"], max_new_bytes=4, top_k=257),
    "top_k negative": lambda: text_request([b"a"], max_new_bytes=4, top_k=-1),
    "seed negative": lambda: text_request([b"a"], max_new_bytes=4, seed=-1),
    "chunk_bytes 0": lambda: text_request([b"a"], max_new_bytes=4, chunk_bytes=0),
    "an unknown parameter": lambda: text_request([b"a"], max_new_bytes=4, top_p=0.9),
    "decoding without max_new_bytes": lambda: text_request([b"a"], sampling="sample"),
    "an unknown output": lambda: _with_output(text_request([b"a"]), "score"),
    "logprobs of a generation": lambda: _with_output(
        text_request([b"a"], max_new_bytes=4), "logprobs"
    ),
    "a repeated output": lambda: _with_output(
        _with_output(text_request([b"a"]), "lengths"), "lengths"
    ),
    "texts to a tabular model": lambda: text_request([b"ab"], model="tab"),
    "generation by a tabular model": lambda: _parameters(_tabular_request(), max_new_bytes=4),
}


def _raw(request: pb.ModelInferRequest, raw: bytes) -> pb.ModelInferRequest:
    request.raw_input_contents[0] = raw
    return request


def _tabular_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tab")
    request.inputs.add(name=INPUT, datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
    return request


def _parameters(request: pb.ModelInferRequest, **values: int) -> pb.ModelInferRequest:
    for name, value in values.items():
        request.parameters[name].int64_param = value
    return request


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_requests_are_invalid_argument_and_the_server_goes_on(
    stub: Any, case: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(BAD[case](), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert raised.value.details()  # a clear message, not an empty status
    # and in a stream: the error message, then the next request answered
    first, second = stream(stub, BAD[case](), text_request([b"ok"]))
    assert first.error_message and not second.error_message


def test_the_tabular_model_still_serves_beside_it(stub: Any) -> None:
    reply = stub.ModelInfer(_tabular_request(), timeout=30)
    assert reply.outputs[0].name == "score"


def test_too_many_texts_or_too_large_logprobs_are_resource_exhausted(lm: LoadedModel) -> None:
    small = TextLimits(max_text_bytes=64, max_new_bytes=8, max_response_bytes=64 * 1024)
    with serving([lm], small) as address, grpc.insecure_channel(address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for request in (
            text_request([b"a"] * (MAX_BATCH + 1)),  # more texts than max_batch_size
            text_request([b"a" * 64] * 2),  # 2 x 64 x 1 KiB of logprobs > 64 KiB
        ):
            with pytest.raises(grpc.RpcError) as raised:
                stub.ModelInfer(request, timeout=30)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # lengths alone run nothing and send next to nothing
        lengths = _with_output(text_request([b"a" * 64] * 2), "lengths")
        assert outputs(stub.ModelInfer(lengths, timeout=30))["lengths"].tolist() == [64, 64]


# -- metadata -----------------------------------------------------------------------------------


def test_metadata_and_config_describe_the_wire_contract(stub: Any) -> None:
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="lm"), timeout=30)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("text", "BYTES", [-1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("logprobs", "FP32", [-1, -1, 256]),
        ("lengths", "INT64", [-1]),
        ("generated", "BYTES", [-1]),
    ]
    config = stub.ModelConfig(pb.ModelConfigRequest(name="lm"), timeout=30).config
    assert config.max_batch_size == 0
    assert config.parameters["streamlearn.text.context"].string_value == "16"
    assert [i.name for i in config.input] == ["text"]


def test_the_shared_generation_loop_slides_its_window() -> None:
    """A scorer that remembers its windows: each holds the last `context` bytes."""
    seen: list[bytes] = []

    def scorer(window: np.ndarray) -> np.ndarray:
        seen.append(window.tobytes())
        scores = np.full(256, -9.0, np.float32)
        scores[ord("a") + len(seen) % 3] = 0.0
        return scores

    out = bytes(continue_bytes(scorer, b"xyz", 5, 4, Decoding()))
    assert out == b"bcabc"
    assert seen == [b"xyz", b"xyzb", b"yzbc", b"zbca", b"bcab"]


# -- imports ------------------------------------------------------------------------------------


def test_the_inference_service_and_the_cli_command_import_no_torch() -> None:
    code = (
        "import json, sys\n"
        "import services.inference.app, services.inference.text_requests\n"
        "import shared.text_generation, shared.text_windows\n"
        "import streamlearn.client.inference, streamlearn.cli.generate\n"
        "print(json.dumps(sorted(m for m in ('torch', 'numba') if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout) == []


def test_the_generate_commands_help_loads_no_client_library() -> None:
    """`streamlearn generate --help` lists its options without gRPC, numpy or settings."""
    code = (
        "import json, sys\n"
        "sys.argv = ['streamlearn', 'generate', '--help']\n"
        "from streamlearn.cli.main import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
        "watched = ('grpc', 'numpy', 'pydantic_settings', 'torch', 'onnxruntime')\n"
        "print(json.dumps(sorted(m for m in watched if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "--max-new-bytes" in result.stdout
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_a_generation_stops_once_its_caller_is_gone() -> None:
    produced: list[int] = []

    def forever() -> Iterator[int]:
        while True:
            produced.append(1)
            yield 65

    calls = iter([True, True, False])
    with pytest.raises(InferenceFailed, match="cancelled or timed out"):
        list(text.while_active(forever(), lambda: next(calls)))
    assert len(produced) == 2 * text.CHECK_EVERY + 1  # checked every few bytes, not per run
    assert list(text.while_active(iter([1, 2, 3]), lambda: True)) == [1, 2, 3]
