"""bst.optim: the optimizer, its schedule and the planner that sizes it to the run."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bst import config, optim


def lr(schedule, step):
    return float(schedule(step))


def test_optimizer_follows_the_config():
    plain = optim.make_optimizer(config.replace(config.tiny(), {"train.weight_decay": 0}), 100)
    assert type(plain).__name__ == "Adam"
    decayed = optim.make_optimizer(config.replace(config.tiny(), {"train.weight_decay": 0.01}), 100)
    assert type(decayed).__name__ == "AdamW"
    assert decayed.weight_decay == pytest.approx(0.01)
    default = optim.make_optimizer(config.ml1m(), 100)
    assert type(default).__name__ == "AdamW" and default.weight_decay == pytest.approx(0.1)
    assert not default.use_ema
    averaged = optim.make_optimizer(config.replace(config.ml1m(), {"train.ema": 0.99}), 100)
    assert isinstance(averaged, tf.keras.optimizers.AdamW) and averaged.use_ema
    assert averaged.get_config()["ema_momentum"] == pytest.approx(0.99)
    plain_averaged = optim.make_optimizer(
        config.replace(config.tiny(), {"train.weight_decay": 0, "train.ema": 0.5}), 100
    )
    assert type(plain_averaged).__name__ == "AdamAverage" and plain_averaged.use_ema


def test_the_moving_average_warms_up_then_keeps_its_momentum():
    """After step t the average moves by min(ema, (1 + t) / (10 + t)); swap_average writes
    it into the weights and restore puts the trained weights back."""
    cfg = config.replace(config.tiny(), {"train.weight_decay": 0, "train.ema": 0.6})
    opt = optim.make_optimizer(cfg, 1000)
    var = tf.Variable([1.0, -2.0])
    assert optim.swap_average(opt, [var]) is None  # no step yet: nothing to swap
    expected = var.numpy().copy()
    for t in range(8):
        opt.apply_gradients([(tf.constant([0.5, -1.0]) * (t + 1), var)])
        momentum = min(0.6, (1 + t) / (10 + t))
        expected = momentum * expected + (1 - momentum) * var.numpy()
    trained = var.numpy().copy()
    assert not np.allclose(trained, expected)
    saved = optim.swap_average(opt, [var])
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5)
    optim.restore([var], saved)
    np.testing.assert_array_equal(var.numpy(), trained)


def test_warm_up_is_a_fraction_of_the_planned_steps_then_cosine_to_the_floor():
    s = optim.WarmupDecay(1e-3, 1000, warmup_fraction=0.05, max_warmup=500, final_fraction=0.02)
    assert lr(s, 0) == pytest.approx(1e-3 / 50)  # 50 warm-up steps
    assert lr(s, 49) == pytest.approx(1e-3)
    halfway = 49 + (1000 - 50) / 2
    assert lr(s, halfway) == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5), rel=1e-3)
    assert lr(s, 999) == pytest.approx(1e-3 * 0.02, rel=1e-3)
    assert lr(s, 5000) == pytest.approx(1e-3 * 0.02, rel=1e-3)  # past the plan: the floor
    capped = optim.WarmupDecay(1e-3, 100_000, warmup_fraction=0.05, max_warmup=500)
    assert lr(capped, 499) == pytest.approx(1e-3) and lr(capped, 249) == pytest.approx(5e-4)
    small = optim.WarmupDecay(1e-3, 7 * 15)  # 7 steps an epoch, 15 epochs: 5 warm-up steps
    assert lr(small, 4) == pytest.approx(1e-3)


def test_linear_and_constant_schedules_and_bad_names():
    linear = optim.WarmupDecay(1.0, 110, warmup_fraction=10 / 110, kind="linear", final_fraction=0)
    assert lr(linear, 9) == pytest.approx(1.0) and lr(linear, 59) == pytest.approx(0.5)
    constant = optim.WarmupDecay(1.0, 110, warmup_fraction=10 / 110, kind="constant")
    assert lr(constant, 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="train.schedule must be one of"):
        optim.WarmupDecay(1.0, 10, kind="step")


def test_the_schedule_reads_the_planned_steps_as_they_change():
    planned = tf.Variable(1000, dtype=tf.int64)
    s = optim.WarmupDecay(1.0, planned, warmup_fraction=0.0, max_warmup=1, final_fraction=0.0)
    before = lr(s, 400)
    planned.assign(500)
    assert lr(s, 400) < before and lr(s, 499) == pytest.approx(0.0, abs=1e-4)


class Ticking:
    """A clock whose time moves only when told (seconds)."""

    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _planner(planned, epochs=100, minutes=1.0, saved=0.0):
    from bst.clock import RunClock

    time_now = Ticking()
    clock = RunClock(tf.Variable(saved, dtype=tf.float64), time_now)
    planner = optim.SchedulePlanner(planned, steps=10, epochs=epochs, minutes=minutes, clock=clock)
    clock.on_train_begin()
    planner.on_train_begin()
    return planner, time_now


def test_planner_fits_the_epochs_into_the_budget():
    planned = tf.Variable(0, dtype=tf.int64)
    planner, time_now = _planner(planned)
    assert int(planned.numpy()) == 1000  # epochs x steps until something is measured
    planner.on_epoch_begin(0)
    time_now.t += 5.9  # the first epoch took 5.9 s
    planner.on_epoch_end(0)
    assert int(planned.numpy()) == 100  # 1 done + 9 more of 5.9 s in the 54.1 s left
    unbounded = tf.Variable(0, dtype=tf.int64)
    _planner(unbounded, epochs=7, minutes=0.0)
    assert int(unbounded.numpy()) == 70
    assert np.isfinite(lr(optim.make_schedule(config.tiny(), planned), 50))


def test_planner_counts_the_budget_spent_before_a_resume():
    """A resumed run has the rest of the budget: 30 s were trained before the backup, so
    an epoch of 5.9 s leaves room for 4 more (not 9), and the plan says so."""
    planned = tf.Variable(200, dtype=tf.int64)  # as restored from the backup
    planner, time_now = _planner(planned, saved=30.0)
    assert int(planned.numpy()) == 200  # the restored plan is kept until measured
    planner.on_epoch_begin(3)
    time_now.t += 5.9
    planner.on_epoch_end(3)
    # 4 done + 4 more of 5.9 s in the 60 - 35.9 s left
    assert int(planned.numpy()) == 80
    assert planner.clock.elapsed() == pytest.approx(35.9)


def test_planner_does_not_plan_on_the_first_epochs_tracing_time():
    """The first epoch pays for tracing and the cache: the plan uses its steady steps and
    its validation, not its wall time (which would shorten the schedule, then lengthen it)."""
    planned = tf.Variable(0, dtype=tf.int64)
    planner, time_now = _planner(planned)
    planner.on_epoch_begin(0)
    t0 = time_now.t  # the epoch takes 8 s: 3 s tracing, 10 steps of 0.45 s, validation
    for i in range(10):
        time_now.t = t0 + 3.0 + 0.45 * i
        planner.on_train_batch_end(i)
    time_now.t = t0 + 8.0
    planner.on_epoch_end(0)
    assert planner.first_estimate == pytest.approx(0.45 * 10 + 0.95, abs=0.05)
    assert int(planned.numpy()) == 100  # 1 done + 9 more of about 5.45 s in the 52 s left
    planner.on_epoch_begin(1)
    time_now.t += 10.0  # the second epoch took 10 s: from now on, measured epochs
    planner.on_epoch_end(1)
    assert planner.epoch_times[1] == pytest.approx(10.0, abs=0.05)
    assert int(planned.numpy()) == 20 + 10 * int((60 - 18) // 10)


def test_auto_batch_size_keeps_128_on_ml1m_sized_data_and_shrinks_on_small_data():
    from bst.optim import auto_batch_size

    assert auto_batch_size(7_700) == 128  # ML-1M's windows: 60 steps an epoch
    assert auto_batch_size(24 * 128) == 128
    assert auto_batch_size(24 * 128 - 1) == 64
    assert auto_batch_size(823) == 32  # the 10 % user subsample
    assert auto_batch_size(10) == 16  # never below 16
    assert auto_batch_size(0) == 16


def test_resolve_batch_size_makes_the_default_concrete(tiny_cfg, prepared_dir):
    from bst.data.prepared import Prepared
    from bst.train import resolve_batch_size

    prepared = Prepared.open(prepared_dir)
    auto = config.replace(tiny_cfg, {"train.batch_size": -1})
    assert resolve_batch_size(auto, prepared).train.batch_size == 16  # 30 users
    assert resolve_batch_size(tiny_cfg, prepared) is tiny_cfg  # a given value is kept
    assert config.ml1m().train.batch_size == -1


def test_the_cpu_budget_by_preset_and_a_given_budget_kept():
    """train.max_minutes=-1 on a CPU: 30 minutes for ml1m, 60 for the wider ml1m-long;
    a given budget is used as given; the saved config says what ran."""
    from bst.devices import resolve

    strategy = tf.distribute.get_strategy()
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("the CPU budget applies on a CPU")
    default, notes = resolve(config.ml1m(), strategy)
    assert default.train.max_minutes == 30.0 and "30 minutes" in notes[0]
    long_cfg = config.preset("ml1m-long")
    assert long_cfg.model.dim == 128 and long_cfg.preset == "ml1m-long"
    resolved, notes = resolve(long_cfg, strategy)
    assert resolved.train.max_minutes == 60.0 and "60 minutes" in notes[0]
    given, _ = resolve(config.replace(long_cfg, {"train.max_minutes": 5}), strategy)
    assert given.train.max_minutes == 5.0
    # a saved ml1m-long config loads back as that preset
    assert config.from_dict(resolved.to_dict()) == resolved


def test_small_re_plans_are_not_logged_at_info(caplog):
    """Short epochs re-plan at nearly every epoch: a change under 5 % is a DEBUG line,
    a larger one (or the first plan) an INFO line."""
    import logging

    planned = tf.Variable(0, dtype=tf.int64)
    planner, _ = _planner(planned, epochs=1000)  # planned: 10,000 steps until measured
    with caplog.at_level(logging.DEBUG, logger="bst.train"):
        planner._set(1000, "first")
        planner._set(1030, "3 % more")
        planner._set(1200, "17 % more")
    levels = [(r.levelno, r.getMessage().split("(")[1]) for r in caplog.records]
    assert levels == [
        (logging.INFO, "first)"),
        (logging.DEBUG, "3 % more)"),
        (logging.INFO, "17 % more)"),
    ]
