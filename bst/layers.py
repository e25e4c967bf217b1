"""Reusable, serializable Keras layers of the BST model (the transformer block is in
:mod:`bst.transformer`).

Every layer here is registered with ``tf.keras.utils.register_keras_serializable``
under the package ``"bst"``, has a ``get_config`` and names its sublayers, so a
model that uses them saves (``.keras`` or SavedModel) and loads back unchanged.

Index conventions follow ``bst.features``: ``PAD = 0``, ``OOV = UNKNOWN = 1``,
vocabulary entries from 2. Sequences are left-padded, so the newest event is the
last position and padding sits at the start of a row.

None of these layers emits a Keras mask: padding is passed explicitly (a bool
``padding_mask``, True for real events), which keeps the attention mask under our
control and the layers usable under ``tf.function(jit_compile=True)``.

Layers compute in ``self.compute_dtype`` (so ``mixed_float16`` works); ``DotScores``
returns float32 logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst.features import NUM_RESERVED, OOV, PAD

_register = tf.keras.utils.register_keras_serializable(package="bst")


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def check_rate(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")


def _clone(initializer: Any) -> Any:
    """A fresh copy, so layers sharing an initializer argument get different values."""
    return initializer.__class__.from_config(initializer.get_config())


def _in_training(training: Any) -> Any:
    """Python bool or bool tensor: whether the layer runs in training mode."""
    if training is None:
        training = tf.keras.backend.learning_phase()
    if isinstance(training, (bool, int, np.integer, np.bool_)):
        return bool(training)
    return tf.cast(training, tf.bool)


def _int_table(name: str, table: Any, rank: int, num_items: int, vocab: int) -> np.ndarray:
    """Validates a constant lookup table (item index -> feature indices)."""
    array = np.asarray(table)
    if array.ndim != rank or array.shape[0] != num_items:
        expected = "(num_items,)" if rank == 1 else "(num_items, width)"
        raise ValueError(
            f"`{name}` must have shape {expected} with num_items={num_items}. "
            f"Received: {name}.shape={array.shape}"
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integers. Received: {name}.dtype={array.dtype}")
    array = array.astype(np.int32)
    if array.size and (array.min() < 0 or array.max() >= vocab):
        raise ValueError(
            f"`{name}` values must lie in [0, {vocab}). "
            f"Received: min={array.min()}, max={array.max()}"
        )
    return array


@_register
class PositionEmbedding(tf.keras.layers.Layer):
    """Adds a learned position embedding, aligned to the END of the sequence.

    Sequences are left-padded, so the newest event is always the last position.
    Position embeddings are therefore counted from the end: with ``max_len``
    rows, a call on a sequence of length ``L <= max_len`` adds rows
    ``max_len - L .. max_len - 1``, and the last position always gets row
    ``max_len - 1`` whatever ``L`` is. A model trained on length ``max_len`` can
    thus serve shorter histories with the same "most recent" embedding.

    Padded positions receive a position embedding too; ``TransformerBlock``
    never attends to them.

    Input shape:
        (batch_size, seq_len, dim), with seq_len <= max_len.

    Output shape:
        (batch_size, seq_len, dim).

    Args:
        max_len: int. Longest sequence the layer accepts.
        dim: int. Embedding width; the last dimension of the input.
        embeddings_initializer: Initializer of the (max_len, dim) table.
            Defaults to ``"uniform"`` (as ``tf.keras.layers.Embedding``).
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        max_len: int,
        dim: int,
        embeddings_initializer: Any = "uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive_int("max_len", max_len)
        check_positive_int("dim", dim)
        self.max_len = int(max_len)
        self.dim = int(dim)
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 3 or input_shape[-1] != self.dim:
            raise ValueError(
                f"{self.name} expects inputs of shape (batch_size, seq_len, {self.dim}). "
                f"Received: input_shape={input_shape}"
            )
        if input_shape[1] is not None and input_shape[1] > self.max_len:
            raise ValueError(
                f"{self.name}: sequence length must be <= max_len={self.max_len}. "
                f"Received: seq_len={input_shape[1]}"
            )
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_len, self.dim),
            initializer=self.embeddings_initializer,
            trainable=True,
        )
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        static_len = x.shape[1]
        if static_len is not None and static_len > self.max_len:
            raise ValueError(
                f"{self.name}: sequence length must be <= max_len={self.max_len}. "
                f"Received: seq_len={static_len}"
            )
        seq_len = tf.shape(x)[1]
        positions = self.embeddings[self.max_len - seq_len :]  # (L, D)
        return x + tf.cast(positions, x.dtype)[tf.newaxis]  # (B, L, D)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            max_len=self.max_len,
            dim=self.dim,
            embeddings_initializer=tf.keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


