"""The demo's concept flip is detected within seconds of it (issue #14's drift promise).

The demo streams `Synthetic("drift")` at 2,000 events/s to the trainer's default config;
the trainer learns Kafka batches of a few hundred events. Fed the same way, the default
detector (per-event ADWIN) must report the flip within 2 s of events after it. (It also
reports the falling loss while a model learns, early on and after the flip: ADWIN sees any
change of the loss's mean.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.trainer.learner import Batch, Learner
from services.trainer.settings import TrainerSettings
from streamlearn.client.datasets import Synthetic

RATE = 2_000  # the demo's default events per second
FLIP = 20_000  # events of the first concept (the demo: half its 180 s at RATE)
FETCH = 500  # events per learned batch, as a Kafka fetch hands them over


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_demo_flip_is_detected_within_two_seconds(seed: int) -> None:
    config = TrainerSettings().config  # what `streamlearn demo` trains
    assert config.drift == "adwin"
    dataset = Synthetic("drift", features=config.model.features, drift_every=FLIP, seed=seed)
    learner, detected = Learner(config), []
    for x, y in dataset.chunks(FLIP + 4 * RATE, chunk=FETCH):
        labels = torch.from_numpy(np.asarray(y, dtype=np.float32))
        before = learner.drifts
        learner.learn(Batch(torch.from_numpy(np.asarray(x, dtype=np.float32)), labels))
        if learner.drifts > before:
            detected.append(learner.last_drift_event)
    after_flip = [event for event in detected if event > FLIP]
    assert after_flip, detected
    assert after_flip[0] <= FLIP + 2 * RATE, detected  # within two seconds of the flip
