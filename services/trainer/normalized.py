"""Vowpal Wabbit's default update for linear models: adaptive, normalised, importance-aware.

The rule of VW's `gd` reduction with `--adaptive --normalized --invariant` (Ross, Mineiro
and Langford 2013, "Normalized online learning"; Karampatziakis and Langford 2011, "Online
importance weight aware updates"), written anew for the trainer's linear bodies. Per event
with features x (the dense inputs as the linear layer sees them, the bias as a constant 1,
each hashed id as a feature whose value is the number of slots holding it), importance
weight h, learning rate eta and per-output loss derivative g_k = dl/dscore_k:

- scale: s_j = max |x_j| seen so far. When a larger |x_j| arrives, feature j's weights are
  multiplied by s_j(old) / |x_j| first, as if the new scale had been there all along.
- adaptive: G_kj += h g_k^2 x_j^2 (AdaGrad's sum of squared gradients, per weight).
- rate of weight kj: r_kj = 1 / (sqrt(G_kj) s_j).
- normalised: N += h sum_j x_j^2 / s_j^2 and T += h over the events; the step is multiplied
  by m = sqrt(T / N), so the rate does not depend on how many features an event has.
- the prediction moves by u * p_k per unit of update u, p_k = m sum_j x_j^2 r_kj; the update
  is u_k, and each weight moves by m u_k x_j r_kj.
- importance-aware (invariant) u for squared loss (`mse`) and logistic loss (`bce`): the
  exact solution of the gradient flow over the event's importance weight (the prediction
  never overshoots the label, however large h or eta), with VW's first-order form when
  eta h p < 1e-6. Huber and cross-entropy (softmax) take the plain normalised adaptive
  step u_k = -eta h g_k: their flow has no closed form.

So multiplying a feature by any constant leaves every prediction unchanged (its weight
shrinks by the same constant), and raw, unscaled features learn without tuning. An event
whose loss derivative is zero changes nothing, as in VW. A feature whose value is 0 (or
missing) takes no part in an event (VW's examples do not hold zero-valued features).

State, checkpointed with the optimizer's `state_dict` like AdaGrad's sums: per weight its
sum G ("sum", float32), per dense feature and per hashed bucket its scale s ("scale",
float32), and the normaliser (N, T) as the float64 `norm_sum` / `weight_sum` of the
parameter group (plain floats: the weights-only unpickler keeps them exact). One compiled
kernel (`update_row`) does the arithmetic for the torch path (`Normalized.learn_rows`) and
for the compiled per-event path (`fused.learn_events`), so both hold the same state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch
from torch import nn

from shared.errors import ConfigError

# loss codes, shared with `fused.py`
MSE, HUBER, BCE, CROSS_ENTROPY = 0, 1, 2, 3
LOSSES = {"mse": MSE, "huber": HUBER, "bce": BCE, "cross_entropy": CROSS_ENTROPY}
LINEAR_KINDS = ("linear", "logistic", "softmax")
X_MIN = 1.084202e-19  # VW's smallest feature magnitude: x^2 stays a normal float32
X2_MIN = X_MIN * X_MIN
X2_MAX = 3.4028234663852886e38  # float32's max: larger x^2 counts as 1 in the normaliser
TAYLOR = 1e-6  # below this eta h p, the first-order update (VW's guard against cancellation)
STEEP = 30.0  # logistic margins past this: the loss is ~1e-13, the first-order update exact


@numba.njit(cache=True, fastmath=False)
def _gradients(loss: int, scores: np.ndarray, label: float, delta: float, out: np.ndarray) -> None:
    """dl/dscore per output, in float64, for the trainer's losses (labels as it decodes them)."""
    if loss == CROSS_ENTROPY:
        top = scores[0]
        for k in range(scores.shape[0]):
            top = max(top, scores[k])
        total = 0.0
        for k in range(scores.shape[0]):
            out[k] = math.exp(scores[k] - top)
            total += out[k]
        for k in range(scores.shape[0]):
            out[k] = out[k] / total - (1.0 if k == int(label) else 0.0)
        return
    d = scores[0] - label
    if loss == MSE:
        out[0] = 2.0 * d
    elif loss == HUBER:
        out[0] = d if abs(d) <= delta else delta * (1.0 if d > 0 else -1.0)
    else:  # BCE on the logit, labels 0/1
        out[0] = 1.0 / (1.0 + math.exp(-scores[0])) - label


