"""The functional BST model and its training wrapper on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bst import config
from bst import features as F
from bst.data.prepared import Prepared
from bst.model import MODEL_INPUTS, Tables, build_model, model_inputs
from bst.pipeline import make_dataset


@pytest.fixture()
def tables(prepared_dir):
    return Tables.from_prepared(Prepared.open(prepared_dir))


def batch(cfg, split="validation", size=8):
    features, labels = next(iter(make_dataset(cfg, split, batch_size=size, shuffle=False)))
    return model_inputs(features), labels


def test_outputs_and_names(tiny_cfg, tables):
    model = build_model(tiny_cfg, tables)
    feats, _ = batch(tiny_cfg)
    out = model(feats, training=False)
    L, D = tiny_cfg.model.max_len, tiny_cfg.model.dim
    assert out["query"].shape == (8, L, D)
    assert out["scores"].shape == (8, tables.num_items) and out["scores"].dtype == tf.float32
    assert set(model.input_names) == set(MODEL_INPUTS)
    names = [layer.name for layer in model.layers]
    assert "transformer_block_0" in names and "item_embedding" in names
    # scores are the last query's dot products with every item token
    catalog = model.encoder.items.all_items()
    np.testing.assert_allclose(
        out["scores"].numpy(), out["query"][:, -1].numpy() @ catalog.numpy().T, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("blocks", [1, 2])
def test_last_only_matches_the_full_model(tiny_cfg, tables, blocks):
    """The serving path (top block, norm and head at the last position only, catalog
    precomputed) gives the full model's last query."""
    cfg = config.replace(tiny_cfg, {"model.num_blocks": blocks})
    model = build_model(cfg, tables)
    feats, _ = batch(cfg)
    ids = feats[F.MOVIE_ID].numpy().copy()
    ids[0] = 0  # a history that is padding throughout
    rng = np.random.default_rng(0)
    feats = dict(feats)
    feats[F.MOVIE_ID] = tf.constant(ids)
    for name in (F.TIME_GAP, F.RATING):  # real side features, not only UNKNOWN
        feats[name] = tf.constant(np.where(ids > 0, rng.integers(1, 5, ids.shape), 0), tf.int32)
    expected = model(feats, training=False)["query"][:, -1].numpy()
    catalog = model.encoder.items.all_items()
    for table in (None, catalog):
        got = model.encoder(feats, training=False, last_only=True, catalog=table)
        assert got.shape == (len(ids), 1, cfg.model.dim)
        np.testing.assert_allclose(got[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected[1], expected[2])


def test_causal_and_padding(tiny_cfg, tables):
    model = build_model(tiny_cfg, tables)
    feats, _ = batch(tiny_cfg)
    base = model(feats, training=False)["query"].numpy()
    # changing the newest item must not change any earlier position's output
    changed = dict(feats)
    ids = feats[F.MOVIE_ID].numpy().copy()
    ids[:, -1] = np.where(ids[:, -1] == 2, 3, 2)
    changed[F.MOVIE_ID] = tf.constant(ids)
    after = model(changed, training=False)["query"].numpy()
    np.testing.assert_allclose(after[:, :-1], base[:, :-1], atol=1e-5)
    assert not np.allclose(after[:, -1], base[:, -1])
    # features at padded positions are never attended
    pads = feats[F.MOVIE_ID].numpy() == 0
    assert pads.any()
    noisy = dict(feats)
    noisy[F.TIME_GAP] = tf.where(pads, 5, feats[F.TIME_GAP])
    noisy[F.RATING] = tf.where(pads, 4, feats[F.RATING])
    out = model(noisy, training=False)["query"].numpy()
    np.testing.assert_allclose(out[~pads], base[~pads], atol=1e-5)


def test_serialization_round_trip(tiny_cfg, tables, tmp_path):
    model = build_model(tiny_cfg, tables)
    feats, _ = batch(tiny_cfg)
    expected = model(feats, training=False)
    model.save(tmp_path / "bst.keras")
    loaded = tf.keras.models.load_model(tmp_path / "bst.keras")
    got = loaded(feats, training=False)
    for key in ("query", "scores"):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-6)
