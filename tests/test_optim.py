"""bst.optim: the optimizer and its learning-rate schedule."""

from __future__ import annotations

import pytest

from bst import config, optim


def test_optimizer_follows_the_config():
    plain = optim.make_optimizer(config.tiny())
    assert type(plain).__name__ == "Adam"
    decayed = optim.make_optimizer(config.replace(config.tiny(), {"train.weight_decay": 0.01}))
    assert type(decayed).__name__ == "AdamW"
    assert decayed.weight_decay == pytest.approx(0.01)
    schedule = optim.WarmupSchedule(5e-3, 5)  # step 0 is the first step
    assert [round(float(schedule(s)), 6) for s in (0, 1, 4, 100)] == [1e-3, 2e-3, 5e-3, 5e-3]
