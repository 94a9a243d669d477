"""Per-event updates of single-output linear models, compiled with numba.

The same arithmetic as the torch path (`learner.py`: input standardisation, forward, loss,
divergence guard, backward, optimizer step, LambdaLR) written out for one linear layer
(plus, with plain SGD or `normalized`, one weight per hashed id), so a decoded Kafka batch
is learned event by event without Python or dispatcher overhead per event. It reads and
writes the torch parameters, buffers and optimizer state in place through `.numpy()` views,
so checkpoints, exports and the torch path see exactly the same state. The running
statistics use the torch path's float64 arithmetic operation for operation, so both hold
identical values. The `normalized` optimizer's update is `normalized.update_row`, the
kernel the torch path runs too.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from services.trainer.normalized import BCE, HUBER, MSE, update_row

# codes shared with the Python side (the loss codes are `normalized`'s)
SGD, ADAM, RMSPROP, ADAGRAD, NORMALIZED = 0, 1, 2, 3, 4
CONSTANT, INV_SQRT, EXPONENTIAL = 0, 1, 2
# per-row outcome
INVALID, APPLIED, DIVERGING, REFUSED = 0, 1, 2, 3


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
def _valid(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    ids: np.ndarray,
    i: int,
    named: bool,
    buckets: int,
) -> bool:
    """Finite label and weight; features finite (NaN = missing when named); ids in range."""
    if not (math.isfinite(y[i]) and math.isfinite(weight[i])):
        return False
    for j in range(x.shape[1]):
        v = x[i, j]
        if math.isinf(v) or (math.isnan(v) and not named):
            return False
    for k in range(ids.shape[1]):  # noqa: SIM110  # a loop numba compiles
        if ids[i, k] < 0 or ids[i, k] >= buckets:
            return False
    return True


@numba.njit(cache=True, fastmath=False)
def _welford(stats: np.ndarray, j: int, value: float, share: np.ndarray) -> None:
    """Fold one value into (count, mean, M2) at column j: Chan's update for one row.

    `share` caches count / (count + 1) for the last count seen (share[0] the count, share[1]
    the ratio): columns with the same count (all of them, without missing values) divide
    once per event instead of once per column, to the same bits.
    """
    count, mean, m2 = stats[0, j], stats[1, j], stats[2, j]
    total = count + 1.0
    delta = value - mean
    if share[0] != count:
        share[0], share[1] = count, count * 1.0 / total
    stats[1, j] = mean + delta * 1.0 / total
    stats[2, j] = m2 + 0.0 + delta * delta * share[1]
    stats[0, j] = total


@numba.njit(cache=True, fastmath=False)
def _welford_label(guard: np.ndarray, value: float) -> None:
    """`_welford` on the guard's label statistics (count, mean, M2 at 2, 3, 4)."""
    count, mean, m2 = guard[2], guard[3], guard[4]
    total = count + 1.0
    delta = value - mean
    guard[3] = mean + delta * 1.0 / total
    guard[4] = m2 + 0.0 + delta * delta * (count * 1.0 / total)
    guard[2] = total


@numba.njit(cache=True, fastmath=False)
def _put(count: np.ndarray, mean: np.ndarray, m2: np.ndarray, stats: np.ndarray) -> None:
    for j in range(count.shape[0]):
        count[j], mean[j], m2[j] = stats[0, j], stats[1, j], stats[2, j]


@numba.njit(cache=True, fastmath=False)
def _floor(loss: int, guard: np.ndarray, delta: float) -> float:
    """The loss of an uninformed prediction (drift.Guard.floor)."""
    if loss == BCE:
        return math.log(2.0)
    var = guard[4] / guard[2] if guard[2] > 0 else 0.0
    if loss == HUBER:
        spread = math.sqrt(var)
        if spread <= delta:
            return 0.5 * var
        return delta * (spread - 0.5 * delta)
    return var


