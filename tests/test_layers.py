"""Tests of bst.layers: hand-computed values, masking, serialization, validation."""

from __future__ import annotations

import math

import bst  # noqa: F401  (before tensorflow: makes tf.keras Keras 2)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from bst.layers import (
    DotScores,
    FeatureDropout,
    ItemEmbedding,
    MLPHead,
    PositionEmbedding,
)
from bst.transformer import TransformerBlock

DIM = 8
SEQ_LEN = 4

# Four items: 0 = PAD, 1 = OOV, 2 and 3 real movies. Genre vocab: 0 PAD, 1 OOV, 2, 3.
GENRE_TABLE = [[0, 0], [1, 0], [2, 3], [3, 0]]
YEAR_TABLE = [0, 1, 2, 3]


def _item_embedding(dim: int = DIM, **kwargs) -> ItemEmbedding:
    return ItemEmbedding(
        num_items=4,
        dim=dim,
        genre_table=GENRE_TABLE,
        year_table=YEAR_TABLE,
        num_genres=4,
        num_years=4,
        name="item_embedding",
        **kwargs,
    )


def _block(causal: bool = True, **kwargs) -> TransformerBlock:
    block = TransformerBlock(
        dim=DIM, num_heads=2, ff_dim=16, causal=causal, name="transformer_block_0", **kwargs
    )
    block(tf.zeros((1, SEQ_LEN, DIM)))  # build
    return block


def _gelu(x: float) -> float:
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


# --- ItemEmbedding -------------------------------------------------------------------


def test_item_embedding_sums_id_genre_mean_and_year():
    layer = _item_embedding(dim=2)
    layer.build((None, None))
    layer.movie_embedding.set_weights([np.array([[5, 5], [1, 2], [10, 20], [30, 40]], "f")])
    layer.genre_embedding.set_weights([np.array([[7, 7], [0.5, 0.5], [1, 0], [3, 2]], "f")])
    layer.year_embedding.set_weights([np.array([[9, 9], [0, 0], [100, 0], [0, 100]], "f")])

    out = layer(tf.constant([[0, 1, 2, 3]])).numpy()

    expected = [
        [0, 0],  # padding: zeros, not movie[0] + genre[0] + year[0]
        [1 + 0.5, 2 + 0.5],  # OOV: movie[1] + genre[1] + year[1]
        [10 + 2 + 100, 20 + 1],  # movie[2] + mean(genre[2], genre[3]) + year[2]
        [30 + 3, 40 + 2 + 100],  # movie[3] + genre[3] (slot 0 ignored) + year[3]
    ]
    assert out.shape == (1, 4, 2)
    np.testing.assert_allclose(out[0], expected)
    np.testing.assert_allclose(layer.all_items().numpy(), expected)


def test_item_embedding_text_bag_is_added():
    layer = _item_embedding(dim=2, text_table=[[0, 0], [0, 0], [2, 3], [0, 0]], text_vocab_size=4)
    layer.build((None, None))
    for embedding in (layer.movie_embedding, layer.genre_embedding, layer.year_embedding):
        embedding.set_weights([np.zeros((4, 2), "f")])
    layer.text_embedding.set_weights([np.array([[9, 9], [9, 9], [2, 4], [4, 8]], "f")])

    out = layer(tf.constant([[0, 2, 3]])).numpy()

    np.testing.assert_allclose(out[0], [[0, 0], [3, 6], [0, 0]])  # item 3 has no text
    assert [w.name.split("/")[-2] for w in layer.weights] == [
        "movie_embedding",
        "genre_embedding",
        "year_embedding",
        "text_embedding",
    ]


def test_item_embedding_items_from_num_trained_on_have_no_id_term():
    """Held-out movies (the cold-start protocol) are their content alone, which is what
    ``content`` gives for a movie that is not in the table at all."""
    layer = _item_embedding(dim=2, num_trained=3)
    layer.build((None, None))
    layer.movie_embedding.set_weights([np.array([[5, 5], [1, 2], [10, 20], [30, 40]], "f")])
    layer.genre_embedding.set_weights([np.array([[7, 7], [0.5, 0.5], [1, 0], [3, 2]], "f")])
    layer.year_embedding.set_weights([np.array([[9, 9], [0, 0], [100, 0], [0, 100]], "f")])

    out = layer(tf.constant([[2, 3]])).numpy()[0]

    np.testing.assert_allclose(out[0], [10 + 2 + 100, 20 + 1])  # trained: id term kept
    np.testing.assert_allclose(out[1], [3, 2 + 100])  # held out: genre[3] + year[3] only
    content = layer.content(tf.constant([[0, 3]]), tf.constant([3])).numpy()[0]
    np.testing.assert_allclose(content, out[1])
    np.testing.assert_allclose(layer.all_items().numpy()[3], out[1])
    with pytest.raises(ValueError, match="num_trained"):
        _item_embedding(num_trained=5)


