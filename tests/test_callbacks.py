"""bst.callbacks: early stopping that follows the planned run."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bst import config, optim
from bst.callbacks import AverageWeights, PlannedEarlyStopping


def _stopping(
    patience: int, planned_steps: int, steps: int, backup=None, model=None
) -> PlannedEarlyStopping:
    model = model or tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    stopping = PlannedEarlyStopping(
        patience,
        tf.Variable(planned_steps, dtype=tf.int64),
        steps,
        backup=backup,
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


def test_a_resumed_run_keeps_its_best_epoch_its_weights_and_the_count_since(tmp_path):
    """Killed after epoch 4 (best: epoch 2) and resumed: the best epoch, its weights and
    the 2 epochs without a better one come back from the backup, so patience 3 stops
    after one more such epoch, and the weights restored at the end are epoch 2's."""
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    first = _stopping(3, 1200, 6, backup=tmp_path, model=model)
    weights = {}
    for epoch, value in enumerate([0.5, 0.7, 0.6, 0.65]):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        weights[epoch] = model.get_weights()
        first.on_epoch_end(epoch, {"val_ndcg@10": value})
        first.save_state(epoch)  # as after each epoch's backup
    assert not model.stop_training
    model.set_weights([np.full_like(w, 99) for w in model.get_weights()])  # a new process

    again = _stopping(3, 1200, 6, backup=tmp_path, model=model)
    assert (again.best, again.best_epoch, again.wait) == (0.7, 1, 2)
    again.on_epoch_end(4, {"val_ndcg@10": 0.69})
    assert model.stop_training  # 3 epochs without a better one, counted across the resume
    again.on_train_end()
    for got, want in zip(model.get_weights(), weights[1], strict=True):
        np.testing.assert_array_equal(got, want)
    fresh = _stopping(3, 1200, 6, backup=tmp_path / "none", model=model)  # no state: afresh
    assert fresh.best_weights is None and fresh.wait == 0


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


def test_validation_ranks_a_fixed_sample_of_users_when_there_are_many(tiny_cfg, prepared_dir):
    """train.val_users below the validation users: each epoch ranks the same random
    sample (by train.seed), its inputs aligned to it; 0 or more than there are: all."""
    from bst.callbacks import RankingCallback
    from bst.data.prepared import Prepared
    from bst.metrics import EvalData, load_eval_data
    from bst.model import Tables, build_model
    from bst.scoring import rank_metrics
    from tests.conftest import brute_force_metrics

    every = load_eval_data(prepared_dir, "validation")
    cfg = config.replace(tiny_cfg, {"train.val_users": 10})
    callback = RankingCallback(cfg, None)
    data, inputs = callback.data, callback.inputs
    assert data.num_users == 10 < every.num_users
    assert set(data.user_ids) <= set(every.user_ids) and len(set(data.user_ids)) == 10
    assert list(inputs.users) == list(data.user_ids)
    again = RankingCallback(cfg, None).data
    assert list(again.user_ids) == list(data.user_ids)  # fixed: the same users each time
    other_seed = RankingCallback(config.replace(cfg, {"train.seed": 7}), None).data
    assert list(other_seed.user_ids) != list(data.user_ids)
    backwards = np.arange(every.num_users)[::-1]  # the users listed in another order
    shuffled = EvalData.from_histories(
        [every.histories[r] for r in backwards],
        every.targets[backwards],
        every.num_items,
        every.user_ids[backwards],
    )
    assert set(shuffled.sample(10, cfg.train.seed).user_ids) == set(data.user_ids)
    for users in (0, every.num_users, every.num_users + 5):
        whole = RankingCallback(config.replace(cfg, {"train.val_users": users}), None)
        assert whole.data.num_users == every.num_users
    # the figures are the sample's own: brute force over those 10 users
    model = build_model(cfg, Tables.from_prepared(Prepared.open(prepared_dir)))
    metrics = rank_metrics(model, cfg, "validation", data, inputs)
    import tensorflow as tf

    scores = model({k: tf.constant(v) for k, v in inputs.inputs.items()}, training=False)
    brute = brute_force_metrics(scores["scores"].numpy(), data.histories, data.targets)
    assert metrics["users"] == 10
    assert metrics["ndcg@10"] == pytest.approx(brute["ndcg@10"], abs=1e-5)
