"""The functional BST model and the training wrapper that gives it a loss.

``build_model(cfg, tables)`` returns a Keras functional model:

inputs (names from :mod:`bst.features`)
    ``movie_id``, ``time_gap``, ``rating``: int (B, L), left-padded with 0;
    ``gender``, ``age``, ``occupation``, ``zip``: int (B,).
outputs
    ``query``: (B, L, D) the query vector after every position (position t
    predicts the event after t); ``scores``: (B, N) float32, the last
    position's dot products with every item of the catalog (N = movie
    vocabulary incl. the 2 reserved indices, which callers mask out).

Per event: item token (movie id + mean genre + release year [+ overview text],
:class:`bst.layers.ItemEmbedding`) + time-gap embedding + rating embedding +
learned position; N pre-LN transformer blocks with causal and padding masks; a
final LayerNorm; an MLP head over the sequence output and the user's profile
embeddings (residual, so it starts close to the identity) gives the query.
Optional features (time gap, rating, profile) go through
:class:`bst.layers.FeatureDropout`, so a request carrying only movie ids
(everything else UNKNOWN) is in the training distribution.

:class:`BSTTrainer` wraps the functional model for ``fit``: full-softmax
cross-entropy over the catalog at every real position (default), or TFRS
``Retrieval`` sampled softmax with log-Q correction, plus the optional rating head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import features as F
from bst.config import Config
from bst.layers import (
    DotScores,
    FeatureDropout,
    ItemEmbedding,
    MLPHead,
    PositionEmbedding,
    TransformerBlock,
)

import tensorflow as tf  # isort: skip

MODEL_INPUTS = (F.MOVIE_ID, F.TIME_GAP, F.RATING) + F.PROFILE_FEATURES


@dataclass(frozen=True)
class Tables:
    """Vocabulary sizes and per-item side tables the model is built with."""

    num_items: int
    item_genres: np.ndarray  # (num_items, MAX_GENRES)
    item_year: np.ndarray  # (num_items,)
    num_genres: int
    num_years: int
    profile_sizes: dict[str, int]
    text_table: np.ndarray | None = None  # (num_items, T)
    text_vocab_size: int | None = None

    @classmethod
    def from_prepared(cls, prepared: Any) -> Tables:
        """From a :class:`bst.pipeline.Prepared` folder."""
        genres, years = prepared.item_tables
        text_table, text_vocab = prepared.text_table
        return cls(
            num_items=prepared.vocab_size(F.MOVIE_ID),
            item_genres=genres,
            item_year=years,
            num_genres=prepared.vocab_size(F.GENRES),
            num_years=prepared.vocab_size(F.YEAR),
            profile_sizes={name: prepared.vocab_size(name) for name in F.PROFILE_FEATURES},
            text_table=text_table,
            text_vocab_size=text_vocab,
        )


@tf.keras.utils.register_keras_serializable(package="bst")
class CatalogIds(tf.keras.layers.Layer):
    """Every item index ``0..num_items-1`` as a tensor, so the functional graph can
    embed the whole catalog with the same (shared) :class:`ItemEmbedding`.

    Input shape: anything (ignored; it only anchors the layer in the graph).
    Output shape: (num_items,) int32.
    """

    def __init__(self, num_items: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(num_items) < 1:
            raise ValueError(f"`num_items` must be positive. Received: num_items={num_items}")
        self.num_items = int(num_items)

    def call(self, anchor: tf.Tensor) -> tf.Tensor:
        return tf.range(self.num_items, dtype=tf.int32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_items": self.num_items}


@tf.keras.utils.register_keras_serializable(package="bst")
class LastPosition(tf.keras.layers.Layer):
    """(B, L, D) → (B, D): the newest position (sequences are left-padded)."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x[:, -1]


