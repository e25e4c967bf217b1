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

The forward pass is written once, in :class:`Encoder`; the training losses that
wrap the model for ``fit`` are in :mod:`bst.task`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import config as config_lib
from bst import features as F
from bst.config import Config
from bst.data.prepared import Prepared
from bst.errors import UsageError
from bst.layers import (
    DotScores,
    FeatureDropout,
    ItemEmbedding,
    MLPHead,
    PositionEmbedding,
)
from bst.transformer import TransformerBlock

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
    num_trained_items: int | None = None  # indices from here on: content-only (cold start)
    rating_levels: int = F.NUM_RATINGS  # Prepared.rating_levels

    @classmethod
    def from_prepared(cls, prepared: Prepared, text: bool = True) -> Tables:
        """From a prepared folder; ``text=False`` leaves its overviews out (``model.text``)."""
        genres, years = prepared.item_tables
        text_table, text_vocab = prepared.text_table if text else (None, None)
        return cls(
            num_items=prepared.vocab_size(F.MOVIE_ID),
            item_genres=genres,
            item_year=years,
            num_genres=prepared.vocab_size(F.GENRES),
            num_years=prepared.vocab_size(F.YEAR),
            profile_sizes={name: prepared.vocab_size(name) for name in prepared.profile_features},
            text_table=text_table,
            text_vocab_size=text_vocab,
            num_trained_items=prepared.num_trained_items,
            rating_levels=prepared.rating_levels,
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


class Encoder:
    """The BST forward pass, written once.

    Holds the model's layers and calls them: :func:`build_model` traces it into the
    functional graph (every position, as training needs), and the servable
    (:mod:`bst.export`) calls it eagerly with ``last_only=True``. A change to the
    model is made here, for both.
    """

    def __init__(self, cfg: Config, tables: Tables) -> None:
        m = cfg.model
        dim, seed = m.dim, cfg.train.seed
        self.items = ItemEmbedding(
            tables.num_items,
            dim,
            tables.item_genres,
            tables.item_year,
            tables.num_genres,
            tables.num_years,
            text_table=tables.text_table,
            text_vocab_size=tables.text_vocab_size,
            num_trained=tables.num_trained_items,
            id_dropout=m.id_dropout,
            embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02, seed=seed),
            name="item_embedding",
        )
        self.event_features = {}  # name -> (dropout, embedding, add)
        rating_vocab = F.NUM_RESERVED + tables.rating_levels
        for name, size in ((F.TIME_GAP, F.TIME_GAP_VOCAB), (F.RATING, rating_vocab)):
            self.event_features[name] = (
                FeatureDropout(
                    m.feature_dropout, mode="example", seed=seed, name=f"{name}_dropout"
                ),
                tf.keras.layers.Embedding(size, dim, name=f"{name}_embedding"),
                tf.keras.layers.Add(name=f"add_{name}"),
            )
        self.position = PositionEmbedding(m.max_len, dim, name="position_embedding")
        self.embedding_dropout = tf.keras.layers.Dropout(m.dropout, name="embedding_dropout")
        self.not_padding = NotPadding(name="padding_mask")
        self.blocks = [
            TransformerBlock(
                dim,
                m.num_heads,
                dim * m.ff_mult,
                dropout=m.dropout,
                attention_dropout=m.attention_dropout,
                name=f"transformer_block_{i}",
            )
            for i in range(m.num_blocks)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        profile_dim = max(dim // 4, 4)
        self.profile = {
            name: (
                FeatureDropout(m.feature_dropout, seed=seed, name=f"{name}_dropout"),
                tf.keras.layers.Embedding(size, profile_dim, name=f"{name}_embedding"),
            )
            for name, size in tables.profile_sizes.items()
            if size > F.NUM_RESERVED  # absent when the data lacks it
        }
        self.profile_concat = tf.keras.layers.Concatenate(name="profile")
        self.profile_per_position = BroadcastToSequence(name="profile_per_position")
        self.head_concat = tf.keras.layers.Concatenate(name="head_input")
        self.head = MLPHead([2 * dim], dim, dropout=m.dropout, name="mlp_head")
        self.query_add = tf.keras.layers.Add(name="query")
        self.catalog_ids = CatalogIds(tables.num_items, name="catalog_ids")

    def __call__(
        self,
        inputs: dict[str, tf.Tensor],
        training: Any = None,
        last_only: bool = False,
        catalog: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Query vectors: (B, L, D) after every position, or (B, 1, D) after the newest one.

        ``last_only``: every block but the top one runs on the whole history (its keys
        and values are needed), the top block, the final norm and the MLP head only at
        the newest position; same result as ``[:, -1:]`` of the full output.
        ``catalog``: the ``(N, D)`` output of ``ItemEmbedding.all_items()``, computed once;
        the history's item tokens are then gathered from it instead of recomputed (the
        servable, the scorer and the training loss, whose gradient flows through it).
        """
        ids = inputs[F.MOVIE_ID]
        if catalog is None:
            x = self.items(ids)  # (B, L, D)
        else:  # row 0 (padding) of the catalog is zero, as items(0) is
            x = tf.cast(tf.gather(catalog, ids), self.items.compute_dtype)  # (B, L, D)
        for name, (dropout, embedding, add) in self.event_features.items():
            feature = dropout(inputs[name], training=training)
            x = add([x, embedding(feature)])  # (B, L, D)
        x = self.position(x)
        x = self.embedding_dropout(x, training=training)
        mask = self.not_padding(ids)  # (B, L) bool
        for i, block in enumerate(self.blocks):
            top = i == len(self.blocks) - 1
            x = block(x, padding_mask=mask, training=training, last_only=last_only and top)
        if last_only and not self.blocks:
            x = x[:, -1:]  # (B, 1, D)
        x = self.final_norm(x)  # (B, L or 1, D)
        head_in = x  # (B, L or 1, D): data without a profile
        if self.profile:
            profile = [
                embedding(dropout(inputs[name], training=training))
                for name, (dropout, embedding) in self.profile.items()
            ]  # k x (B, P), one per profile feature the data has (4 in ML-1M)
            profile = self.profile_concat(profile)  # (B, kP)
            profile = self.profile_per_position(profile, x)  # (B, L or 1, kP)
            head_in = self.head_concat([x, profile])  # (B, L or 1, D + kP)
        delta = self.head(head_in, training=training)  # (B, L or 1, D)
        return self.query_add([x, delta])  # (B, L or 1, D)


def build_model(cfg: Config, tables: Tables) -> tf.keras.Model:
    """The functional BST model (see the module docstring for inputs and outputs).

    The model's :class:`Encoder` is ``model.encoder`` (the same layers, for the
    last-position path of the servable).
    """
    inputs = {
        name: tf.keras.Input(shape=(None,), dtype=tf.int32, name=name)  # L <= max_len
        for name in (F.MOVIE_ID, F.TIME_GAP, F.RATING)
    }
    inputs.update(
        {name: tf.keras.Input(shape=(), dtype=tf.int32, name=name) for name in tables.profile_sizes}
    )
    encoder = Encoder(cfg, tables)
    query = encoder(inputs)  # (B, L, D)
    catalog = encoder.items(encoder.catalog_ids(inputs[F.MOVIE_ID]))  # (N, D)
    scores = DotScores(name="scores")(LastPosition(name="last_position")(query), catalog)  # (B, N)
    model = tf.keras.Model(inputs, {"query": query, "scores": scores}, name="bst")
    model.encoder = encoder
    return model


NOT_INPUTS = frozenset({F.GENRES, F.YEAR, F.USER_ID})  # pipeline features the model looks up itself


def model_inputs(features: dict) -> dict:
    """The subset of a pipeline batch the model takes: the sequences and the profile
    features the data has (:data:`MODEL_INPUTS` for MovieLens)."""
    return {name: value for name, value in features.items() if name not in NOT_INPUTS}


def weights_digest(model: tf.keras.Model) -> str:
    """sha256 over every weight array, in order: which weights a run or an export holds."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def load_run(run_dir: str | Path) -> tuple[Config, tf.keras.Model, Prepared]:
    """(config, model with the run's best weights, Prepared folder) of a finished run."""
    run_dir = Path(run_dir)
    for name in ("config.json", "model.weights.h5"):
        if not (run_dir / name).is_file():
            raise UsageError(
                f"{run_dir / name} not found: is {run_dir} a finished `python -m bst.train` run?"
            )
    cfg = config_lib.load(run_dir / "config.json")
    prepared = Prepared.open(cfg.data.prepared_dir)
    model = build_model(cfg, Tables.from_prepared(prepared, cfg.model.text))
    weights = run_dir / "model.weights.h5"
    try:
        model.load_weights(str(weights))
    except (OSError, ValueError, KeyError) as err:  # h5py: truncated, corrupt, wrong shapes
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"{weights} cannot be loaded ({reason}): the file is damaged or belongs to another "
            "config; train the run again or copy the file again"
        ) from None
    return cfg, model, prepared
