"""The online learner of a byte-level language model: test-then-train on each event's bytes.

`learn(texts)` takes events in order, `batch_size` per optimiser step. Each step first
scores its events with the weights as they were before it (bits per byte, next-byte
accuracy: `metrics.py`), then learns from them: the mean cross-entropy of every predicted
byte of the step's windows (`windows.py`). With dropout 0 one forward pass serves both.

Events are counted once each: `events` (learned), `skipped` (fewer than 2 bytes, so nothing
to predict, or more than `max_text_bytes`), `held_out` (set aside per domain to measure
forgetting: `memory.Holdout`) or `refused` (a non-finite loss or gradient: no step is
taken and their scores stay out of the metrics). With `replay_ratio` > 0 each step also
learns past texts drawn from a reservoir (`memory.Reservoir`), which are not scored again;
with `ewc_lambda` > 0 a penalty holds the weights near those of the domains left behind
(`ewc.Consolidation`).

Crash-exact: `state()` holds the weights, optimizer, schedule, metrics, counters and the
dropout random stream, so a learner restored after event k and fed events k+1.. in the same
`learn` calls ends bit-identical to one that never stopped (mini-batches are formed within
each call, as the tabular learner's are).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  # torch's own convention

from services.trainer.metrics import Prequential
from services.trainer.text.config import VOCAB, TextModelConfig, TextOptimizerSpec
from services.trainer.text.distill import Teacher, soft_target_loss
from services.trainer.text.ewc import Consolidation
from services.trainer.text.generate import Decoding, Sampling, continue_bytes
from services.trainer.text.memory import DomainWindows, Holdout, Reservoir, domain_name
from services.trainer.text.metrics import TextPrequential
from services.trainer.text.model import ByteTransformer, build
from services.trainer.text.windows import (
    Windows,
    check_texts,
    input_chunks,
    pad,
    training_windows,
)
from shared.errors import ConfigError, IntegrityError, InvalidArgument

_LN2 = math.log(2.0)


def _optimizer(spec: TextOptimizerSpec, network: ByteTransformer) -> torch.optim.Optimizer:
    params = network.parameters()
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )


def _warmup(steps: int) -> Any:
    """The LambdaLR factor: (step + 1) / steps during the warm-up, then 1."""
    if steps == 0:
        return lambda step: 1.0
    return lambda step: min(1.0, (step + 1) / steps)


class TextLearner:
    """A byte transformer, its optimizer and warm-up, and prequential bits per byte."""

    def __init__(
        self, config: TextModelConfig, device: str = "cpu", teacher: Teacher | None = None
    ) -> None:
        """`teacher`: the distillation teacher, needed when `config.distill` is set.

        Raises:
            ConfigError: an unknown device, cuda without a GPU, distillation without a
                teacher, or a teacher that sees less context than this model.

        """
        if config.distill is not None and teacher is None:
            raise ConfigError("distillation is configured but no teacher was given")
        if teacher is not None and teacher.context < config.context:
            raise ConfigError(
                f"the teacher sees {teacher.context} bytes of context, fewer than the "
                f"student's {config.context}"
            )
        self.teacher = teacher if config.distill is not None else None
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for, but no GPU is available")
        self.config = config
        self.device = torch.device(device)
        self.network, self.optimizer, self.scheduler = self._components()
        self.metrics = TextPrequential(config.metrics_window)
        self.class_metrics = Prequential("multiclass", config.metrics_window)
        self.events = 0  # events learned from
        self.skipped = 0  # events with nothing to predict, or too long
        self.refused = 0  # events whose loss or gradient was not finite
        self.held_out = 0  # events set aside to measure forgetting (`memory.Holdout`)
        self.rewarms = 0  # warm-ups restarted at a switch of domain
        self.steps = 0  # optimiser steps taken
        self.reservoir = Reservoir(config.replay_buffer, config.seed)
        self.holdout = Holdout(config.holdout_every, config.holdout_size, config.holdout_domains)
        self.windows = DomainWindows(config.domain_window)
        self.consolidation = Consolidation(config.ewc_lambda, config.ewc_decay)
        self._replay_credit = 0.0  # fractional replayed texts owed to the next steps
        with self._devices_rng():
            torch.manual_seed(config.seed)  # dropout's own stream, saved in checkpoints
            self._rng = self._capture_rng()

    def _components(
        self,
    ) -> tuple[ByteTransformer, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        network = build(self.config).to(self.device).eval()
        optimizer = _optimizer(self.config.optimizer, network)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _warmup(self.config.optimizer.warmup_steps)
        )
        return network, optimizer, scheduler

    # -- learning -------------------------------------------------------------------------

    def learn(
        self,
        texts: Sequence[bytes | bytearray],
        domains: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
    ) -> None:
        """Score, then learn from, every text in order (`batch_size` per optimiser step).

        `domains` names each text's domain (none: all of domain ""), for the held-out
        texts that measure forgetting; `labels` each text's class (-1: none) for the class
        head of a multi-task model (`classes` > 0; ignored without one).

        Raises:
            InvalidArgument: `texts` is not a list of bytes, or `domains` is not one name
                per text (nothing is learned then).

        """
        checked = check_texts(texts)
        named = [""] * len(checked) if domains is None else list(domains)
        if len(named) != len(checked) or not all(isinstance(d, str) for d in named):
            raise InvalidArgument("domains must be one string per text")
        named = [domain_name(d) for d in named]
        classes = [-1] * len(checked) if labels is None else [int(y) for y in labels]
        if len(classes) != len(checked):
            raise InvalidArgument("labels must be one class (or -1) per text")
        size = self.config.batch_size
        for start in range(0, len(checked), size):
            stop = start + size
            self._step(checked[start:stop], named[start:stop], classes[start:stop])

    def _step(self, chunk: list[bytes], domains: list[str], labels: list[int]) -> None:
        usable, kept, classes = [], [], []
        for text, domain, label in zip(chunk, domains, labels, strict=True):
            if not 2 <= len(text) <= self.config.max_text_bytes:
                self.skipped += 1
            elif self.holdout.hold(domain, text):
                self.held_out += 1
            else:
                usable.append(text)
                kept.append(domain)
                classes.append(label)
        if not usable:
            return
        replayed = self.reservoir.draw(self._owed_replays(len(usable)))
        windows = training_windows(usable + replayed, self.config.context).to(self.device)
        with self._dropout_rng():
            scored, logits = self._forward(windows.inputs)
            nll = _nll(logits, windows.targets)
            # with dropout the scored forward differs from the training one
            scored_nll = _nll(scored, windows.targets) if self.config.dropout else nll.detach()
            everything = len(usable) + len(replayed)
            bits, nbytes, hits = _per_event(scored, scored_nll, windows, everything)
            loss = torch.where(windows.mask, nll, 0.0).sum() / windows.mask.sum()
            loss = self._distilled(loss, logits, windows)
            classified = self._classified(usable, classes)
            if classified is not None:  # multi-task: the class head's loss beside it
                loss = loss + self.config.class_weight * classified.loss
            penalty = self.consolidation.penalty(self.network)
            if penalty is not None:  # past domains' weights held near their anchor
                loss = loss + penalty
            if not (bool(torch.isfinite(loss)) and np.isfinite(bits).all() and self._apply(loss)):
                self.refused += len(usable)
                return
        self.events += len(usable)
        new = len(usable)  # replayed texts are learned again, not scored again
        self.metrics.update(bits[:new], nbytes[:new], hits[:new])
        if classified is not None:
            self.class_metrics.update(*classified.scored)
        self.reservoir.add(usable)
        for domain in kept:
            self._judge_domain(domain)

    def _judge_domain(self, domain: str) -> None:
        """Count a learned event's domain; score the held-out sets at a window's end.

        At a switch of domain the consolidation (EWC) anchors the weights.
        """
        closed, left = self.windows.learned(domain)
        if not closed:
            return
        if self.holdout.texts:
            self.holdout.evaluate(self.bits_per_byte, self.windows.dominant, left)
        self.consolidation.window_closed(self.network, switched=left is not None)
        if left is not None and self.config.rewarm_on_switch:
            self.rewarms += 1
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, _warmup(self.config.optimizer.warmup_steps)
            )

    def _distilled(
        self, loss: torch.Tensor, logits: torch.Tensor, windows: Windows
    ) -> torch.Tensor:
        """The labels' loss mixed with the teacher's soft targets (unchanged without one)."""
        spec = self.config.distill
        if self.teacher is None or spec is None:
            return loss
        ids = windows.inputs.cpu().numpy().astype(np.uint8)
        targets = torch.from_numpy(self.teacher(ids)).to(self.device)
        soft = soft_target_loss(logits, targets, windows.mask, spec.temperature)
        return (1 - spec.weight) * loss + spec.weight * soft

    def _classified(self, texts: list[bytes], labels: list[int]) -> _Classified | None:
        """The class head on the labelled texts: its loss, and its scored predictions.

        A text's class is read at its last byte, from the chunk of the last `context` bytes
        it falls in (as served). None without a class head or labelled texts.
        """
        if self.network.classifier is None:
            return None
        chosen = [
            (t, y) for t, y in zip(texts, labels, strict=True) if 0 <= y < self.config.classes
        ]
        if not chosen:
            return None
        batch, lengths = pad([input_chunks(t, self.config.context)[-1] for t, _ in chosen])
        ids, last = batch.to(self.device), torch.from_numpy(lengths - 1).to(self.device)
        rows = torch.arange(len(chosen), device=self.device)
        y = torch.tensor([label for _, label in chosen], device=self.device)
        scored, trained = self._forward(ids, lambda x: self.network.classify(self.network.trunk(x)))
        loss = F.cross_entropy(trained[rows, last].float(), y)
        before = torch.softmax(scored[rows, last].float(), dim=-1)
        per_event = F.cross_entropy(scored[rows, last].float(), y, reduction="none")
        return _Classified(
            loss,
            (before.cpu().numpy(), y.cpu().numpy().astype(float), per_event.cpu().numpy()),
        )

    def _owed_replays(self, new: int) -> int:
        """Past texts to mix into a step of `new` events: `replay_ratio` each, carried over."""
        self._replay_credit += self.config.replay_ratio * new
        owed = int(self._replay_credit)
        self._replay_credit -= owed
        return owed

    def _forward(
        self,
        inputs: torch.Tensor,
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scored, training) outputs of `head` (by default the next-byte logits).

        One pass when no dropout makes them differ.
        """
        run = self.network if head is None else head
        if not self.config.dropout:
            logits = run(inputs)
            return logits.detach(), logits
        with torch.no_grad():
            scored = run(inputs)
        self.network.train()
        try:
            return scored, run(inputs)
        finally:
            self.network.eval()

    def _apply(self, loss: torch.Tensor) -> bool:
        """Backward, clip and step; False (no step) when a gradient is not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        grads = [p.grad for p in self.network.parameters() if p.grad is not None]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            return False
        self.consolidation.observe(self.network)  # before clipping: the gradients as they are
        if self.config.optimizer.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                self.network.parameters(), self.config.optimizer.clip_norm
            )
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1
        return True

    # -- predicting -----------------------------------------------------------------------

    @torch.no_grad()
    def predict_logprobs(self, texts: Sequence[bytes | bytearray]) -> list[np.ndarray]:
        """Per text, (len, 256) float32 natural-log probabilities of the byte after each byte.

        Row t is the distribution of byte t + 1 given the bytes of t's context-sized chunk
        up to t (the windows `learn` scores); the last row predicts the byte after the text.
        Nothing is learned.

        Raises:
            InvalidArgument: not a list of bytes, or a text longer than `max_text_bytes`.

        """
        checked = check_texts(texts)
        for i, text in enumerate(checked):
            self._check_length(f"text {i}", text)
        out: list[np.ndarray] = []
        for group in _groups(checked, self.config.batch_size * self.config.max_text_bytes):
            out.extend(self._logprobs(group))
        return out

    def _logprobs(self, texts: list[bytes]) -> list[np.ndarray]:
        chunks = [input_chunks(t, self.config.context) for t in texts]
        flat = [c for per_text in chunks for c in per_text]
        if not flat:  # only empty texts
            return [np.zeros((0, VOCAB), dtype=np.float32) for _ in texts]
        batch, lengths = pad(flat)
        logprobs = torch.log_softmax(self.network(batch.to(self.device)).float(), dim=-1)
        rows = logprobs.cpu().numpy()
        out, row = [], 0
        for per_text in chunks:
            parts = [rows[row + i, : lengths[row + i]] for i in range(len(per_text))]
            row += len(per_text)
            out.append(np.concatenate(parts) if parts else np.zeros((0, VOCAB), np.float32))
        return out

    def generate(
        self,
        prompt: bytes,
        max_new: int,
        *,
        sampling: Sampling = "greedy",
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
    ) -> bytes:
        """The `max_new` bytes that follow `prompt` (`generate.Decoding` says how).

        Raises:
            InvalidArgument: an empty or too long prompt, max_new outside
                [0, max_text_bytes], or decoding settings that make no sense.

        """
        if not isinstance(prompt, (bytes, bytearray)):
            raise InvalidArgument(f"prompt must be bytes, not {type(prompt).__name__}")
        if not prompt:
            raise InvalidArgument("prompt must hold at least one byte (there is no start token)")
        self._check_length("prompt", prompt)
        limit = self.config.max_text_bytes
        if isinstance(max_new, bool) or not isinstance(max_new, int) or not 0 <= max_new <= limit:
            raise InvalidArgument(f"max_new must be an integer in [0, {limit}], not {max_new!r}")
        decoding = Decoding(sampling, temperature, top_k, seed)
        decoding.check()
        return continue_bytes(self.network, bytes(prompt), max_new, decoding)

    def _check_length(self, what: str, text: bytes) -> None:
        if len(text) > self.config.max_text_bytes:
            raise InvalidArgument(
                f"{what} has {len(text)} bytes, more than max_text_bytes "
                f"{self.config.max_text_bytes}"
            )

    def snapshot(self) -> dict[str, float]:
        """Prequential metrics and counters, for the trainer's metrics topic."""
        counts = {"skipped": self.skipped, "refused": self.refused, "steps": self.steps}
        if self.config.holdout_every:
            counts["held_out"] = self.held_out
        if self.config.rewarm_on_switch:
            counts["rewarms"] = self.rewarms
        classes = {f"class_{k}": v for k, v in self.class_metrics.snapshot().items()}
        return self.metrics.snapshot() | classes | {k: float(v) for k, v in counts.items()}

    def domain_scores(self) -> dict[str, float]:
        """Bits per byte on each domain's held-out texts, forgetting, backward transfer.

        As measured at the end of the last domain window (`domain_window` learned events):
        reading them costs nothing and changes nothing.
        """
        return self.holdout.scores()

    @torch.no_grad()
    def bits_per_byte(self, texts: list[bytes]) -> float:
        """The model's bits per predicted byte over `texts` (each of 2 bytes or more)."""
        bits, predicted = 0.0, 0
        for group in _groups(texts, self.config.batch_size * self.config.max_text_bytes):
            windows = training_windows(group, self.config.context).to(self.device)
            nll = _nll(self.network(windows.inputs), windows.targets)
            bits += float(torch.where(windows.mask, nll, 0.0).double().sum()) / _LN2
            predicted += int(windows.mask.sum())
        return bits / predicted

    # -- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly here: plain types and tensors only."""
        return {
            "config": self.config.hash(),
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "metrics": self.metrics.state(),
            "class_metrics": self.class_metrics.state(),
            "counts": [self.events, self.skipped, self.refused, self.steps],
            "held_out": self.held_out,
            "rewarms": self.rewarms,
            "rng": list(self._rng),
            "reservoir": self.reservoir.state(),
            "holdout": self.holdout.state(),
            "replay_credit": self._replay_credit,
            "ewc": self.consolidation.state(),
            "windows": self.windows.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`; on any error this learner is left as it was.

        Raises:
            ConfigError: the state was saved by a learner of another config.
            IntegrityError: the state is malformed.

        """
        if not isinstance(state, dict) or state.get("config") != self.config.hash():
            raise ConfigError("the checkpoint was saved with another text model config")
        network, optimizer, scheduler = self._components()
        metrics = TextPrequential(self.config.metrics_window)
        class_metrics = Prequential("multiclass", self.config.metrics_window)
        reservoir = Reservoir(self.config.replay_buffer, self.config.seed)
        holdout = Holdout(
            self.config.holdout_every, self.config.holdout_size, self.config.holdout_domains
        )
        windows = DomainWindows(self.config.domain_window)
        consolidation = Consolidation(self.config.ewc_lambda, self.config.ewc_decay)
        try:
            network.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            metrics.restore(state["metrics"])
            class_metrics.restore(state["class_metrics"])
            events, skipped, refused, steps = (int(c) for c in state["counts"])
            held_out, credit = int(state["held_out"]), float(state["replay_credit"])
            rewarms = int(state["rewarms"])
            reservoir.restore(state["reservoir"])
            holdout.restore(state["holdout"])
            consolidation.restore(state["ewc"], self.device)
            windows.restore(state["windows"])
            rng = tuple(torch.as_tensor(s, dtype=torch.uint8).clone() for s in state["rng"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise IntegrityError(f"malformed text learner checkpoint: {exc}") from exc
        if len(rng) != len(self._rng):
            raise IntegrityError("the checkpoint's random state is for another device")
        self.network, self.optimizer, self.scheduler = network, optimizer, scheduler
        self.metrics, self.class_metrics = metrics, class_metrics
        self.events, self.skipped, self.refused, self.steps = events, skipped, refused, steps
        self.held_out, self._replay_credit, self.rewarms = held_out, credit, rewarms
        self.reservoir, self.holdout, self.consolidation = reservoir, holdout, consolidation
        self.windows = windows
        self._rng = rng

    # -- dropout's random stream ----------------------------------------------------------

    def _devices_rng(self) -> contextlib.AbstractContextManager[None]:
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=cuda)

    def _capture_rng(self) -> tuple[torch.Tensor, ...]:
        if self.device.type == "cuda":
            return torch.get_rng_state(), torch.cuda.get_rng_state(self.device)
        return (torch.get_rng_state(),)

    @contextlib.contextmanager
    def _dropout_rng(self) -> Iterator[None]:
        """Run with the learner's own random stream, which then moves on.

        The global stream is left as it was: nothing else drawing from it can break
        crash-exactness.
        """
        with self._devices_rng():
            torch.set_rng_state(self._rng[0])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(self._rng[1], self.device)
            yield
            self._rng = self._capture_rng()


@dataclass(frozen=True)
class _Classified:
    """The class head's loss on a step's labelled texts, and what it predicted before it."""

    loss: torch.Tensor
    scored: tuple[np.ndarray, np.ndarray, np.ndarray]  # probabilities, labels, losses


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in nats of each target (N, T) under logits (N, T, 256)."""
    flat = F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1), reduction="none")
    return flat.reshape(targets.shape)


def _per_event(
    logits: torch.Tensor, nll: torch.Tensor, windows: Windows, events: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bits (float64), predicted bytes and right argmax guesses of each event."""
    mask = windows.mask
    window_bits = torch.where(mask, nll, 0.0).double().sum(dim=1) / _LN2
    window_hits = ((logits.argmax(dim=-1) == windows.targets) & mask).sum(dim=1)
    owner = windows.owner
    bits = torch.zeros(events, dtype=torch.float64, device=owner.device)
    nbytes = torch.zeros(events, dtype=torch.int64, device=owner.device)
    hits = torch.zeros(events, dtype=torch.int64, device=owner.device)
    bits.index_add_(0, owner, window_bits)
    nbytes.index_add_(0, owner, mask.sum(dim=1))
    hits.index_add_(0, owner, window_hits)
    return bits.cpu().numpy(), nbytes.cpu().numpy(), hits.cpu().numpy()


def _groups(texts: list[bytes], budget: int) -> Iterator[list[bytes]]:
    """Consecutive texts in groups of at most `budget` bytes (a longer text goes alone)."""
    group: list[bytes] = []
    size = 0
    for text in texts:
        if group and size + len(text) > budget:
            yield group
            group, size = [], 0
        group.append(text)
        size += len(text)
    if group:
        yield group
