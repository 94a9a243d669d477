"""A served language model through unmodified tritonclient, the SDK client and the CLI.

The server is the real inference servicer on an in-process gRPC server (no Kafka needed:
the version is swapped in as its follower would after a download); the model is a small
TextLearner exported by the trainer's exporter, whose own outputs are the expected ones.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from typer.testing import CliRunner

from services.inference.model import LoadedModel
from services.trainer.text.export import TextOnnxExporter
from services.trainer.text.learner import TextLearner
from shared.errors import InvalidArgument, StreamlearnError
from shared.net import free_port
from streamlearn.cli.main import _typer_app
from streamlearn.client.inference import InferenceClient
from tests.unit.test_text_serving import CONFIG, LIMITS, grammar, serving

PROMPT = b"the c"


@pytest.fixture(scope="module")
def learner() -> TextLearner:
    model = TextLearner(CONFIG)
    model.learn(grammar(150))
    return model


@pytest.fixture(scope="module")
def address(learner: TextLearner) -> Iterator[str]:
    lm = LoadedModel("lm", 3, TextOnnxExporter(learner).export(), device="cpu")
    lm.warm_up()
    with serving([lm]) as served:
        yield served


def text_input(texts: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_))
    return tensor


# -- tritonclient -----------------------------------------------------------------------------


def test_tritonclient_scores_texts(address: str, learner: TextLearner) -> None:
    texts = [b"the cat sat on the mat. the cat", b"on"]
    client = triton.InferenceServerClient(url=address)
    result = client.infer("lm", [text_input(texts)])
    logprobs, lengths = result.as_numpy("logprobs"), result.as_numpy("lengths")
    assert logprobs.dtype == np.float32 and logprobs.shape == (2, len(texts[0]), 256)
    assert lengths.tolist() == [len(t) for t in texts]
    for row, want in enumerate(learner.predict_logprobs(texts)):
        assert np.abs(logprobs[row, : len(want)] - want).max() < 1e-4
    assert not logprobs[1, 2:].any()
    metadata = client.get_model_metadata("lm")
    assert [(i.name, i.datatype) for i in metadata.inputs] == [("text", "BYTES")]


def test_tritonclient_generates(address: str, learner: TextLearner) -> None:
    client = triton.InferenceServerClient(url=address)
    result = client.infer("lm", [text_input([PROMPT])], parameters={"max_new_bytes": 30})
    (continuation,) = result.as_numpy("generated").tolist()
    assert continuation == learner.generate(PROMPT, 30)
    sampled = [
        client.infer(
            "lm",
            [text_input([PROMPT])],
            parameters={"max_new_bytes": 30, "sampling": "sample", "temperature": 1.5, "seed": 4},
        ).as_numpy("generated")[0]
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


def test_tritonclient_refusals_are_invalid_argument(address: str) -> None:
    client = triton.InferenceServerClient(url=address)
    with pytest.raises(triton.InferenceServerException) as raised:
        client.infer("lm", [text_input([b"a", b"b"])], parameters={"max_new_bytes": 3})
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    over = LIMITS.max_new_bytes + 1
    with pytest.raises(triton.InferenceServerException) as raised:
        client.infer("lm", [text_input([b"a"])], parameters={"max_new_bytes": over})
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "max_new_bytes" in raised.value.message()


def test_tritonclient_streams_a_generation_in_chunks(address: str, learner: TextLearner) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = triton.InferenceServerClient(url=address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer(
            "lm",
            [text_input([PROMPT])],
            request_id="g1",
            parameters={"max_new_bytes": 30, "chunk_bytes": 8},
        )
        pieces, finals = [], []
        while not finals or not finals[-1]:
            result, error = answers.get(timeout=30)
            assert error is None, error
            response = result.get_response()
            assert response.id == "g1"
            pieces.append(result.as_numpy("generated")[0])
            finals.append(response.parameters["final"].bool_param)
        client.async_stream_infer("lm", [text_input([b"a"])], parameters={"max_new_bytes": 0})
        result, error = answers.get(timeout=30)
    finally:
        client.stop_stream()
    assert [len(p) for p in pieces] == [8, 8, 8, 6]
    assert finals == [False, False, False, True]
    assert b"".join(pieces) == learner.generate(PROMPT, 30)
    assert result is None and "max_new_bytes" in str(error)  # the refusal, on the stream


# -- the SDK client -----------------------------------------------------------------------------


def test_the_sdk_client_scores_generates_and_streams(address: str, learner: TextLearner) -> None:
    with InferenceClient(address, timeout=30) as client:
        scores = client.score_text("lm", ["the cat", b"\xffx"])
        assert [s.shape for s in scores] == [(7, 256), (2, 256)]
        for got, want in zip(scores, learner.predict_logprobs([b"the cat", b"\xffx"]), strict=True):
            assert np.abs(got - want).max() < 1e-4
        expected = learner.generate(PROMPT, 25)
        assert client.generate("lm", "the c", 25) == expected
        pieces = list(client.generate_stream("lm", PROMPT, 25, chunk_bytes=10))
        assert [len(p) for p in pieces] == [10, 10, 5] and b"".join(pieces) == expected
        first = client.generate("lm", PROMPT, 25, sampling="sample", top_k=5, seed=9)
        assert client.generate("lm", PROMPT, 25, sampling="sample", top_k=5, seed=9) == first
        streamed = client.generate_stream("lm", PROMPT, 25, sampling="sample", top_k=5, seed=9)
        assert b"".join(streamed) == first


def test_the_sdk_client_raises_domain_errors(address: str) -> None:
    with InferenceClient(address, timeout=30) as client:
        with pytest.raises(InvalidArgument, match="empty"):
            client.score_text("lm", [b"ok", b""])
        with pytest.raises(InvalidArgument, match="a list of texts"):
            client.score_text("lm", "hello")  # not five one-letter texts
        with pytest.raises(InvalidArgument, match="max_new_bytes"):
            client.generate("lm", PROMPT, LIMITS.max_new_bytes + 1)
        with pytest.raises(InvalidArgument, match="temperature"):
            client.generate("lm", PROMPT, 4, sampling="sample", temperature=0.0)
        with pytest.raises(StreamlearnError, match="max_new_bytes"):
            list(client.generate_stream("lm", PROMPT, LIMITS.max_new_bytes + 1))


# -- the CLI ------------------------------------------------------------------------------------


def test_streamlearn_generate_writes_the_continuation(
    address: str, learner: TextLearner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMLEARN_STATE_DIR", str(tmp_path))  # no local secrets: plaintext
    args = ["generate", "lm", "the c", "--max-new-bytes", "30", "--chunk-bytes", "4"]
    result = CliRunner().invoke(_typer_app, [*args, "--address", address])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == learner.generate(PROMPT, 30)
    monkeypatch.setenv("STREAMLEARN_INFERENCE_ADDRESS", address)
    sampled = CliRunner().invoke(_typer_app, [*args, "--sample", "--top-k", "3", "--seed", "5"])
    assert sampled.exit_code == 0, sampled.output
    with InferenceClient(address, timeout=30) as client:
        expected = client.generate("lm", PROMPT, 30, sampling="sample", top_k=3, seed=5)
    assert sampled.stdout_bytes == expected


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", "from streamlearn.cli.main import app; app()", *args],
        capture_output=True,
        timeout=120,
        env=os.environ | {"STREAMLEARN_STATE_DIR": str(tmp_path)},
        check=False,
    )


def test_streamlearn_generate_fails_in_one_line(address: str, tmp_path: Path) -> None:
    refused = _cli(tmp_path, "generate", "lm", "x", "--max-new-bytes", "1000", "--address", address)
    assert refused.returncode == 1
    assert refused.stderr.decode().strip().startswith("error: ")
    assert "max_new_bytes" in refused.stderr.decode() and b"Traceback" not in refused.stderr
    down = _cli(tmp_path, "generate", "lm", "x", "--address", f"127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "inference is not running" in down.stderr.decode()