def test_item_embedding_id_dropout_drops_whole_id_terms_in_training_only():
    layer = _item_embedding(id_dropout=0.5)
    full = layer.all_items().numpy()
    content = layer.content(tf.constant(GENRE_TABLE), tf.constant(YEAR_TABLE)).numpy()
    dropped_any = kept_any = False
    for _ in range(20):
        rows = layer.all_items(training=True).numpy()
        for i in range(1, 4):  # each row is the full token or its content alone
            if np.allclose(rows[i], full[i]):
                kept_any = True
            else:
                np.testing.assert_allclose(rows[i], content[i], rtol=1e-6, atol=1e-6)
                dropped_any = True
    assert dropped_any and kept_any
    np.testing.assert_allclose(layer.all_items(training=False).numpy(), full)


def test_item_embedding_text_bag_leaves_out_of_vocabulary_words_out():
    layer = _item_embedding(dim=2, text_table=[[0, 0], [0, 0], [2, 1], [1, 1]], text_vocab_size=4)
    layer.build((None, None))
    for embedding in (layer.movie_embedding, layer.genre_embedding, layer.year_embedding):
        embedding.set_weights([np.zeros((4, 2), "f")])
    layer.text_embedding.set_weights([np.array([[9, 9], [7, 7], [2, 4], [4, 8]], "f")])

    out = layer(tf.constant([[2, 3]])).numpy()

    np.testing.assert_allclose(out[0], [[2, 4], [0, 0]])  # OOV (1) words: no term


def test_item_embedding_all_items_shape_and_pad_row():
    layer = _item_embedding()
    items = layer.all_items()
    assert items.shape == (4, DIM)
    np.testing.assert_array_equal(items[0], np.zeros(DIM))
    assert np.all(np.abs(items[2].numpy()) > 0)


# --- PositionEmbedding ---------------------------------------------------------------


def test_position_embedding_is_aligned_to_the_end():
    layer = PositionEmbedding(max_len=3, dim=2, name="position_embedding")
    layer.build((None, 3, 2))
    layer.set_weights([np.array([[1, 1], [2, 2], [3, 3]], "f")])

    full = layer(tf.zeros((1, 3, 2))).numpy()
    short = layer(tf.ones((2, 2, 2))).numpy()

    np.testing.assert_allclose(full[0], [[1, 1], [2, 2], [3, 3]])
    np.testing.assert_allclose(short, [[[3, 3], [4, 4]]] * 2)  # last position: row 2


def test_position_embedding_rejects_longer_sequences():
    layer = PositionEmbedding(max_len=3, dim=2)
    with pytest.raises(ValueError, match="seq_len=4"):
        layer(tf.zeros((1, 4, 2)))


# --- DotScores -----------------------------------------------------------------------


def test_dot_scores_hand_computed():
    items = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    query = tf.constant([[1.0, 2.0], [3.0, -1.0]])

    logits = DotScores(name="scores")(query, items)
    sequence_logits = DotScores()(tf.stack([query, 2 * query]), items)

    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits, [[0, 1, 2, 5], [0, 3, -1, 1]])
    assert sequence_logits.shape == (2, 2, 4)
    np.testing.assert_allclose(sequence_logits[1], [[0, 2, 4, 10], [0, 6, -2, 2]])


def test_dot_scores_returns_float32_for_float16_inputs():
    logits = DotScores()(tf.ones((2, 3), tf.float16), tf.ones((5, 3), tf.float16))
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits, np.full((2, 5), 3.0))


# --- FeatureDropout ------------------------------------------------------------------

IDS = tf.constant([[0, 0, 5, 7], [0, 3, 1, 9]])


