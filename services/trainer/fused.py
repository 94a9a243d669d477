"""Per-event updates of single-output linear models, compiled with numba.

The same arithmetic as the torch path (`learner.py`: forward, loss, backward, optimizer step,
LambdaLR) written out for one linear layer, so a decoded Kafka batch is learned event by
event without Python or dispatcher overhead per event. It reads and writes the torch
parameters and the torch optimizer state in place through `.numpy()` views, so checkpoints,
exports and the torch path see exactly the same state.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# codes shared with the Python side
SGD, ADAM, RMSPROP, ADAGRAD = 0, 1, 2, 3
MSE, HUBER, BCE = 0, 1, 2
CONSTANT, INV_SQRT, EXPONENTIAL = 0, 1, 2


@numba.njit(cache=True, fastmath=False)
def _factor(schedule: int, step: float, scale: float, gamma: float) -> float:
    if schedule == INV_SQRT:
        return 1.0 / math.sqrt(1.0 + step / scale)
    if schedule == EXPONENTIAL:
        return float(gamma ** (step / scale))
    return 1.0


@numba.njit(cache=True, fastmath=False)
def _loss_and_grad(loss: int, score: float, label: float, delta: float) -> tuple[float, float]:
    d = score - label
    if loss == MSE:
        return d * d, 2.0 * d
    if loss == HUBER:
        if abs(d) <= delta:
            return 0.5 * d * d, d
        return delta * (abs(d) - 0.5 * delta), delta * (1.0 if d > 0 else -1.0)
    # binary cross-entropy on the logit, the numerically stable form
    value = max(score, 0.0) - score * label + math.log1p(math.exp(-abs(score)))
    return value, 1.0 / (1.0 + math.exp(-score)) - label


@numba.njit(cache=True, fastmath=False)
def learn_events(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    s1w: np.ndarray,
    s1b: np.ndarray,
    s2w: np.ndarray,
    s2b: np.ndarray,
    step: np.ndarray,
    optimizer: int,
    base_lr: float,
    momentum: float,
    decay: float,
    beta1: float,
    beta2: float,
    eps: float,
    alpha: float,
    schedule: int,
    scale: float,
    gamma: float,
    epoch: int,
    loss: int,
    delta: float,
    clip: float,
    sigmoid: bool,
    predictions: np.ndarray,
    losses: np.ndarray,
    ok: np.ndarray,
) -> int:
    """Predict then learn each row in order. Returns the number of optimizer steps taken.

    s1*/s2* are the optimizer's state (Adam exp_avg/exp_avg_sq, SGD and RMSprop momentum
    buffers and square averages, Adagrad sums); `step` the optimizer's step counter.
    """
    n, f = x.shape
    steps = 0
    for i in range(n):
        finite = math.isfinite(y[i]) and math.isfinite(weight[i])
        score = b[0]
        for j in range(f):
            finite = finite and math.isfinite(x[i, j])
            score += w[j] * x[i, j]
        ok[i] = False
        if not finite:
            continue
        value, grad = _loss_and_grad(loss, score, y[i], delta)
        value *= weight[i]
        grad *= weight[i]
        if not (math.isfinite(value) and math.isfinite(grad)):
            continue
        norm2 = 1.0
        for j in range(f):
            norm2 += x[i, j] * x[i, j]
        scale_clip = 1.0
        if clip > 0.0 and abs(grad) * math.sqrt(norm2) > clip:
            scale_clip = clip / (abs(grad) * math.sqrt(norm2) + 1e-6)
        if not math.isfinite(abs(grad) * math.sqrt(norm2)):
            continue
        predictions[i] = 1.0 / (1.0 + math.exp(-score)) if sigmoid else score
        losses[i] = value
        ok[i] = True
        lr = base_lr * _factor(schedule, float(epoch + steps), scale, gamma)
        step[0] += 1.0
        for j in range(f + 1):
            g = grad * scale_clip * (x[i, j] if j < f else 1.0)
            if j < f:
                p = w[j]
                m1, m2 = s1w[j], s2w[j]
            else:
                p = b[0]
                m1, m2 = s1b[0], s2b[0]
            g += decay * p
            if optimizer == SGD:
                if momentum > 0.0:
                    m1 = g if step[0] == 1.0 else momentum * m1 + g
                    g = m1
                p -= lr * g
            elif optimizer == ADAM:
                m1 = beta1 * m1 + (1.0 - beta1) * g
                m2 = beta2 * m2 + (1.0 - beta2) * g * g
                c1 = 1.0 - beta1 ** step[0]
                c2 = 1.0 - beta2 ** step[0]
                p -= (lr / c1) * m1 / (math.sqrt(m2) / math.sqrt(c2) + eps)
            elif optimizer == RMSPROP:
                m2 = alpha * m2 + (1.0 - alpha) * g * g
                avg = math.sqrt(m2) + eps
                if momentum > 0.0:
                    m1 = momentum * m1 + g / avg
                    p -= lr * m1
                else:
                    p -= lr * g / avg
            else:  # ADAGRAD
                m1 = m1 + g * g
                p -= lr * g / (math.sqrt(m1) + eps)
            if j < f:
                w[j], s1w[j], s2w[j] = p, m1, m2
            else:
                b[0], s1b[0], s2b[0] = p, m1, m2
        steps += 1
    return steps
