"""Fuzzing the new readers of outside bytes on the language-model paths.

A request to a served language model (any inputs, datatypes, shapes, contents, parameters
and asked outputs) ends in a response or a mapped status (INVALID_ARGUMENT,
RESOURCE_EXHAUSTED), never another exception, and the servicer answers the next request;
a text record of any bytes gives the trainer a text (possibly empty, then skipped) and a
domain, never an exception.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference import grpc_service_pb2 as pb
from services.inference.engine import Engine
from services.inference.model import LoadedModel
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from services.trainer.text.export import TextOnnxExporter
from services.trainer.text.learner import TextLearner
from services.trainer.text.stream import texts_of
from shared.fakes import FakeMessage
from tests.unit.test_serving_fuzz import AbortingContext
from tests.unit.test_text_serving import CONFIG, LIMITS, MAX_BATCH, grammar, prefixed, text_request

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_learner = TextLearner(CONFIG)
_learner.learn(grammar(20))
_MODEL = LoadedModel("lm", 1, TextOnnxExporter(_learner).export(), device="cpu")
_repository = Repository(["lm"])
_repository.model("lm").swap(_MODEL)
SERVICER = InferenceServicer(Engine(_repository, MAX_BATCH, 0.0), 1 << 22, text_limits=LIMITS)
MAPPED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
PARAMETERS = ["max_new_bytes", "sampling", "temperature", "top_k", "seed", "chunk_bytes", "x"]


@st.composite
def text_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="lm", id="f")
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["text", "other"]))
        datatype = draw(st.sampled_from(["BYTES", "UINT8", "FP32", "INT64", ""]))
        shape = draw(st.lists(st.integers(-2, 12), max_size=3))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        texts = draw(st.lists(st.binary(max_size=80), max_size=10))
        how = draw(st.sampled_from(["raw", "typed", "junk", "none"]))
        if how == "raw":
            request.raw_input_contents.append(prefixed(texts))
        elif how == "typed":
            tensor.contents.bytes_contents.extend(texts)
        elif how == "junk":
            request.raw_input_contents.append(draw(st.binary(max_size=64)))
    for name in draw(st.lists(st.sampled_from(PARAMETERS), max_size=4, unique=True)):
        value = draw(
            st.one_of(
                st.integers(-(2**40), 2**40),
                st.floats(allow_nan=True, allow_infinity=True),
                st.sampled_from(["greedy", "sample", "", "beam"]),
                st.booleans(),
            )
        )
        _put(request.parameters[name], value)
    for name in draw(st.lists(st.sampled_from(["logprobs", "lengths", "generated", "x"]))):
        request.outputs.add(name=name)
    return request


def _put(parameter: Any, value: object) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    else:
        parameter.string_param = str(value)


@FUZZ
@given(text_requests())
def test_any_request_to_a_language_model_ends_in_a_response_or_a_mapped_status(
    request: pb.ModelInferRequest,
) -> None:
    context = AbortingContext()
    try:
        response = SERVICER.ModelInfer(request, context)
    except grpc.RpcError:
        assert context.code in MAPPED, context.code
    else:
        assert response.model_name == "lm" and response.outputs
    # the servicer answers the next request as ever
    ok = SERVICER.ModelInfer(text_request([b"the cat"]), AbortingContext())
    assert [o.name for o in ok.outputs] == ["logprobs", "lengths"]


@FUZZ
@given(text_requests())
def test_any_stream_request_ends_in_responses_or_an_error_message(
    request: pb.ModelInferRequest,
) -> None:
    replies = list(SERVICER.ModelStreamInfer(iter([request, text_request([b"ok"])]), None))
    assert replies[-1].infer_response.outputs  # the stream went on to the next request
    for reply in replies[:-1]:
        assert reply.error_message or reply.infer_response.outputs


@FUZZ
@given(st.lists(st.binary(max_size=96), min_size=1, max_size=8))
def test_any_record_gives_the_trainer_a_text_and_a_domain(values: list[bytes]) -> None:
    records = [FakeMessage("t", 0, i, b"k", v) for i, v in enumerate(values)]
    texts, domains, labels = texts_of(records)  # type: ignore[arg-type]
    assert len(texts) == len(domains) == len(labels) == len(values)
    assert all(
        isinstance(t, bytes) and isinstance(d, str) for t, d in zip(texts, domains, strict=True)
    )
    learner = TextLearner(CONFIG)
    learner.learn(texts, domains, labels)  # whatever came in: learned or counted
    counted = learner.events + learner.skipped + learner.held_out
    assert counted + learner.refused == len(values)
    assert np.isfinite(learner.metrics.bits)