@numba.njit(cache=True, fastmath=False)
def _w_of_exp(x: float) -> float:
    """Lambert W(e^x): the u > 0 with u + log(u) = x, by Newton's method in float64.

    f(u) = u + log(u) - x is increasing and concave: from the start (at or right of the
    root) one step lands left of it, and from there the iterates rise to it monotonically.
    """
    u = x - math.log(x) if x > 1.0 else math.exp(x)
    for _ in range(100):
        nxt = u * (1.0 - math.log(u) + x) / (1.0 + u)
        if abs(nxt - u) <= 1e-15 * nxt:
            return nxt
        u = nxt
    return u


@numba.njit(cache=True, fastmath=False)
def _update(
    loss: int, score: float, label: float, gradient: float, step: float, ppu: float
) -> float:
    """The update u of one output: importance-aware for mse and bce, else plain.

    `step` is eta h (the learning rate times the importance weight), `ppu` how far the
    prediction moves per unit of update.
    """
    if loss == MSE:
        if step * ppu < TAYLOR:
            return -step * gradient
        return (label - score) * -math.expm1(-2.0 * step * ppu) / ppu
    if loss == BCE:
        sign = 2.0 * label - 1.0  # VW's labels: -1 / +1
        margin = sign * score
        if step * ppu < TAYLOR or margin > STEEP:
            return -step * gradient
        # the margin q follows dq/dh = eta p / (1 + e^q): q + e^q grows by eta h p,
        # so the final margin is x - W(e^x) with x = q0 + e^q0 + eta h p
        x = step * ppu + margin + math.exp(margin)
        final = x - _w_of_exp(x)
        return (sign * final - score) / ppu
    return -step * gradient


@numba.njit(cache=True, fastmath=False)
def _value(m: int, z: np.ndarray, ids: np.ndarray) -> float:
    """Feature m of the event: dense z, then the bias (1), then one per hashed-id slot.

    An id held by several slots is one feature whose value is the number of slots (the
    sum of their gradients, as torch's embedding gradient); its later slots count 0.
    """
    f = z.shape[0]
    if m < f:
        v = np.float64(z[m])
        return 0.0 if math.isnan(v) else v
    if m == f:
        return 1.0
    slot = m - f - 1
    row = ids[slot]
    if row == 0:
        return 0.0
    times = 0
    for other in range(ids.shape[0]):
        if ids[other] == row:
            if other < slot:
                return 0.0
            times += 1
    return float(times)