@numba.njit(cache=True, fastmath=False)
def _spread(stats: np.ndarray, spread: np.ndarray) -> None:
    """Each column's standard deviation from (count, mean, M2); 0 where the variance is 0.

    Computed once per change of the statistics: an event's score and its update both use
    the statistics as they stand, the update's being the next event's score's.
    """
    for j in range(spread.shape[0]):
        var = stats[2, j] / max(stats[0, j], 1.0)
        spread[j] = math.sqrt(var) if var > 0 else 0.0


@numba.njit(cache=True, fastmath=False)
def _standardise(
    x: np.ndarray, i: int, stats: np.ndarray, spread: np.ndarray, standardize: bool, z: np.ndarray
) -> None:
    for j in range(x.shape[1]):
        v = x[i, j]
        if math.isnan(v):
            z[j] = 0.0
        elif not standardize:
            z[j] = v
        else:
            sd = spread[j]
            z[j] = np.float32((np.float64(v) - stats[1, j]) / sd) if sd > 0 else 0.0


@numba.njit(cache=True, fastmath=False)
def _score(
    w: np.ndarray, b: np.ndarray, emb: np.ndarray, z: np.ndarray, ids: np.ndarray, i: int
) -> float:
    """The linear score of standardised row z with row i's hashed ids (0 = missing)."""
    score = b[0]
    for j in range(z.shape[0]):
        score += w[j] * z[j]
    for k in range(ids.shape[1]):
        if ids[i, k] != 0:
            score += emb[ids[i, k]]
    return score  # type: ignore[no-any-return]  # float32, as torch's forward: no float()


