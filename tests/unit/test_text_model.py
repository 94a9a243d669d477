"""Byte-level language model (issue #18): online learning, crash-exactness, ONNX, generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from services.trainer import checkpoint
from services.trainer.text.config import TextModelConfig, TextOptimizerSpec
from services.trainer.text.export import (
    CONTEXT_KEY,
    LOGPROBS_OUTPUT,
    TEXT_INPUT,
    TextOnnxExporter,
)
from services.trainer.text.learner import TextLearner
from shared.errors import ConfigError, IntegrityError, InvalidArgument
from shared.ort import make_session

# Small enough that hundreds of events take about a second on two cores.
TINY = TextModelConfig(layers=1, width=32, heads=2, context=32, metrics_window=20)


def grammar(pattern: bytes, events: int, seed: int = 0) -> list[bytes]:
    """Texts of 24-47 bytes cut from `pattern` repeated, each from a random offset."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(events):
        start, length = int(rng.integers(len(pattern))), int(rng.integers(24, 48))
        out.append((pattern * (48 // len(pattern) + 2))[start : start + length])
    return out


def window_bpb(learner: TextLearner) -> float:
    return learner.snapshot()["window_bits_per_byte"]


def assert_same_learners(a: TextLearner, b: TextLearner) -> None:
    pa, pb = dict(a.network.named_parameters()), dict(b.network.named_parameters())
    assert pa.keys() == pb.keys()
    for name, value in pa.items():
        assert torch.equal(value, pb[name]), name
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for key, moments in sa.items():
        for field, value in moments.items():
            assert torch.equal(value, sb[key][field]), (key, field)
    assert a.snapshot() == b.snapshot()


# -- learning ---------------------------------------------------------------------------


def test_learns_a_tiny_grammar_far_below_eight_bits_per_byte() -> None:
    learner = TextLearner(TINY)
    events = grammar(b"abcd", 300)
    learner.learn(events[:1])
    first = learner.snapshot()
    assert first["bits_per_byte"] > 6.0  # an untrained model guesses about uniformly (8)
    for event in events[1:]:
        learner.learn([event])
    metrics = learner.snapshot()
    assert metrics["events"] == 300 and metrics["steps"] == 300
    assert metrics["bytes"] == sum(len(e) - 1 for e in events)
    assert metrics["window_bits_per_byte"] < 0.5
    assert metrics["window_accuracy"] > 0.95
    assert metrics["bits_per_byte"] < first["bits_per_byte"] / 4


def test_a_second_domain_makes_bits_per_byte_rise_then_fall() -> None:
    learner = TextLearner(TINY.model_copy(update={"metrics_window": 10}))
    for event in grammar(b"abcd", 250):
        learner.learn([event])
    settled = window_bpb(learner)
    assert settled < 1.0
    second = grammar(b"0123456789", 300, seed=1)
    for event in second[:10]:
        learner.learn([event])
    risen = window_bpb(learner)
    assert risen > settled + 2.0
    for event in second[10:]:
        learner.learn([event])
    assert window_bpb(learner) < 1.0


def test_mini_batches_take_one_step_per_batch_size_events() -> None:
    learner = TextLearner(TINY.model_copy(update={"batch_size": 4}))
    learner.learn(grammar(b"abcd", 10))  # 4 + 4 + 2
    assert learner.snapshot()["steps"] == 3
    assert learner.events == 10


def test_scores_are_the_models_before_the_step_and_match_predict_logprobs() -> None:
    learner = TextLearner(TINY)
    learner.learn(grammar(b"abcd", 30))
    text = bytes(range(40, 115))  # 75 bytes: three windows of the 32-byte context
    logprobs = learner.predict_logprobs([text])[0]
    assert logprobs.shape == (75, 256)
    np.testing.assert_allclose(np.exp(logprobs).sum(axis=1), 1.0, atol=1e-5)
    targets = np.frombuffer(text, np.uint8)[1:]
    expected_bits = -logprobs[np.arange(74), targets].astype(np.float64).sum() / np.log(2)
    before = learner.metrics.bits
    learner.learn([text])
    assert learner.metrics.bits - before == pytest.approx(expected_bits, rel=1e-4)
    assert not np.allclose(learner.predict_logprobs([text])[0], logprobs)  # it learned


def test_predict_logprobs_of_a_padded_batch_matches_each_text_alone() -> None:
    learner = TextLearner(TINY)
    texts = [b"abc", b"", b"x" * 70, b"q"]
    together = learner.predict_logprobs(texts)
    for text, rows in zip(texts, together, strict=True):
        assert rows.shape == (len(text), 256)
        np.testing.assert_allclose(rows, learner.predict_logprobs([text])[0], atol=1e-5)


def test_learning_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    events = grammar(b"abcd", 20)
    a, b = TextLearner(TINY), TextLearner(TINY)
    c = TextLearner(TINY.model_copy(update={"seed": 1}))
    for learner in (a, b, c):
        learner.learn(events)
    assert_same_learners(a, b)
    assert not torch.equal(a.network.embedding.weight, c.network.embedding.weight)


# -- crash-exactness --------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        TINY.model_copy(update={"batch_size": 3, "dropout": 0.1}),
        TINY.model_copy(update={"optimizer": TextOptimizerSpec(name="sgd", lr=0.05, momentum=0.9)}),
    ],
    ids=["adamw", "batched-dropout", "sgd-momentum"],
)
def test_restored_after_event_k_ends_bit_identical(config: TextModelConfig, tmp_path: Path) -> None:
    events = [*grammar(b"abcd", 24), b"", b"z"]  # the short ones are skipped, and counted
    k = 12
    whole = TextLearner(config)
    whole.learn(events[:k])
    torch.rand(7)  # someone else drawing from the global stream must not matter
    whole.learn(events[k:])

    first = TextLearner(config)
    first.learn(events[:k])
    path = tmp_path / "text.ckpt"
    checkpoint.save(path, {"learner": first.state()})
    del first
    resumed = TextLearner(config)
    loaded = checkpoint.load(path)  # torch's weights-only unpickler
    assert loaded is not None
    resumed.restore(loaded["learner"])
    resumed.learn(events[k:])

    assert_same_learners(whole, resumed)
    assert whole.skipped == resumed.skipped == 2
    fresh = TextLearner(config)  # without the first k events the result differs
    fresh.learn(events[k:])
    assert not torch.equal(fresh.network.positions, whole.network.positions)


def test_restore_refuses_another_config_and_malformed_state_without_changing() -> None:
    learner = TextLearner(TINY)
    learner.learn(grammar(b"abcd", 5))
    state = learner.state()
    before = learner.network.positions.detach().clone()
    other = TextLearner(TINY.model_copy(update={"seed": 9}))
    with pytest.raises(ConfigError, match="another text model config"):
        other.restore(state)
    with pytest.raises(ConfigError):
        learner.restore({"nonsense": 1})
    broken = dict(state, network={"embedding.weight": torch.zeros(3)})
    with pytest.raises(IntegrityError, match="malformed"):
        learner.restore(broken)
    with pytest.raises(IntegrityError, match="malformed"):
        learner.restore(dict(state, counts=["x"]))
    with pytest.raises(IntegrityError):
        learner.restore(dict(state, metrics=dict(state["metrics"], ring_bits=[0.0])))
    assert torch.equal(learner.network.positions, before)
    assert learner.events == 5


# -- ONNX -------------------------------------------------------------------------------


def test_onnx_export_matches_torch_on_two_batch_and_sequence_shapes() -> None:
    learner = TextLearner(TINY)
    exporter = TextOnnxExporter(learner)
    first = exporter.export()
    learner.learn(grammar(b"abcd", 40))
    second = exporter.export()
    assert first != second
    model_bytes = second
    session = make_session(model_bytes, "cpu")
    assert session.get_inputs()[0].type == "tensor(uint8)"
    rng = np.random.default_rng(3)
    for shape in [(3, 7), (1, TINY.context)]:
        ids = rng.integers(0, 256, size=shape).astype(np.uint8)
        served = session.run([LOGPROBS_OUTPUT], {TEXT_INPUT: ids})[0]
        assert served.shape == (*shape, 256)
        expected = np.stack(learner.predict_logprobs([row.tobytes() for row in ids]))
        assert float(np.abs(served - expected).max()) < 1e-4


def test_onnx_graph_records_its_context_and_right_padding_leaves_real_positions() -> None:
    import onnx

    learner = TextLearner(TINY)
    learner.learn(grammar(b"abcd", 10))
    data = TextOnnxExporter(learner).export()
    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert props[CONTEXT_KEY] == str(TINY.context)
    session = make_session(data, "cpu")
    short = np.frombuffer(b"abcdab", np.uint8)
    padded = np.zeros((2, 12), np.uint8)
    padded[0, :6], padded[1] = short, np.frombuffer(b"dcbadcbadcba", np.uint8)
    alone = session.run([LOGPROBS_OUTPUT], {TEXT_INPUT: short[None]})[0]
    batch = session.run([LOGPROBS_OUTPUT], {TEXT_INPUT: padded})[0]
    assert float(np.abs(batch[0, :6] - alone[0]).max()) < 1e-5


def test_an_export_that_disagrees_with_torch_is_refused() -> None:
    learner = TextLearner(TINY)
    exporter = TextOnnxExporter(learner)
    exporter._expected = lambda: np.zeros((2, 16, 256), np.float32)  # type: ignore[method-assign]
    with pytest.raises(IntegrityError, match="differs from torch"):
        exporter.export()


def test_a_probe_that_is_not_uint8_byte_ids_is_refused() -> None:
    learner = TextLearner(TINY)
    probes: list[np.ndarray] = [
        np.zeros((2, 4), np.int64),
        np.zeros((2, 40), np.uint8),
        np.zeros(4, np.uint8),
        np.zeros((0, 4), np.uint8),
    ]
    for probe in probes:
        with pytest.raises(InvalidArgument):
            TextOnnxExporter(learner, probe)


# -- generation -------------------------------------------------------------------------


def test_greedy_generation_continues_the_grammar() -> None:
    learner = TextLearner(TINY)
    learner.learn(grammar(b"abcd", 300))
    assert learner.generate(b"abcdab", 10) == b"cdabcdabcd"
    assert learner.generate(b"bcda", 6, sampling="sample", top_k=1, seed=5) == b"bcdabc"


def test_sampling_is_deterministic_for_a_seed_and_leaves_all_state_alone() -> None:
    learner = TextLearner(TINY)  # untrained: nearly uniform, so seeds visibly differ
    before = {n: p.detach().clone() for n, p in learner.network.named_parameters()}
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    kwargs = {"sampling": "sample", "temperature": 1.5, "top_k": 50}
    a = learner.generate(b"hello", 24, seed=7, **kwargs)  # type: ignore[arg-type]
    b = learner.generate(b"hello", 24, seed=7, **kwargs)  # type: ignore[arg-type]
    c = learner.generate(b"hello", 24, seed=8, **kwargs)  # type: ignore[arg-type]
    assert len(a) == 24 and a == b and a != c
    assert torch.equal(torch.get_rng_state(), global_state)
    for name, parameter in learner.network.named_parameters():
        assert torch.equal(parameter, before[name])
    assert learner.generate(b"x" * 100, 3) == learner.generate(b"x" * 100, 3)  # past context
    assert learner.generate(b"x", 0) == b""


@pytest.mark.parametrize(
    ("prompt", "max_new", "kwargs", "match"),
    [
        (b"", 4, {}, "at least one byte"),
        ("text", 4, {}, "prompt must be bytes"),
        (b"a" * 9000, 4, {}, "more than max_text_bytes"),
        (b"a", -1, {}, "max_new"),
        (b"a", 10**9, {}, "max_new"),
        (b"a", True, {}, "max_new"),
        (b"a", 4, {"sampling": "beam"}, "sampling"),
        (b"a", 4, {"sampling": "sample", "temperature": 0.0}, "temperature"),
        (b"a", 4, {"sampling": "sample", "temperature": float("nan")}, "temperature"),
        (b"a", 4, {"sampling": "sample", "top_k": 257}, "top_k"),
        (b"a", 4, {"sampling": "sample", "seed": -1}, "seed"),
    ],
)
def test_generate_refuses_bad_requests(
    prompt: bytes, max_new: int, kwargs: dict[str, object], match: str
) -> None:
    learner = TextLearner(TextModelConfig(layers=1, width=16, heads=2, context=8))
    with pytest.raises(InvalidArgument, match=match):
        learner.generate(prompt, max_new, **kwargs)  # type: ignore[arg-type]


# -- hostile input and config -------------------------------------------------------------


def test_hostile_texts_are_refused_or_skipped_never_crash() -> None:
    learner = TextLearner(TINY.model_copy(update={"max_text_bytes": 64}))
    with pytest.raises(InvalidArgument, match="list of bytes"):
        learner.learn(b"abcd")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="list of bytes"):
        learner.learn("abcd")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="text 1 is str"):
        learner.learn([b"abcd", "efgh"])  # type: ignore[list-item]
    assert learner.events == 0 and learner.steps == 0  # nothing learned from a refused call
    learner.learn([b"", b"a", b"x" * 65, bytearray(b"\x00\xff\x00\xff"), bytes(range(256))[:64]])
    assert (learner.events, learner.skipped) == (2, 3)
    with pytest.raises(InvalidArgument, match="text 0 has 65 bytes"):
        learner.predict_logprobs([b"x" * 65])
    assert learner.predict_logprobs([]) == []