def test_feature_dropout_rate_zero_is_identity_in_training():
    np.testing.assert_array_equal(FeatureDropout(0.0)(IDS, training=True), IDS)


def test_feature_dropout_rate_one_replaces_every_non_pad_id():
    out = FeatureDropout(1.0, name="rating_dropout")(IDS, training=True)
    assert out.dtype == IDS.dtype
    np.testing.assert_array_equal(out, [[0, 0, 1, 1], [0, 1, 1, 1]])
    scalar = FeatureDropout(1.0, unknown_value=9, pad_value=-1)(tf.constant([-1, 4]), training=True)
    np.testing.assert_array_equal(scalar, [-1, 9])


def test_feature_dropout_is_identity_at_inference():
    layer = FeatureDropout(1.0)
    np.testing.assert_array_equal(layer(IDS), IDS)
    np.testing.assert_array_equal(layer(IDS, training=False), IDS)


def test_feature_dropout_element_and_example_modes():
    ids = tf.fill((2000, 5), 7)
    element = FeatureDropout(0.5, seed=1)(ids, training=True).numpy()
    example = FeatureDropout(0.5, mode="example", seed=1)(ids, training=True).numpy()

    assert set(np.unique(element)) == {1, 7}
    assert 0.45 < np.mean(element == 1) < 0.55
    # example mode: each row is either untouched or entirely unknown
    rows = {tuple(row) for row in example}
    assert rows == {(7,) * 5, (1,) * 5}
    assert 0.45 < np.mean(example[:, 0] == 1) < 0.55


def test_feature_dropout_with_tensor_training_flag():
    layer = FeatureDropout(1.0)
    fn = tf.function(lambda ids, training: layer(ids, training=training))
    np.testing.assert_array_equal(fn(IDS, tf.constant(False)), IDS)
    np.testing.assert_array_equal(fn(IDS, tf.constant(True)), [[0, 0, 1, 1], [0, 1, 1, 1]])


# --- MLPHead -------------------------------------------------------------------------


def test_mlp_head_hand_computed_with_ones():
    x = tf.constant([[1.0, 2.0]])
    head = MLPHead([3], out_dim=2, kernel_initializer="ones", name="query_head")
    linear = MLPHead([], out_dim=1, kernel_initializer="ones")

    # hidden units: gelu(1 + 2) each; output: sum of 3 hidden units
    np.testing.assert_allclose(head(x), [[3 * _gelu(3.0)] * 2], rtol=1e-6)
    np.testing.assert_allclose(linear(x), [[3.0]])
    assert head(tf.zeros((2, SEQ_LEN, 2))).shape == (2, SEQ_LEN, 2)
    assert [layer.name for layer in head.hidden_layers] == ["hidden_0"]


# --- TransformerBlock ----------------------------------------------------------------


def test_attention_mask_hand_computed():
    block = _block()
    mask = block.attention_mask(tf.zeros((1, 3, DIM)), tf.constant([[False, True, True]]))
    np.testing.assert_array_equal(
        mask[0],
        [
            [1, 0, 0],  # padded query: itself only
            [0, 1, 0],  # real queries never see the padded key 0, nor the future
            [0, 1, 1],
        ],
    )
    bidirectional = _block(causal=False).attention_mask(tf.zeros((2, 2, DIM)))
    np.testing.assert_array_equal(bidirectional, np.ones((2, 2, 2), bool))


def test_padding_positions_are_never_attended():
    block = _block(causal=False)  # non-causal: every real query sees every real key
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, SEQ_LEN, DIM)).astype("f")
    mask = tf.constant([[False, False, True, True], [False, True, True, True]])
    changed = x.copy()
    changed[0, :2] = rng.normal(size=(2, DIM)) * 10
    changed[1, 0] = rng.normal(size=DIM) * 10

    out = block(x, padding_mask=mask).numpy()
    out_changed = block(changed, padding_mask=mask).numpy()

    real = mask.numpy()
    np.testing.assert_allclose(out_changed[real], out[real], atol=1e-6)
    np.testing.assert_array_equal(out[~real], 0.0)
    # sanity: a change at a real position does reach the others
    changed[0, 2] += rng.normal(size=DIM).astype("f")  # not a constant: LayerNorm removes it
    assert not np.allclose(block(changed, padding_mask=mask)[0, 3], out[0, 3], atol=1e-4)