@_register
class ItemEmbedding(tf.keras.layers.Layer):
    """Item token: movie-id embedding + mean genre embedding + year embedding.

    For item index ``i``::

        token(i) = E_movie[i]
                 + mean(E_genre[g] for g in genre_table[i] if g != 0)
                 + E_year[year_table[i]]     (not when num_years = 2: no year vocabulary)
                 (+ mean(E_text[w] for w in text_table[i] if w > 1))

    and ``token(0) = 0`` (padding). An item with no non-zero genre (or no
    in-vocabulary word: padding and OOV words are left out) gets no genre (or
    text) term. Items with an index ``>= num_trained``
    (movies held out of training, the cold-start protocol) get no ``E_movie``
    term: they are embedded from their side features alone, as :meth:`content`
    embeds a movie that is not in the table at all (new movies at export). ``genre_table``, ``year_table`` and
    ``text_table`` map each item index to its side features; they are
    constants of the model (not trainable), kept in ``get_config`` as nested
    lists so a saved model carries them.

    ``call`` accepts ids of any shape (usually (B, L) histories); ``all_items``
    embeds the whole catalog for scoring. ``call`` computes each token from its
    side features, not by gathering ``all_items()``, so its cost does not grow
    with the catalog.

    Input shape:
        (batch_size, seq_len) int item indices (any shape works).

    Output shape:
        (batch_size, seq_len, dim) (the input shape + (dim,)).

    Args:
        num_items: int. Size of the item vocabulary, reserved indices included.
        dim: int. Embedding width of every component.
        genre_table: int array (num_items, max_genres). Genre indices of each
            item, 0-padded (``bst.features.MAX_GENRES`` wide).
        year_table: int array (num_items,). Release-year index of each item.
        num_genres: int. Size of the genre vocabulary, reserved indices included.
        num_years: int. Size of the year vocabulary, reserved indices included.
        text_table: optional int array (num_items, num_tokens). Token ids of
            each item's overview text, 0-padded. Needs ``text_vocab_size``.
        text_vocab_size: optional int. Size of the text token vocabulary.
        num_trained: optional int. Item indices below it have an id embedding;
            the rest are content-only. Defaults to ``num_items`` (all).
        id_dropout: float in [0, 1). In training, :meth:`all_items` drops each item's
            id term with this probability (one draw per item and call), so the content
            part learns to carry a movie alone, as it must for a movie never rated.
            Defaults to 0.
        embeddings_initializer: Initializer of every table. Defaults to
            ``"uniform"`` (as ``tf.keras.layers.Embedding``).
        embeddings_regularizer: Optional regularizer of every table.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        num_items: int,
        dim: int,
        genre_table: Any,
        year_table: Any,
        num_genres: int,
        num_years: int,
        text_table: Any = None,
        text_vocab_size: int | None = None,
        num_trained: int | None = None,
        id_dropout: float = 0.0,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_rate("id_dropout", id_dropout)
        self.id_dropout = float(id_dropout)
        if num_trained is not None:
            check_positive_int("num_trained", num_trained)
            if num_trained > num_items:
                raise ValueError(
                    "`num_trained` must be <= num_items. Received: "
                    f"num_trained={num_trained}, num_items={num_items}"
                )
        self.num_trained = int(num_items if num_trained is None else num_trained)
        for arg, value in (
            ("num_items", num_items),
            ("dim", dim),
            ("num_genres", num_genres),
            ("num_years", num_years),
        ):
            check_positive_int(arg, value)
        self.num_items = int(num_items)
        self.dim = int(dim)
        self.num_genres = int(num_genres)
        self.num_years = int(num_years)
        self.genre_table = _int_table("genre_table", genre_table, 2, num_items, num_genres)
        self.year_table = _int_table("year_table", year_table, 1, num_items, num_years)
        if (text_table is None) != (text_vocab_size is None):
            raise ValueError(
                "`text_table` and `text_vocab_size` go together. Received: "
                f"text_table={'None' if text_table is None else 'an array'}, "
                f"text_vocab_size={text_vocab_size!r}"
            )
        self.text_table = None
        self.text_vocab_size = None
        if text_table is not None:
            check_positive_int("text_vocab_size", text_vocab_size)
            self.text_vocab_size = int(text_vocab_size)
            self.text_table = _int_table(
                "text_table", text_table, 2, num_items, self.text_vocab_size
            )
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = tf.keras.regularizers.get(embeddings_regularizer)

        def embedding(input_dim: int, name: str) -> tf.keras.layers.Embedding:
            return tf.keras.layers.Embedding(
                input_dim,
                dim,
                embeddings_initializer=_clone(self.embeddings_initializer),
                embeddings_regularizer=self.embeddings_regularizer,
                name=name,
                dtype=self.dtype_policy,
            )

        self.movie_embedding = embedding(self.num_items, "movie_embedding")
        self.genre_embedding = embedding(self.num_genres, "genre_embedding")
        self.year_embedding = embedding(self.num_years, "year_embedding")
        self.text_embedding = None
        if self.text_table is not None:
            self.text_embedding = embedding(self.text_vocab_size, "text_embedding")

    def _embeddings(self) -> list[tf.keras.layers.Embedding]:
        tables = [self.movie_embedding, self.genre_embedding, self.year_embedding]
        return tables + ([self.text_embedding] if self.text_embedding is not None else [])

    def build(self, input_shape: tf.TensorShape) -> None:
        for embedding in self._embeddings():
            with tf.name_scope(embedding.name):
                embedding.build((None,))
        super().build(input_shape)

    def _bag_mean(
        self, embedding: tf.keras.layers.Layer, ids: tf.Tensor, first: int = PAD + 1
    ) -> tf.Tensor:
        """Mean of the embeddings of the ids ``>= first`` along the last axis (by default
        every id but padding)."""
        vectors = embedding(ids)  # (..., K, D)
        present = tf.cast(ids >= first, vectors.dtype)[..., tf.newaxis]  # (..., K, 1)
        total = tf.reduce_sum(vectors * present, axis=-2)  # (..., D)
        count = tf.reduce_sum(present, axis=-2)  # (..., 1)
        return total / tf.maximum(count, 1.0)

    def content(
        self, genres: tf.Tensor, years: tf.Tensor, words: tf.Tensor | None = None
    ) -> tf.Tensor:
        """The side-feature part of a token: mean genre + year (+ mean overview word).

        ``genres``: int (..., G) genre indices, 0-padded; ``years``: int (...) year
        indices; ``words``: int (..., T) overview token ids, 0-padded (ignored when the
        layer has no text). Returns (..., dim). A movie unknown to the id table (a new
        movie added at export) is embedded by this alone.
        """
        if not self.built:
            self.build(tf.TensorShape([None]))
        token = self._bag_mean(self.genre_embedding, tf.cast(genres, tf.int32))
        if self.num_years > NUM_RESERVED:  # a dataset without years has no year term
            token += self.year_embedding(tf.cast(years, tf.int32))
        if self.text_embedding is not None and words is not None:
            # Words the vocabulary lacks (OOV) are left out: a movie's rare words are
            # out of a vocabulary learnt from other movies, and an OOV vector they all
            # share would only blur its overview.
            token += self._bag_mean(self.text_embedding, tf.cast(words, tf.int32), OOV + 1)
        return token

    def _embed(self, item_ids: tf.Tensor, training: Any = False) -> tf.Tensor:
        item_ids = tf.cast(item_ids, tf.int32)
        genres = tf.gather(tf.constant(self.genre_table), item_ids)  # (..., G)
        years = tf.gather(tf.constant(self.year_table), item_ids)  # (...)
        words = None
        if self.text_embedding is not None:
            words = tf.gather(tf.constant(self.text_table), item_ids)  # (..., T)
        token = self.movie_embedding(item_ids)  # (..., D)
        if self.num_trained < self.num_items:  # held-out movies: no id term
            trained = tf.cast(item_ids < self.num_trained, token.dtype)[..., tf.newaxis]
            token *= trained
        if self.id_dropout and _in_training(training) is not False:
            keep = tf.random.uniform(tf.shape(item_ids)) >= self.id_dropout
            keep = tf.logical_or(keep, tf.logical_not(_in_training(training)))
            token *= tf.cast(keep, token.dtype)[..., tf.newaxis]
        token += self.content(genres, years, words)
        not_pad = tf.cast(tf.not_equal(item_ids, PAD), token.dtype)[..., tf.newaxis]
        return token * not_pad  # (..., D)

    def call(self, item_ids: tf.Tensor) -> tf.Tensor:
        return self._embed(item_ids)

    def all_items(self, training: Any = False) -> tf.Tensor:
        """(num_items, dim) tokens of every item index; row 0 (padding) is zero.

        ``training``: with ``id_dropout``, drop the id term of random items.
        """
        if not self.built:
            self.build(tf.TensorShape([None]))
        return self._embed(tf.range(self.num_items), training)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape).concatenate([self.dim])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            dim=self.dim,
            genre_table=self.genre_table.tolist(),
            year_table=self.year_table.tolist(),
            num_genres=self.num_genres,
            num_years=self.num_years,
            text_table=None if self.text_table is None else self.text_table.tolist(),
            text_vocab_size=self.text_vocab_size,
            num_trained=self.num_trained,
            id_dropout=self.id_dropout,
            embeddings_initializer=tf.keras.initializers.serialize(self.embeddings_initializer),
            embeddings_regularizer=tf.keras.regularizers.serialize(self.embeddings_regularizer),
        )
        return config


@_register
class FeatureDropout(tf.keras.layers.Layer):
    """Replaces integer feature ids by ``unknown_value`` at random, in training.

    Teaches the model to answer requests that lack optional features (time gap,
    rating, profile): at serving time a missing feature arrives as UNKNOWN.
    Padding ids (``pad_value``) are never replaced. At inference the layer is
    the identity.

    Modes:
        ``"element"``: each id is replaced independently with probability
        ``rate`` (per example for (B,) features, per position for (B, L)
        features, per slot for (B, L, K) features).
        ``"example"``: one draw per example (row of the batch) replaces every
        non-pad id of that row: the whole feature goes missing for that example.
        For (B,) features both modes are the same.

    Input shape:
        (batch_size, ...) integer tensor.

    Output shape:
        Same shape and dtype as the input.

    Args:
        rate: float in [0, 1]. Probability of replacing an id (or a row).
        unknown_value: int. The replacement id. Defaults to 1 (``bst.features.UNKNOWN``).
        pad_value: int. Ids never replaced. Defaults to 0 (``bst.features.PAD``).
        mode: ``"element"`` or ``"example"``. Defaults to ``"element"``.
        seed: optional int. Seed of the random draws.
        **kwargs: Base layer arguments (``name``, ...).
    """

    MODES = ("element", "example")

    def __init__(
        self,
        rate: float,
        unknown_value: int = OOV,
        pad_value: int = PAD,
        mode: str = "element",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_rate("rate", rate)
        if mode not in self.MODES:
            raise ValueError(f"`mode` must be one of {self.MODES}. Received: mode={mode!r}")
        for arg, value in (("unknown_value", unknown_value), ("pad_value", pad_value)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"`{arg}` must be an integer. Received: {arg}={value!r}")
        if unknown_value == pad_value:
            raise ValueError(
                "`unknown_value` and `pad_value` must differ. Received: "
                f"unknown_value={unknown_value}, pad_value={pad_value}"
            )
        self.rate = float(rate)
        self.unknown_value = int(unknown_value)
        self.pad_value = int(pad_value)
        self.mode = mode
        self.seed = seed

    def _drop(self, ids: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(ids)
        if self.mode == "example":
            # (B, 1, ..., 1): one draw per row, broadcast over the row.
            shape = tf.concat([shape[:1], tf.ones_like(shape[1:])], axis=0)
        dropped = tf.random.uniform(shape, seed=self.seed) < self.rate
        dropped = tf.logical_and(dropped, tf.not_equal(ids, self.pad_value))
        return tf.where(dropped, tf.constant(self.unknown_value, ids.dtype), ids)

    def call(self, ids: tf.Tensor, training: Any = None) -> tf.Tensor:
        if not ids.dtype.is_integer:
            raise ValueError(f"{self.name} expects integer ids. Received: dtype={ids.dtype.name}")
        training = _in_training(training)
        if isinstance(training, bool):
            return self._drop(ids) if training and self.rate > 0 else ids
        return tf.cond(training, lambda: self._drop(ids), lambda: tf.identity(ids))

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            rate=self.rate,
            unknown_value=self.unknown_value,
            pad_value=self.pad_value,
            mode=self.mode,
            seed=self.seed,
        )
        return config


@_register
class MLPHead(tf.keras.layers.Layer):
    """Dense layers with GELU and dropout, then a linear projection to ``out_dim``.

    Computes ``Dense_out(Dropout(GELU(Dense_h_k(... Dropout(GELU(Dense_h_1(x)))))))``
    on the last axis; with no hidden units it is a single linear Dense.

    Input shape:
        (..., input_dim), e.g. (batch_size, d) or (batch_size, seq_len, d).

    Output shape:
        (..., out_dim).

    Args:
        hidden_units: list of int. Width of each hidden layer, in order; may be
            empty.
        out_dim: int. Width of the output (the query vector, for retrieval).
        dropout: float in [0, 1]. Dropout rate after each hidden layer.
            Defaults to 0.
        activation: Activation of the hidden layers. Defaults to ``"gelu"``.
        kernel_initializer: Initializer of every kernel. Defaults to
            ``"glorot_uniform"``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        hidden_units: Sequence[int],
        out_dim: int,
        dropout: float = 0.0,
        activation: Any = "gelu",
        kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(hidden_units, (int, str)) or not isinstance(hidden_units, Sequence):
            raise ValueError(
                f"`hidden_units` must be a list of positive integers. "
                f"Received: hidden_units={hidden_units!r}"
            )
        for units in hidden_units:
            if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
                raise ValueError(
                    f"`hidden_units` must be a list of positive integers. "
                    f"Received: hidden_units={list(hidden_units)!r}"
                )
        check_positive_int("out_dim", out_dim)
        check_rate("dropout", dropout)
        self.hidden_units = [int(units) for units in hidden_units]
        self.out_dim = int(out_dim)
        self.dropout = float(dropout)
        self.activation = tf.keras.activations.get(activation)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)

        policy = self.dtype_policy
        self.hidden_layers = []
        self.dropout_layers = []
        for i, units in enumerate(self.hidden_units):
            self.hidden_layers.append(
                tf.keras.layers.Dense(
                    units,
                    activation=self.activation,
                    kernel_initializer=_clone(self.kernel_initializer),
                    name=f"hidden_{i}",
                    dtype=policy,
                )
            )
            self.dropout_layers.append(
                tf.keras.layers.Dropout(dropout, name=f"dropout_{i}", dtype=policy)
            )
        self.output_layer = tf.keras.layers.Dense(
            out_dim,
            kernel_initializer=_clone(self.kernel_initializer),
            name="output",
            dtype=policy,
        )

    def build(self, input_shape: tf.TensorShape) -> None:
        shape = tf.TensorShape(input_shape)
        for hidden in self.hidden_layers:
            with tf.name_scope(hidden.name):
                hidden.build(shape)
            shape = shape[:-1].concatenate([hidden.units])
        with tf.name_scope(self.output_layer.name):
            self.output_layer.build(shape)
        super().build(input_shape)

    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        for hidden, dropout in zip(self.hidden_layers, self.dropout_layers, strict=True):
            x = dropout(hidden(x), training=training)  # (..., H_i)
        return self.output_layer(x)  # (..., out_dim)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)[:-1].concatenate([self.out_dim])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units),
            out_dim=self.out_dim,
            dropout=self.dropout,
            activation=tf.keras.activations.serialize(self.activation),
            kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@_register
class DotScores(tf.keras.layers.Layer):
    """Scores every item for each query by a dot product, in float32.

    ``logits[..., n] = sum_d query[..., d] * items[n, d]``. Both inputs are cast to
    float32 (the layer's dtype defaults to float32, also under mixed precision),
    so logits over a large catalog keep full precision for the softmax.

    Input shape:
        ``query``: (batch_size, dim) or (batch_size, seq_len, dim).
        ``items``: (num_items, dim), e.g. ``ItemEmbedding.all_items()``.

    Output shape:
        (batch_size, num_items) or (batch_size, seq_len, num_items), float32.

    Args:
        **kwargs: Base layer arguments (``name``; ``dtype`` defaults to
            ``"float32"``).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, query: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        query = tf.cast(query, tf.float32)
        items = tf.cast(items, tf.float32)
        return tf.einsum("...d,nd->...n", query, items)  # (B, [L,] N)

    def compute_output_shape(
        self, query_shape: tf.TensorShape, items_shape: tf.TensorShape
    ) -> tf.TensorShape:
        return tf.TensorShape(query_shape)[:-1].concatenate(tf.TensorShape(items_shape)[:1])