def test_cuda_without_a_gpu_or_an_unknown_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TextLearner(TINY, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            TextLearner(TINY, device="cuda")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"width": 30, "heads": 4}, "not divisible by heads"),
        ({"layers": 0}, "greater than or equal to 1"),
        ({"width": -8}, "greater than or equal to 8"),
        ({"context": 1}, "greater than or equal to 2"),
        ({"context": 100_000}, "less than or equal to 1024"),
        ({"layers": 50}, "less than or equal to 12"),
        ({"dropout": 0.9}, "less than or equal to 0.5"),
        ({"batch_size": 256, "max_text_bytes": 65_536}, "bytes of text per step"),
        ({"vocab": 512}, "Extra inputs are not permitted"),
        ({"optimizer": {"name": "adam", "momentum": 0.9}}, "momentum applies to sgd only"),
        ({"optimizer": {"name": "lion"}}, "adamw"),
        ({"optimizer": {"lr": 0}}, "greater than 0"),
    ],
)
def test_config_validation(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TextModelConfig.model_validate(fields)


def test_config_defaults_are_the_issues_and_frozen() -> None:
    config = TextModelConfig()
    assert (config.layers, config.width, config.heads, config.context) == (2, 128, 4, 128)
    assert config.dropout == 0.0 and config.head_dim == 32
    assert config.hash() != TextModelConfig(seed=1).hash()
    with pytest.raises(ValidationError):
        config.width = 64  # type: ignore[misc]