def test_causal_mask_hides_later_positions():
    block = _block(causal=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, SEQ_LEN, DIM)).astype("f")
    changed = x.copy()
    changed[:, -1] += rng.normal(size=(2, DIM)) * 3  # not a constant: LayerNorm removes it

    out = block(x).numpy()
    out_changed = block(changed).numpy()

    np.testing.assert_allclose(out_changed[:, :-1], out[:, :-1], atol=1e-6)
    assert not np.allclose(out_changed[:, -1], out[:, -1], atol=1e-4)
    bidirectional = _block(causal=False)
    assert not np.allclose(bidirectional(changed)[:, 0], bidirectional(x)[:, 0], atol=1e-4)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_no_nan_for_mostly_or_fully_padded_rows(policy):
    block = _block(dropout=0.1, dtype=policy)  # float16: a -1e9 bias would be -inf there
    x = tf.random.normal((2, SEQ_LEN, DIM), seed=2)
    mask = tf.constant([[False, False, False, True], [False] * SEQ_LEN])

    for training in (False, True):
        out = block(x, padding_mask=mask, training=training).numpy()
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[0, :3], 0.0)
        np.testing.assert_array_equal(out[1], 0.0)
        assert np.any(out[0, 3] != 0.0)


@pytest.mark.parametrize("causal", [True, False])
def test_last_only_is_the_last_position_of_call(causal):
    block = _block(causal=causal)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(3, SEQ_LEN, DIM)).astype("f"))
    # a left-padded row, a full row, and a row that is padding throughout
    mask = tf.constant([[False, False, True, True], [True] * SEQ_LEN, [False] * SEQ_LEN])
    for padding_mask in (mask, None):
        full = block(x, padding_mask=padding_mask, training=False).numpy()
        last = block(x, padding_mask=padding_mask, last_only=True).numpy()
        assert last.shape == (3, 1, DIM)
        np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-5)
    assert np.any(full[:, -1] != 0.0)


def test_block_runs_under_xla_and_matches_eager():
    items = _item_embedding()
    positions = PositionEmbedding(SEQ_LEN, DIM)
    block = _block()
    ids = tf.constant([[0, 0, 2, 3], [0, 3, 1, 2]])

    def forward(ids):
        x = positions(items(ids))
        return block(x, padding_mask=tf.not_equal(ids, 0))

    eager = forward(ids)
    compiled = tf.function(forward, jit_compile=True)(ids)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_layers_compute_in_mixed_precision():
    items = _item_embedding(dtype="mixed_float16")
    positions = PositionEmbedding(SEQ_LEN, DIM, dtype="mixed_float16")
    block = TransformerBlock(DIM, 2, 16, dtype="mixed_float16")
    ids = tf.constant([[0, 0, 0, 2], [0, 0, 0, 0]])

    x = positions(items(ids))
    out = block(x, padding_mask=tf.not_equal(ids, 0))
    logits = DotScores()(out[:, -1], items.all_items())

    assert x.dtype == tf.float16 and out.dtype == tf.float16
    assert block.attention.compute_dtype == "float16"
    assert block.weights[0].dtype == tf.float32  # variables stay float32
    assert logits.dtype == tf.float32 and logits.shape == (2, 4)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(logits.numpy()))


# --- serialization -------------------------------------------------------------------

LAYER_FACTORIES = {
    "transformer_block": lambda: TransformerBlock(
        DIM, 2, 16, dropout=0.1, causal=False, name="transformer_block_0"
    ),
    "position_embedding": lambda: PositionEmbedding(SEQ_LEN, DIM, name="position_embedding"),
    "item_embedding": lambda: _item_embedding(
        text_table=[[0, 0, 0], [0, 0, 0], [2, 3, 0], [3, 0, 0]],
        text_vocab_size=5,
        num_trained=3,
        id_dropout=0.1,
    ),
    "feature_dropout": lambda: FeatureDropout(0.3, mode="example", seed=7, name="rating_dropout"),
    "mlp_head": lambda: MLPHead([16, 8], out_dim=DIM, dropout=0.1, name="query_head"),
    "dot_scores": lambda: DotScores(name="scores"),
}