@numba.njit(cache=True, fastmath=False)
def update_row(
    z: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    label: float,
    weight: float,
    lr: float,
    loss: int,
    delta: float,
    w: np.ndarray,
    b: np.ndarray,
    emb: np.ndarray,
    gw: np.ndarray,
    gb: np.ndarray,
    gemb: np.ndarray,
    sw: np.ndarray,
    semb: np.ndarray,
    norm: np.ndarray,
) -> bool:
    """Learn one event in place; False (and nothing written) when the result is not finite.

    `z` (F,) the dense inputs of the linear layer, `ids` (S,) the hashed ids (0 = missing),
    `scores` (K,) the scores the update is taken at, `label` the value, 0/1 or class index.
    Weights `w` (K*F,), `b` (K,) and `emb` (B*K,), flat views of torch's row-major
    tensors; `gw`, `gb`, `gemb` their sums G; `sw` (F,), `semb` (B,) the feature scales;
    `norm` [N, T] in float64.
    """
    outputs, f, slots = b.shape[0], z.shape[0], ids.shape[0]
    grads = np.empty(outputs)
    _gradients(loss, scores, label, delta, grads)
    squared = np.empty(outputs)
    live = False
    for k in range(outputs):
        squared[k] = weight * grads[k] * grads[k]
        if not math.isfinite(squared[k]):
            return False
        live = live or squared[k] > 0.0
    if not (weight > 0.0) or not live:  # nothing to learn: VW leaves every state alone
        return True
    n = f + 1 + slots
    values = np.zeros(n)
    scale = np.zeros(n)
    rescale = np.ones(n)
    sums = np.zeros((n, outputs), dtype=np.float32)
    rates = np.zeros((n, outputs))
    ppu = np.zeros(outputs)
    norm_x = 0.0
    for m in range(n):
        x = _value(m, z, ids)
        if x == 0.0:
            continue
        values[m] = x
        x2, size = x * x, abs(x)
        if x2 < X2_MIN:
            x2, size = X2_MIN, X_MIN
        if m < f:
            s = float(sw[m])
        elif m == f:
            s = 1.0
        else:
            s = float(semb[ids[m - f - 1]])
        if size > s:  # a new scale: the weights as if it had been there all along
            if s > 0.0:
                rescale[m] = s / size
            s = size
        scale[m] = s
        norm_x += 1.0 if x2 > X2_MAX else x2 / (s * s)
        for k in range(outputs):
            if m < f:
                old = gw[k * f + m]
            elif m == f:
                old = gb[k]
            else:
                old = gemb[ids[m - f - 1] * outputs + k]
            total = np.float32(np.float64(old) + squared[k] * x2)
            sums[m, k] = total
            if total > 0.0:
                rates[m, k] = 1.0 / (math.sqrt(np.float64(total)) * s)
                ppu[k] += x2 * rates[m, k]
    norm_sum = norm[0] + weight * norm_x
    weight_sum = norm[1] + weight
    multiplier = math.sqrt(weight_sum / norm_sum)
    updates = np.empty(outputs)
    for k in range(outputs):
        u = _update(loss, scores[k], label, grads[k], lr * weight, ppu[k] * multiplier)
        updates[k] = u * multiplier
    fresh = np.zeros((n, outputs), dtype=np.float32)
    for m in range(n):
        if values[m] == 0.0:
            continue
        if not (math.isfinite(scale[m]) and scale[m] <= X2_MAX):
            return False
        for k in range(outputs):
            if m < f:
                old_w = np.float64(w[k * f + m])
            elif m == f:
                old_w = np.float64(b[k])
            else:
                old_w = np.float64(emb[ids[m - f - 1] * outputs + k])
            moved = old_w * rescale[m] + updates[k] * values[m] * rates[m, k]
            fresh[m, k] = np.float32(moved)
            if not (math.isfinite(fresh[m, k]) and math.isfinite(sums[m, k])):
                return False
    if not (math.isfinite(norm_sum) and math.isfinite(multiplier)):
        return False
    for m in range(n):  # every value is finite: commit
        if values[m] == 0.0:
            continue
        for k in range(outputs):
            if m < f:
                w[k * f + m], gw[k * f + m] = fresh[m, k], sums[m, k]
            elif m == f:
                b[k], gb[k] = fresh[m, k], sums[m, k]
            else:
                at = ids[m - f - 1] * outputs + k
                emb[at], gemb[at] = fresh[m, k], sums[m, k]
        if m < f:
            sw[m] = scale[m]
        elif m > f:
            semb[ids[m - f - 1]] = scale[m]
    norm[0], norm[1] = norm_sum, weight_sum
    return True


@numba.njit(cache=True, fastmath=False)
def update_rows(
    z: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    rows: np.ndarray,
    lr: float,
    loss: int,
    delta: float,
    w: np.ndarray,
    b: np.ndarray,
    emb: np.ndarray,
    gw: np.ndarray,
    gb: np.ndarray,
    gemb: np.ndarray,
    sw: np.ndarray,
    semb: np.ndarray,
    norm: np.ndarray,
) -> np.ndarray:
    """`update_row` on each of `rows` in order; whether each was learned (finite)."""
    learned = np.zeros(rows.shape[0], dtype=np.bool_)
    for r in range(rows.shape[0]):
        i = rows[r]
        learned[r] = update_row(
            z[i], ids[i], scores[i], labels[i], weights[i], lr, loss, delta,
            w, b, emb, gw, gb, gemb, sw, semb, norm,
        )  # fmt: skip
    return learned


