"""bst.callbacks: early stopping that follows the planned run."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bst import config, optim
from bst.callbacks import AverageWeights, PlannedEarlyStopping


def _stopping(patience: int, planned_steps: int, steps: int) -> PlannedEarlyStopping:
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    stopping = PlannedEarlyStopping(
        patience,
        tf.Variable(planned_steps, dtype=tf.int64),
        steps,
        monitor="val_ndcg@10",
        mode="max",
        restore_best_weights=True,
    )
    stopping.set_model(model)
    stopping.on_train_begin()
    return stopping


def _epochs_until_stop(stopping: PlannedEarlyStopping, limit: int = 500) -> int:
    for epoch in range(limit):
        stopping.on_epoch_end(epoch, {"val_ndcg@10": 0.5 if epoch == 0 else 0.1})
        if stopping.model.stop_training:
            return epoch
    return limit


def test_auto_patience_is_a_fifth_of_the_planned_epochs_at_least_ten():
    small_data = _stopping(-1, planned_steps=1200, steps=6)  # 200 planned epochs of 6 steps
    assert _epochs_until_stop(small_data) == 40
    ml1m = _stopping(-1, planned_steps=80 * 68, steps=68)  # 80 planned epochs
    assert _epochs_until_stop(ml1m) == 16
    short = _stopping(-1, planned_steps=30 * 10, steps=10)
    assert _epochs_until_stop(short) == 10


def test_auto_patience_follows_a_new_plan():
    stopping = _stopping(-1, planned_steps=1200, steps=6)
    stopping.on_epoch_end(0, {"val_ndcg@10": 0.5})
    assert stopping.patience == 40
    stopping.planned.assign(600)  # the budget now fits 100 epochs
    stopping.on_epoch_end(1, {"val_ndcg@10": 0.1})
    assert stopping.patience == 20


def test_a_given_patience_is_used_as_given():
    assert _epochs_until_stop(_stopping(3, planned_steps=1200, steps=6)) == 3
    assert _epochs_until_stop(_stopping(0, planned_steps=1200, steps=6)) == 1


class _Probe(tf.keras.callbacks.Callback):
    """Records the weights it sees at each epoch's end, and the optimizer's averages."""

    def __init__(self):
        super().__init__()
        self.seen, self.averages = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.get_weights())
        opt = self.model.optimizer
        self.averages.append([v.numpy() for v in opt._model_variables_moving_average])


def test_between_the_two_callbacks_the_model_holds_the_moving_average():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    cfg = config.replace(config.tiny(), {"train.ema": 0.9})
    model.compile(optimizer=optim.make_optimizer(cfg, 100), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    y = x @ np.array([[2.0], [-1.0]], "float32")
    average, during, after = AverageWeights(), _Probe(), _Probe()
    model.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[average, during, average.restore, after]
    )
    for epoch in range(3):
        for seen, avg in zip(during.seen[epoch], during.averages[epoch], strict=True):
            np.testing.assert_allclose(seen, avg, rtol=1e-6)  # validation sees the average
        assert not np.allclose(after.seen[epoch][0], during.seen[epoch][0])  # then trained
    np.testing.assert_allclose(model.get_weights()[0], after.averages[-1][0], rtol=1e-6)