@pytest.mark.parametrize("kind", sorted(LAYER_FACTORIES))
def test_layer_config_round_trip(kind):
    layer = LAYER_FACTORIES[kind]()
    serialized = tf.keras.utils.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("bst>")

    restored = tf.keras.utils.deserialize_keras_object(serialized)

    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def _functional_model() -> tf.keras.Model:
    item_embedding = _item_embedding()
    ids = tf.keras.Input((SEQ_LEN,), dtype=tf.int32, name="movie_id")
    item_table = tf.keras.Input((DIM,), name="item_table")
    dropped = FeatureDropout(0.5, name="movie_dropout")(ids)
    x = item_embedding(dropped)  # (B, L, D)
    x = PositionEmbedding(SEQ_LEN, DIM, name="position_embedding")(x)
    x = TransformerBlock(DIM, 2, 16, dropout=0.1, name="transformer_block_0")(
        x, padding_mask=tf.not_equal(ids, 0)
    )
    query = MLPHead([16], DIM, name="query_head")(x[:, -1])  # (B, D)
    scores = DotScores(name="scores")(query, item_table)  # (B, N)
    return tf.keras.Model([ids, item_table], scores, name="tiny_bst")


def test_model_save_and_load_give_identical_outputs(tmp_path):
    model = _functional_model()
    ids = tf.constant([[0, 0, 2, 3], [0, 3, 1, 2], [0, 0, 0, 0]])
    table = model.get_layer("item_embedding").all_items()
    expected = model([ids, table]).numpy()
    assert expected.shape == (3, 4)

    model.save(tmp_path / "m.keras")
    restored = tf.keras.models.load_model(tmp_path / "m.keras")

    restored_table = restored.get_layer("item_embedding").all_items()
    np.testing.assert_allclose(restored_table, table, atol=1e-6)
    np.testing.assert_allclose(restored([ids, restored_table]), expected, atol=1e-6)
    assert isinstance(restored.get_layer("transformer_block_0"), TransformerBlock)
    assert isinstance(restored.get_layer("movie_dropout"), FeatureDropout)


# --- argument validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TransformerBlock(8, 3, 16), "dim=8, num_heads=3"),
        (lambda: TransformerBlock(8, 0, 16), "num_heads=0"),
        (lambda: TransformerBlock(8, 2, 16, dropout=1.5), "dropout=1.5"),
        (lambda: PositionEmbedding(0, 8), "max_len=0"),
        (lambda: FeatureDropout(-0.1), "rate=-0.1"),
        (lambda: FeatureDropout(1.5), "rate=1.5"),
        (lambda: FeatureDropout(0.1, mode="row"), "mode='row'"),
        (lambda: FeatureDropout(0.1, unknown_value=0), "unknown_value=0, pad_value=0"),
        (lambda: MLPHead([8, 0], 4), r"hidden_units=\[8, 0\]"),
        (lambda: MLPHead([8], 4, dropout=2), "dropout=2"),
        (lambda: ItemEmbedding(4, 8, [[0]] * 3, YEAR_TABLE, 4, 4), r"genre_table.shape=\(3, 1\)"),
        (lambda: ItemEmbedding(4, 8, GENRE_TABLE, [0, 1, 2, 9], 4, 4), "max=9"),
        (
            lambda: ItemEmbedding(4, 8, GENRE_TABLE, YEAR_TABLE, 4, 4, text_vocab_size=3),
            "text_vocab_size=3",
        ),
    ],
)
def test_invalid_arguments_say_what_was_received(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_block_rejects_wrong_input_width():
    with pytest.raises(ValueError, match=r"Received: input_shape=\(1, 4, 6\)"):
        TransformerBlock(8, 2, 16)(tf.zeros((1, 4, 6)))


def test_feature_dropout_rejects_float_ids():
    with pytest.raises(ValueError, match="dtype=float32"):
        FeatureDropout(0.1)(tf.zeros((2, 3)), training=True)


def test_model_saved_model_round_trip(tmp_path):
    model = _functional_model()
    ids = tf.constant([[0, 0, 2, 3], [0, 0, 0, 0]])
    table = model.get_layer("item_embedding").all_items()
    expected = model([ids, table]).numpy()

    model.save(tmp_path / "saved_model", save_format="tf")
    restored = tf.keras.models.load_model(tmp_path / "saved_model")

    assert isinstance(restored.get_layer("item_embedding"), ItemEmbedding)
    np.testing.assert_allclose(restored([ids, table]), expected, atol=1e-6)
