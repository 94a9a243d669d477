"""Multi-task language models: next bytes and a text class from one trunk, one graph."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import torch

from services.trainer import checkpoint
from services.trainer.text.config import TextModelConfig
from services.trainer.text.export import TextOnnxExporter
from services.trainer.text.learner import TextLearner
from shared.ort import make_session
from shared.serving import CLASS_LOGPROBS_OUTPUT, LOGPROBS_OUTPUT, TEXT_INPUT

CONFIG = TextModelConfig(layers=1, width=32, heads=2, context=16, classes=2, metrics_window=50)
KINDS = {0: "the cat sat on the mat ", 1: "one plus two is three "}


def corpus(n: int, seed: int = 0) -> tuple[list[bytes], list[int]]:
    rng = random.Random(seed)
    labels = [rng.randint(0, 1) for _ in range(n)]
    texts = []
    for label in labels:
        words = KINDS[label].split()
        texts.append(" ".join(rng.choices(words, k=rng.randint(3, 9))).encode())
    return texts, labels


def test_one_trunk_learns_the_next_bytes_and_the_class_of_each_text() -> None:
    texts, labels = corpus(600)
    learner = TextLearner(CONFIG)
    learner.learn(texts, labels=labels)
    scores = learner.snapshot()
    assert scores["class_events"] == 600 and scores["events"] == 600
    assert scores["class_accuracy"] > 0.95  # the last 50 texts, each scored before learning
    assert scores["window_bits_per_byte"] < 3.0
    unlabelled = TextLearner(CONFIG)
    unlabelled.learn(texts[:20], labels=[-1] * 20)  # no class: next bytes only
    assert "class_events" not in unlabelled.snapshot()


def test_the_class_head_is_a_second_output_of_the_served_graph(tmp_path: Path) -> None:
    texts, labels = corpus(400, seed=1)
    learner = TextLearner(CONFIG)
    learner.learn(texts, labels=labels)
    data = TextOnnxExporter(learner).export()  # checked against torch, both outputs
    graph = onnx.load_from_string(data)
    assert [o.name for o in graph.graph.output] == [LOGPROBS_OUTPUT, CLASS_LOGPROBS_OUTPUT]
    session = make_session(data, "cpu")
    held, truth = corpus(40, seed=2)
    right = 0
    for text, label in zip(held, truth, strict=True):
        ids = np.frombuffer(text[-CONFIG.context :], np.uint8).reshape(1, -1)
        classes = session.run([CLASS_LOGPROBS_OUTPUT], {TEXT_INPUT: ids})[0]
        assert classes.shape == (1, ids.shape[1], 2)
        right += int(classes[0, -1].argmax() == label)  # the class read at the last byte
    assert right >= 36
    checkpoint.save(tmp_path / "c.pt", {"learner": learner.state()})
    saved = checkpoint.load(tmp_path / "c.pt")
    assert saved is not None
    restored = TextLearner(CONFIG)
    restored.restore(saved["learner"])
    more, more_labels = corpus(50, seed=3)
    learner.learn(more, labels=more_labels)
    restored.learn(more, labels=more_labels)
    for a, b in zip(learner.network.parameters(), restored.network.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert learner.snapshot() == restored.snapshot()


def test_inference_serves_each_texts_class_beside_its_next_bytes() -> None:
    from services.inference import text
    from services.inference.model import LoadedModel
    from streamlearn.client.inference import InferenceClient
    from tests.unit.test_text_serving import serving

    texts, labels = corpus(400, seed=4)
    learner = TextLearner(CONFIG)
    learner.learn(texts, labels=labels)
    model = LoadedModel("mt", 1, TextOnnxExporter(learner).export(), device="cpu")
    model.warm_up()
    assert model.text == text.TextGraph(context=16, classes=2)
    held = [b"the cat sat on the mat the cat", b"one plus two", b"x"]  # > context, short, 1 byte
    arrays = text.score(model, held, classes=True)
    assert arrays["classes"].shape == (3, 2)
    for row, data in enumerate(held):  # read at the last byte, from its own chunk
        chunk = data[(len(data) - 1) // CONFIG.context * CONFIG.context :]
        ids = torch.from_numpy(np.frombuffer(chunk, np.uint8).copy()).reshape(1, -1)
        with torch.no_grad():
            expected = torch.log_softmax(learner.network.classify(learner.network.trunk(ids)), -1)
        assert np.allclose(arrays["classes"][row], expected[0, -1].numpy(), atol=1e-4)
    with serving([model]) as address, InferenceClient(address) as client:
        got = client.classify_text("mt", ["the cat sat", "one plus two is"])
        assert got.argmax(axis=1).tolist() == [0, 1]
        assert client.score_text("mt", ["the cat"])[0].shape == (7, 256)  # next bytes as ever