def _view(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy().reshape(-1)


_NONE = np.zeros(1, dtype=np.float32)


class Normalized(torch.optim.Optimizer):
    """VW's update on a linear body (`nn.Linear`, or `HashedLinear` with hashed ids).

    It learns from the events themselves (`learn_rows`), not from gradients: `step` is not
    used. The LambdaLR schedule moves `lr` as for the other optimizers.
    """

    def __init__(self, layer: nn.Linear, embedding: nn.Embedding | None, lr: float) -> None:
        self.layer, self.embedding = layer, embedding
        params = [layer.weight, layer.bias] + ([] if embedding is None else [embedding.weight])
        super().__init__(params, {"lr": lr, "norm_sum": 0.0, "weight_sum": 0.0})

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        """Not used: the update needs the events (`learn_rows`)."""
        raise TypeError("the normalized optimizer learns through learn_rows, not from gradients")

    def views(self) -> tuple[np.ndarray, ...]:
        """Views of (G of weight, bias, embedding; scale of features, buckets), created empty."""
        weight, bias = self.layer.weight, self.layer.bias
        self.state[weight].setdefault("sum", torch.zeros_like(weight))
        self.state[weight].setdefault("scale", torch.zeros(weight.shape[1], dtype=weight.dtype))
        self.state[bias].setdefault("sum", torch.zeros_like(bias))
        views = [
            _view(self.state[weight]["sum"]),
            _view(self.state[bias]["sum"]),
            _NONE,
            _view(self.state[weight]["scale"]),
            _NONE,
        ]
        if self.embedding is not None:
            table = self.embedding.weight
            self.state[table].setdefault("sum", torch.zeros_like(table))
            self.state[table].setdefault("scale", torch.zeros(table.shape[0], dtype=table.dtype))
            views[2], views[4] = _view(self.state[table]["sum"]), _view(self.state[table]["scale"])
        return tuple(views)

    def norm(self) -> np.ndarray:
        """The normaliser [N, T] as a float64 array (`set_norm` writes it back)."""
        group = self.param_groups[0]
        return np.array([group["norm_sum"], group["weight_sum"]], dtype=np.float64)

    def set_norm(self, norm: np.ndarray) -> None:
        """Keep the normaliser as plain floats in the parameter group (checkpointed exactly)."""
        group = self.param_groups[0]
        group["norm_sum"], group["weight_sum"] = float(norm[0]), float(norm[1])

    def parameters_views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat views of the weight, the bias and the embedding table (or a dummy)."""
        emb = _NONE if self.embedding is None else _view(self.embedding.weight)
        return _view(self.layer.weight), _view(self.layer.bias), emb

    @torch.no_grad()
    def learn_rows(
        self,
        z: torch.Tensor,
        ids: torch.Tensor | None,
        scores: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None,
        rows: torch.Tensor,
        loss: str,
        delta: float,
    ) -> torch.Tensor:
        """Learn the `rows` (bool mask) in order, each at its score; the rows learned."""
        index = np.flatnonzero(rows.cpu().numpy())
        n = int(z.shape[0])
        ids_np = np.zeros((n, 0), dtype=np.int64)
        if ids is not None and self.embedding is not None:
            ids_np = np.ascontiguousarray(ids.cpu().numpy(), dtype=np.int64)
        weight_np = np.ones(n) if weights is None else weights.cpu().numpy().astype(np.float64)
        norm = self.norm()
        learned = update_rows(  # type: ignore[call-arg]  # numba's stub counts arguments
            np.ascontiguousarray(z.cpu().numpy(), dtype=np.float32),
            ids_np,
            np.ascontiguousarray(scores.cpu().numpy(), dtype=np.float64).reshape(n, -1),
            labels.cpu().numpy().astype(np.float64),
            weight_np,
            index.astype(np.int64),
            float(self.param_groups[0]["lr"]),
            LOSSES[loss],
            delta,
            *self.parameters_views(),
            *self.views(),
            norm,
        )
        self.set_norm(norm)
        result = np.zeros(n, dtype=bool)
        result[index[learned]] = True
        return torch.from_numpy(result).to(rows.device)


def linear_parts(network: nn.Module) -> tuple[nn.Linear, nn.Embedding | None]:
    """The linear layer (and hashed-id table) of a linear/logistic/softmax network's body."""
    body: Any = getattr(network, "body", network)
    layer = getattr(body, "dense", body)
    if not isinstance(layer, nn.Linear):
        raise ConfigError("the normalized optimizer needs a linear body")
    embedding = getattr(body, "embedding", None)
    return layer, embedding if isinstance(embedding, nn.Embedding) else None


def build(kind: str, network: nn.Module, lr: float, device: str, clip: float | None) -> Normalized:
    """The optimizer for a network; ConfigError for what the rule does not cover.

    Raises:
        ConfigError: Not a linear kind, not on the CPU, or with gradient clipping.

    """
    if kind not in LINEAR_KINDS:
        raise ConfigError(
            f"optimizer normalized updates linear models ({', '.join(LINEAR_KINDS)}), "
            f"not {kind!r}: use sgd, adam, rmsprop or adagrad"
        )
    if device != "cpu":
        raise ConfigError(
            "optimizer normalized runs on the CPU (linear models learn fastest there): "
            "use TRAINER_DEVICE=auto or cpu"
        )
    if clip is not None:
        raise ConfigError(
            "optimizer normalized bounds its own steps (importance-aware, normalised): "
            "leave clip_norm unset"
        )
    return Normalized(*linear_parts(network), lr=lr)
