"""bst.task: the training losses around the functional model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bst import config
from bst.data.prepared import Prepared
from bst.model import Tables, build_model
from bst.pipeline import make_dataset
from bst.task import BSTTrainer


@pytest.fixture()
def tables(prepared_dir):
    return Tables.from_prepared(Prepared.open(prepared_dir))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["softmax", "sampled"])
def test_training_steps_lower_the_loss(tiny_cfg, tables, loss):
    cfg = config.replace(tiny_cfg, {"model.loss": loss, "model.num_negatives": 64})
    tf.keras.utils.set_random_seed(0)
    trainer = BSTTrainer(build_model(cfg, tables), cfg, item_frequency=np.arange(tables.num_items))
    trainer.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    data = make_dataset(cfg, "train", batch_size=16)
    before = trainer.evaluate(make_dataset(cfg, "validation"), verbose=0)
    history = trainer.fit(data, epochs=8, verbose=0)
    after = trainer.evaluate(make_dataset(cfg, "validation"), verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    assert after < before


@pytest.mark.slow
def test_rating_head(tiny_cfg, tables):
    cfg = config.replace(tiny_cfg, {"model.rating_head": True})
    trainer = BSTTrainer(build_model(cfg, tables), cfg)
    trainer.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    history = trainer.fit(make_dataset(cfg, "train", batch_size=16), epochs=3, verbose=0)
    mae = history.history["rating_mae"]
    assert np.isfinite(mae).all() and mae[-1] < mae[0]


def test_unknown_loss_is_rejected(tiny_cfg, tables):
    cfg = config.replace(tiny_cfg, {"model.loss": "hinge"})
    with pytest.raises(ValueError, match="model.loss must be 'softmax' or 'sampled'"):
        BSTTrainer(build_model(cfg, tables), cfg)


def test_layer_regularizers_are_part_of_the_training_loss(tiny_cfg, tables):
    """``train_step`` adds ``model.losses``: a layer regularizer is not silently dropped."""
    tf.keras.utils.set_random_seed(0)
    cfg = config.replace(tiny_cfg, {"model.dropout": 0.0, "model.feature_dropout": 0.0})
    batch = next(iter(make_dataset(cfg, "train", batch_size=16, shuffle=False)))

    def first_step_loss(penalty: float) -> float:
        tf.keras.utils.set_random_seed(0)
        model = build_model(cfg, tables)
        if penalty:
            model.add_loss(
                lambda: penalty * tf.reduce_sum(tf.square(model.encoder.items.all_items()))
            )
        trainer = BSTTrainer(model, cfg)
        trainer.compile(optimizer=tf.keras.optimizers.SGD(0.0))
        return float(trainer.train_step(batch)["loss"])

    plain, regularized = first_step_loss(0.0), first_step_loss(10.0)
    assert regularized > plain + 1e-3
