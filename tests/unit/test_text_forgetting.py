"""Forgetting of a language model: held-out text per domain, replay, and their bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.trainer import checkpoint
from services.trainer.text.config import TextModelConfig
from services.trainer.text.learner import TextLearner
from services.trainer.text.memory import DomainWindows, Holdout, Reservoir, pack, unpack

TINY = TextModelConfig(
    layers=1, width=32, heads=2, context=16, metrics_window=20, seed=1, domain_window=50
)


def test_forgetting_and_backward_transfer_on_a_constructed_case() -> None:
    scores = {"a": 2.0, "b": 3.0}
    holdout = Holdout(every=2, size=4)
    for i in range(4):
        holdout.hold("a", b"a%d" % i)
    assert [len(t) for t in holdout.texts.values()] == [2]  # the 2nd and 4th of domain a

    def evaluate(texts: list[bytes]) -> float:
        return scores[texts[0][:1].decode()]

    holdout.evaluate(evaluate, "a", None)  # a window of a closed: nothing left behind yet
    assert holdout.left_at == {} and holdout.best == {"a": 2.0}
    for i in range(2):
        holdout.hold("b", b"b%d" % i)
    scores.update(a=2.2)  # the window that shows the switch learned some of b already
    holdout.evaluate(evaluate, "b", "a")  # a is remembered as its last window left it
    assert holdout.left_at == {"a": 2.0} and holdout.latest["a"] == 2.2
    scores.update(a=2.5, b=1.0)  # b was learned, a forgotten a little
    holdout.evaluate(evaluate, "b", None)
    expected = {
        "domain_bits_per_byte.a": 2.5,
        "forgetting.a": 0.5,  # now minus its best (2.0, when it was left)
        "domain_bits_per_byte.b": 1.0,
        "forgetting.b": 0.0,
        "backward_transfer": -0.5,  # left at 2.0, now 2.5: forgotten
    }
    assert holdout.scores() == expected
    scores.update(a=1.5)
    assert holdout.scores() == expected  # reading evaluates nothing: the last window's
    holdout.evaluate(evaluate, "b", None)
    assert holdout.scores()["backward_transfer"] == 0.5  # a got better since


def test_a_switch_is_a_change_of_the_dominant_domain_between_windows() -> None:
    windows = DomainWindows(4)
    judged = [windows.learned(d) for d in "abab" + "abaa" + "bbab" + "bbba"]
    closed = [j for j in judged if j[0]]
    assert len(closed) == 4  # every 4 learned events
    # interleaved a/b: ties go to the first name; a stays dominant, then b takes over once
    assert [left for _, left in closed] == [None, None, "a", None]
    assert windows.dominant == "b"


def test_held_out_domains_are_capped_and_named_briefly() -> None:
    holdout = Holdout(every=2, size=1, max_domains=3)
    for domain in ["d0", "d1", "d2", "d3", "d4"]:
        for i in range(2):
            holdout.hold(domain, b"xx%d" % i)
    assert sorted(holdout.texts) == ["d0", "d1", "d2"] and len(holdout.counts) == 3
    learner = TextLearner(TINY.model_copy(update={"holdout_every": 2}))
    learner.learn([b"abc", b"abd"], ["x" * 500] * 2)
    assert list(learner.holdout.texts) == ["x" * 64]


def test_replay_buffers_and_steps_stay_within_their_memory_bounds() -> None:
    with pytest.raises(ValueError, match="bytes of text per step"):
        TextModelConfig(batch_size=128, max_text_bytes=8192, replay_ratio=1.0)
    with pytest.raises(ValueError, match="kept for replay"):
        TextModelConfig(max_text_bytes=65536, replay_buffer=100_000, replay_ratio=0.5)
    TextModelConfig(max_text_bytes=65536, replay_buffer=100_000)  # no replay: no buffer


def test_holdout_sets_aside_every_nth_event_of_each_domain_until_full() -> None:
    learner = TextLearner(TINY.model_copy(update={"holdout_every": 3, "holdout_size": 2}))
    texts = [b"abcdef%d" % i for i in range(12)]
    learner.learn(texts, ["x"] * 9 + ["y"] * 3)
    assert learner.holdout.texts == {"x": [texts[2], texts[5]], "y": [texts[11]]}
    assert (learner.events, learner.held_out) == (9, 3)  # x's 9th is not held: full
    assert learner.snapshot()["events"] == 9 and learner.snapshot()["held_out"] == 3
    with pytest.raises(ValueError, match="holdout_every 1"):
        TextModelConfig(holdout_every=1)


def test_reservoir_keeps_a_uniform_sample_and_continues_exactly_from_its_state() -> None:
    kept = np.zeros(100)
    for seed in range(300):
        reservoir = Reservoir(10, seed)
        reservoir.add([bytes([i]) for i in range(100)])
        assert len(reservoir.items) == 10 and reservoir.seen == 100
        kept[[t[0] for t in reservoir.items]] += 1
    # each of the 100 texts is kept with probability 0.1: 30 times in 300 runs, +- 4 sd
    assert abs(kept[:50].mean() - 30) < 6 and abs(kept[50:].mean() - 30) < 6
    a, b = Reservoir(5, 7), Reservoir(5, 0)
    a.add([b"x%d" % i for i in range(20)])
    b.restore(a.state())
    assert a.draw(8) == b.draw(8)
    assert unpack(pack([b"", b"ab", b"\x00"])) == [b"", b"ab", b"\x00"]


def two_domains() -> tuple[list[bytes], list[str]]:
    first = [b"abcabcabcabc" for _ in range(150)]
    second = [b"xyzzyxxyzzyx" for _ in range(200)]
    return first + second, ["abc"] * 150 + ["xyz"] * 200


def test_replay_learns_past_texts_again_without_scoring_them_again_and_forgets_less() -> None:
    texts, domains = two_domains()
    forgetting = {}
    for ratio in (0.0, 1.0):
        config = TINY.model_copy(update={"holdout_every": 10, "replay_ratio": ratio})
        learner = TextLearner(config)
        learner.learn(texts, domains)
        assert learner.events + learner.held_out == len(texts)
        assert learner.metrics.events == learner.events  # replayed texts are not scored
        scores = learner.domain_scores()
        forgetting[ratio] = scores["forgetting.abc"]
        assert scores["forgetting.xyz"] == pytest.approx(0.0, abs=1e-9)  # still learning it
        assert "backward_transfer" in scores
    assert forgetting[0.0] > 0.1  # learning xyz alone forgets abc
    assert forgetting[1.0] < forgetting[0.0] / 2  # replaying past texts keeps most of it


def test_replay_and_holdout_are_crash_exact(tmp_path: Path) -> None:
    texts, domains = two_domains()
    config = TINY.model_copy(update={"holdout_every": 7, "replay_ratio": 0.5})
    reference = TextLearner(config)
    reference.learn(texts, domains)
    first = TextLearner(config)
    first.learn(texts[:170], domains[:170])  # past the switch of domain
    checkpoint.save(tmp_path / "c.pt", {"learner": first.state()})
    saved = checkpoint.load(tmp_path / "c.pt")
    assert saved is not None
    resumed = TextLearner(config)
    resumed.restore(saved["learner"])
    resumed.learn(texts[170:], domains[170:])
    for ours, theirs in zip(
        resumed.network.parameters(), reference.network.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert resumed.snapshot() == reference.snapshot()
    assert resumed.domain_scores() == reference.domain_scores()


def test_ewc_holds_the_first_domain_and_is_crash_exact(tmp_path: Path) -> None:
    texts, domains = two_domains()
    scores = {}
    for strength in (0.0, 3000.0):
        config = TINY.model_copy(update={"holdout_every": 10, "ewc_lambda": strength})
        learner = TextLearner(config)
        learner.learn(texts, domains)
        scores[strength] = learner.domain_scores()
        consolidated = bool(learner.consolidation.anchor)
        assert consolidated == (strength > 0)  # anchored at the switch to xyz, only if on
    assert scores[0.0]["forgetting.abc"] > 0.1
    assert scores[3000.0]["forgetting.abc"] < scores[0.0]["forgetting.abc"] / 2
    assert scores[3000.0]["domain_bits_per_byte.xyz"] < 4.0  # still learned the new domain
    config = TINY.model_copy(update={"ewc_lambda": 100.0})
    reference = TextLearner(config)
    reference.learn(texts, domains)
    first = TextLearner(config)
    first.learn(texts[:200], domains[:200])
    checkpoint.save(tmp_path / "c.pt", {"learner": first.state()})
    saved = checkpoint.load(tmp_path / "c.pt")
    assert saved is not None
    resumed = TextLearner(config)
    resumed.restore(saved["learner"])
    resumed.learn(texts[200:], domains[200:])
    for ours, theirs in zip(
        resumed.network.parameters(), reference.network.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_the_warm_up_restarts_at_a_switch_of_domain_when_asked(tmp_path: Path) -> None:
    texts, domains = two_domains()
    rates = {}
    for rewarm in (False, True):
        learner = TextLearner(TINY.model_copy(update={"rewarm_on_switch": rewarm}))
        learner.learn(texts[:200], domains[:200])  # windows of 50: xyz dominant at 200
        rates[rewarm] = learner.optimizer.param_groups[0]["lr"]
        assert learner.rewarms == int(rewarm)
    lr, warmup = TINY.optimizer.lr, TINY.optimizer.warmup_steps
    assert rates[False] == pytest.approx(lr)
    assert rates[True] == pytest.approx(lr / warmup)  # back to the first warm-up step
    checkpoint.save(tmp_path / "c.pt", {"learner": learner.state()})
    saved = checkpoint.load(tmp_path / "c.pt")
    assert saved is not None
    resumed = TextLearner(TINY.model_copy(update={"rewarm_on_switch": True}))
    resumed.restore(saved["learner"])
    learner.learn(texts[200:230], domains[200:230])
    resumed.learn(texts[200:230], domains[200:230])
    assert resumed.optimizer.param_groups[0]["lr"] == learner.optimizer.param_groups[0]["lr"]
    for ours, theirs in zip(
        resumed.network.parameters(), learner.network.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