@numba.njit(cache=True, fastmath=False)
def learn_events(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    ids: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    emb: np.ndarray,
    x_count: np.ndarray,
    x_mean: np.ndarray,
    x_m2: np.ndarray,
    guard: np.ndarray,
    s1w: np.ndarray,
    s1b: np.ndarray,
    s2w: np.ndarray,
    s2b: np.ndarray,
    step: np.ndarray,
    g_emb: np.ndarray,
    s_emb: np.ndarray,
    norm: np.ndarray,
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
    named: bool,
    standardize: bool,
    ratio: float,
    warmup: float,
    level_alpha: float,
    level_growth: float,
    predictions: np.ndarray,
    losses: np.ndarray,
    status: np.ndarray,
) -> int:
    """Predict then learn each row in order. Returns the number of optimizer steps taken.

    Each row is scored (`predictions`, `losses`, the guard) with the input statistics before
    it, then folded into them, and its gradient taken at the score with the new statistics.

    `x_count`, `x_mean`, `x_m2` (F,) are the input layer's running statistics; `guard`
    the divergence guard's values (`drift.Guard.values`), `ratio` 0 when it is off. `ids`
    (N, K) and `emb` (buckets,) are the hashed ids and their weights (K = 0 without ids;
    plain SGD only).
    s1*/s2* are the optimizer's state (Adam exp_avg/exp_avg_sq, SGD and RMSprop momentum
    buffers and square averages, Adagrad sums; `normalized`: the sums G of weight and bias,
    the features' scales); `step` the optimizer's step counter. `g_emb`, `s_emb` and `norm`
    are `normalized`'s sums and scales of the hashed buckets and its normaliser [N, T].
    `status` gets each row's outcome: INVALID, APPLIED, DIVERGING or REFUSED.
    """
    n, f = x.shape
    slots = ids.shape[1]
    buckets = emb.shape[0]
    z = np.zeros(f, dtype=np.float32)
    stats = np.zeros((3, f), dtype=np.float64)  # working copy, written back per event
    saved = np.zeros((3, f), dtype=np.float64)
    spread = np.zeros(f, dtype=np.float64)  # of `stats`, kept current with them
    spread_saved = np.zeros(f, dtype=np.float64)
    share = np.full(2, -1.0)
    if standardize:
        for j in range(f):
            stats[0, j], stats[1, j], stats[2, j] = x_count[j], x_mean[j], x_m2[j]
        _spread(stats, spread)
    regression = loss != BCE
    steps = 0
    at = np.zeros(1)  # the score `normalized` takes its update at
    for i in range(n):
        status[i] = INVALID
        if not _valid(x, y, weight, ids, i, named, buckets):
            continue
        if regression:
            _welford_label(guard, np.float64(y[i]))
        # scored (metrics, guard, drift) with the statistics before the event, as River's
        # pipelines predict ...
        _standardise(x, i, stats, spread, standardize, z)
        scored = _score(w, b, emb, z, ids, i)
        at[0] = scored
        raw, grad = _loss_and_grad(loss, scored, y[i], delta)
        value = raw * weight[i]
        trained = value
        # ... and learned with the statistics including it, as River's learn_one
        if standardize:
            saved[:, :] = stats
            spread_saved[:] = spread
            for j in range(f):
                if not math.isnan(x[i, j]):
                    _welford(stats, j, np.float64(x[i, j]), share)
            _spread(stats, spread)
            _standardise(x, i, stats, spread, standardize, z)
            at[0] = _score(w, b, emb, z, ids, i)
            trained, grad = _loss_and_grad(loss, at[0], y[i], delta)
            trained *= weight[i]
        grad *= weight[i]
        norm2 = 1.0
        for j in range(f):
            norm2 += z[j] * z[j]
        status[i] = REFUSED
        if not (math.isfinite(value) and math.isfinite(trained) and math.isfinite(grad)):
            if standardize:
                stats[:, :], spread[:] = saved, spread_saved
            continue
        # (normalized: its kernel refuses what it cannot learn, as on the torch path)
        if optimizer != NORMALIZED and not math.isfinite(abs(grad) * math.sqrt(norm2)):
            if standardize:
                stats[:, :], spread[:] = saved, spread_saved
            continue
        guarded = ratio > 0.0 and guard[1] >= warmup
        if guarded and raw > ratio * max(guard[0], _floor(loss, guard, delta)):
            if standardize:
                stats[:, :], spread[:] = saved, spread_saved
            status[i] = DIVERGING
            continue
        lr = base_lr * _factor(schedule, float(epoch + steps), scale, gamma)
        if optimizer == NORMALIZED and not update_row(
            z, ids[i], at, np.float64(y[i]), np.float64(weight[i]), lr, loss, delta,
            w, b, emb, s1w, s1b, g_emb, s2w, s_emb, norm,
        ):  # fmt: skip
            if standardize:
                stats[:, :], spread[:] = saved, spread_saved
            continue
        scale_clip = 1.0
        if clip > 0.0 and abs(grad) * math.sqrt(norm2) > clip:
            scale_clip = clip / (abs(grad) * math.sqrt(norm2) + 1e-6)
        predictions[i] = 1.0 / (1.0 + math.exp(-scored)) if sigmoid else scored
        losses[i] = value
        status[i] = APPLIED
        entering = min(raw, level_growth * guard[0]) if guard[1] > 0 else raw
        guard[1] += 1.0
        rate = max(1.0 / guard[1], level_alpha)
        guard[0] = guard[0] + rate * (entering - guard[0])
        step[0] += 1.0
        if optimizer == NORMALIZED:
            steps += 1
            continue
        for j in range(f + 1):
            g = grad * scale_clip * (z[j] if j < f else 1.0)
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
        # hashed ids (plain SGD, as eligibility requires): an id in several slots gets the
        # sum of their gradients in one update, as torch's dense embedding gradient does
        for k in range(slots):
            row = ids[i, k]
            if row == 0:
                continue
            first, times = True, 0
            for other in range(slots):
                if ids[i, other] == row:
                    times += 1
                    if other < k:
                        first = False
            if first:
                g = grad * times
                emb[row] -= lr * g
        steps += 1
    if standardize:
        _put(x_count, x_mean, x_m2, stats)
    return steps