@tf.keras.utils.register_keras_serializable(package="bst")
class BroadcastToSequence(tf.keras.layers.Layer):
    """Repeat a per-user vector (B, P) along the sequence of ``like`` (B, L, D) → (B, L, P)."""

    def call(self, vector: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        return tf.tile(vector[:, tf.newaxis, :], [1, tf.shape(like)[1], 1])


@tf.keras.utils.register_keras_serializable(package="bst")
class NotPadding(tf.keras.layers.Layer):
    """(B, L) ids → (B, L) bool, True for real events."""

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.not_equal(ids, F.PAD)


def build_model(cfg: Config, tables: Tables) -> tf.keras.Model:
    """The functional BST model (see the module docstring for inputs and outputs)."""
    m = cfg.model
    dim, length = m.dim, m.max_len
    seed = cfg.train.seed
    inputs = {
        name: tf.keras.Input(shape=(None,), dtype=tf.int32, name=name)  # L <= max_len
        for name in (F.MOVIE_ID, F.TIME_GAP, F.RATING)
    }
    inputs.update(
        {name: tf.keras.Input(shape=(), dtype=tf.int32, name=name) for name in F.PROFILE_FEATURES}
    )
    items = ItemEmbedding(
        tables.num_items,
        dim,
        tables.item_genres,
        tables.item_year,
        tables.num_genres,
        tables.num_years,
        text_table=tables.text_table,
        text_vocab_size=tables.text_vocab_size,
        embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02, seed=seed),
        name="item_embedding",
    )
    ids = inputs[F.MOVIE_ID]
    x = items(ids)  # (B, L, D)
    for name, size in ((F.TIME_GAP, F.TIME_GAP_VOCAB), (F.RATING, F.RATING_VOCAB)):
        feature = FeatureDropout(
            m.feature_dropout, mode="example", seed=seed, name=f"{name}_dropout"
        )(inputs[name])
        x = tf.keras.layers.Add(name=f"add_{name}")(
            [x, tf.keras.layers.Embedding(size, dim, name=f"{name}_embedding")(feature)]
        )  # (B, L, D)
    x = PositionEmbedding(length, dim, name="position_embedding")(x)
    x = tf.keras.layers.Dropout(m.dropout, name="embedding_dropout")(x)
    mask = NotPadding(name="padding_mask")(ids)  # (B, L) bool
    for i in range(m.num_blocks):
        x = TransformerBlock(
            dim, m.num_heads, dim * m.ff_mult, dropout=m.dropout, name=f"transformer_block_{i}"
        )(x, padding_mask=mask)
    x = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)  # (B, L, D)

    profile_dim = max(dim // 4, 4)
    profile = [
        tf.keras.layers.Embedding(
            tables.profile_sizes[name], profile_dim, name=f"{name}_embedding"
        )(FeatureDropout(m.feature_dropout, seed=seed, name=f"{name}_dropout")(inputs[name]))
        for name in F.PROFILE_FEATURES
    ]  # 4 x (B, P)
    profile = tf.keras.layers.Concatenate(name="profile")(profile)  # (B, 4P)
    profile = BroadcastToSequence(name="profile_per_position")(profile, x)  # (B, L, 4P)
    head_in = tf.keras.layers.Concatenate(name="head_input")([x, profile])  # (B, L, D + 4P)
    delta = MLPHead([2 * dim], dim, dropout=m.dropout, name="mlp_head")(head_in)  # (B, L, D)
    query = tf.keras.layers.Add(name="query")([x, delta])  # (B, L, D)

    catalog = items(CatalogIds(tables.num_items, name="catalog_ids")(ids))  # (N, D)
    scores = DotScores(name="scores")(LastPosition(name="last_position")(query), catalog)  # (B, N)
    return tf.keras.Model(inputs, {"query": query, "scores": scores}, name="bst")


def last_query(
    model: tf.keras.Model, inputs: dict[str, tf.Tensor], catalog: tf.Tensor | None = None
) -> tf.Tensor:
    """(B, D): ``model(inputs, training=False)["query"][:, -1]``, computed for the
    newest position only where the rest is not needed.

    The serving path (:mod:`bst.export`): every block but the top one runs on the
    whole history (its keys and values are needed), the top block, the final norm
    and the MLP head only at the last position. Same weights, same layers, same
    result to float rounding; ``tests/test_model.py`` checks it. With ``catalog``
    (the ``(N, D)`` output of ``ItemEmbedding.all_items()``, computed once), the
    history's item tokens are gathered from it instead of being recomputed from
    their side features.
    """
    ids = inputs[F.MOVIE_ID]
    if catalog is None:
        x = item_embedding_layer(model)(ids)  # (B, L, D)
    else:
        dtype = item_embedding_layer(model).compute_dtype
        x = tf.cast(tf.gather(catalog, ids), dtype)  # (B, L, D); row 0 (padding) is zero
    for name in (F.TIME_GAP, F.RATING):
        x += model.get_layer(f"{name}_embedding")(inputs[name])
    x = model.get_layer("position_embedding")(x)
    mask = tf.not_equal(ids, F.PAD)  # (B, L)
    # model.layers is in graph order, so block i comes before block i + 1
    blocks = [layer for layer in model.layers if layer.name.startswith("transformer_block_")]
    for block in blocks[:-1]:
        x = block(x, padding_mask=mask, training=False)
    x = blocks[-1].call_last(x, padding_mask=mask) if blocks else x[:, -1:]  # (B, 1, D)
    x = model.get_layer("final_norm")(x)[:, 0]  # (B, D)
    profile = tf.concat(
        [model.get_layer(f"{name}_embedding")(inputs[name]) for name in F.PROFILE_FEATURES],
        axis=-1,
    )  # (B, 4P)
    head_in = tf.concat([x, tf.cast(profile, x.dtype)], axis=-1)
    return x + model.get_layer("mlp_head")(head_in, training=False)  # (B, D)


def item_embedding_layer(model: tf.keras.Model) -> ItemEmbedding:
    return model.get_layer("item_embedding")


def model_inputs(features: dict) -> dict:
    """The subset of a pipeline batch the model takes."""
    return {name: features[name] for name in MODEL_INPUTS}


class BSTTrainer(tf.keras.Model):
    """Wraps the functional model with its training loss (``fit``/``evaluate``).

    ``loss="softmax"``: cross-entropy over the full catalog at every real position.
    ``loss="sampled"``: TFRS ``Retrieval`` over at most ``num_negatives`` positions per
    batch, their targets serving as each other's negatives, with log-Q correction by
    training-item frequency. With ``rating_head`` an MLP over [query, target item]
    predicts the rating (1..5) of the next event; its MSE is added with weight 0.1.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        cfg: Config,
        item_frequency: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.loss_kind = cfg.model.loss
        self.num_negatives = cfg.model.num_negatives
        if self.loss_kind not in ("softmax", "sampled"):
            raise ValueError(
                f"model.loss must be 'softmax' or 'sampled'. Received: {self.loss_kind!r}"
            )
        self.items = item_embedding_layer(model)
        self.retrieval = None
        if self.loss_kind == "sampled":
            import tensorflow_recommenders as tfrs

            freq = np.asarray(
                item_frequency if item_frequency is not None else np.ones(self.items.num_items),
                np.float64,
            )
            freq = np.maximum(freq, 1.0)
            self.log_q = tf.constant(freq / freq.sum(), tf.float32)
            self.retrieval = tfrs.tasks.Retrieval(remove_accidental_hits=True, name="retrieval")
        self.rating_head = None
        if cfg.model.rating_head:
            self.rating_head = MLPHead(
                [cfg.model.dim], 1, dropout=cfg.model.dropout, name="rating_head"
            )
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.rating_mae = tf.keras.metrics.MeanAbsoluteError(name="rating_mae")

    @property
    def metrics(self):
        return [self.loss_tracker, self.rating_mae] if self.rating_head else [self.loss_tracker]

    def call(self, features, training=None):
        return self.model(model_inputs(features), training=training)

    def compute_loss_terms(self, features, labels, training):
        out = self.model(model_inputs(features), training=training)
        query = tf.cast(out["query"], tf.float32)  # (B, L, D)
        target = tf.cast(labels[F.NEXT_MOVIE], tf.int32)  # (B, L)
        valid = target > F.PAD
        q = tf.boolean_mask(query, valid)  # (M, D)
        t = tf.boolean_mask(target, valid)  # (M,)
        catalog = tf.cast(self.items.all_items(), tf.float32)  # (N, D)
        if self.retrieval is None:
            logits = tf.matmul(q, catalog, transpose_b=True)  # (M, N)
            # padding and "unknown movie" are never right answers
            logits += tf.constant([-1e9, -1e9] + [0.0] * (self.items.num_items - 2), tf.float32)
            per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=logits)
            loss = tf.reduce_mean(per_token)
        else:
            count = tf.shape(t)[0]
            keep = tf.random.shuffle(tf.range(count))[: self.num_negatives]
            q, t = tf.gather(q, keep), tf.gather(t, keep)
            candidates = tf.gather(catalog, t)  # (S, D)
            loss = self.retrieval(
                q,
                candidates,
                candidate_sampling_probability=tf.gather(self.log_q, t),
                candidate_ids=t,
                compute_metrics=False,
                compute_batch_metrics=False,
            )
        if self.rating_head is not None:
            rating = tf.cast(labels[F.NEXT_RATING], tf.int32)
            known = valid & (rating >= F.NUM_RESERVED)
            rq = tf.boolean_mask(query, known)
            rt = tf.boolean_mask(target, known)
            true = tf.cast(tf.boolean_mask(rating, known) - F.NUM_RESERVED + 1, tf.float32)
            pred = self.predict_rating(rq, tf.gather(catalog, rt))
            loss += 0.1 * tf.reduce_mean(tf.square(pred - true))
            self.rating_mae.update_state(true, pred)
        return loss

    def predict_rating(self, query: tf.Tensor, item: tf.Tensor) -> tf.Tensor:
        """BST-style target-aware rating: MLP([query, item embedding]) → 1..5 scale."""
        raw = self.rating_head(tf.concat([query, item], axis=-1))[..., 0]
        return 3.0 + 2.0 * tf.tanh(raw)

    def train_step(self, data):
        features, labels = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss_terms(features, labels, training=True)
            scaled = (
                self.optimizer.get_scaled_loss(loss)
                if hasattr(self.optimizer, "get_scaled_loss")
                else loss
            )
        grads = tape.gradient(scaled, self.trainable_variables)
        if hasattr(self.optimizer, "get_unscaled_gradients"):
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        features, labels = data
        if len(labels[F.NEXT_MOVIE].shape) == 1:  # evaluation batch: one target per user
            length = tf.shape(features[F.MOVIE_ID])[1]
            pad = tf.zeros_like(features[F.MOVIE_ID][:, :-1])
            labels = {
                k: tf.concat([pad, v[:, tf.newaxis]], axis=1)[:, -length:]
                for k, v in labels.items()
            }
        loss = self.compute_loss_terms(features, labels, training=False)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}


def load_run(run_dir: Any) -> tuple[Config, tf.keras.Model, Any]:
    """(config, model with the run's best weights, Prepared folder) of a finished run."""
    from pathlib import Path

    from bst import config as config_lib
    from bst.pipeline import Prepared

    run_dir = Path(run_dir)
    for name in ("config.json", "model.weights.h5"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"{run_dir / name} not found: is {run_dir} a finished `python -m bst.train` run?"
            )
    cfg = config_lib.load(run_dir / "config.json")
    prepared = Prepared.open(cfg.data.prepared_dir)
    model = build_model(cfg, Tables.from_prepared(prepared))
    model.load_weights(str(run_dir / "model.weights.h5"))
    return cfg, model, prepared
