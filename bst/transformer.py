"""The transformer block of the BST model: pre-LN self-attention with causal and padding
masks, and its last-position shortcut for serving and scoring."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst.layers import check_positive_int, check_rate


@tf.keras.utils.register_keras_serializable(package="bst")
class TransformerBlock(tf.keras.layers.Layer):
    """One pre-LayerNorm Transformer encoder block with causal and padding masks.

    Computes, per position::

        h = x + Dropout(MultiHeadAttention(LN1(x), mask))
        y = h + Dropout(Dense_dim(Dropout(GELU(Dense_ff(LN2(h))))))

    Pre-LN (the norm inside each residual branch) trains more stably than the
    original post-LN without warm-up; stacks of these blocks should end with one
    final ``LayerNormalization``, which is the caller's job (``bst.model``).

    Masking: query ``t`` may attend to key ``s`` when ``s`` is a real event
    (``padding_mask[:, s]``) and, if ``causal``, ``s <= t``. A padded query
    (left padding makes the first rows padding) attends to itself only, so no
    softmax row is ever empty and nothing is NaN; the outputs at padded positions
    are then set to zero. Padded keys are never attended by real queries, so the
    values at padded positions cannot change the outputs at real positions.

    Input shape:
        ``x``: (batch_size, seq_len, dim) float tensor.
        ``padding_mask``: optional (batch_size, seq_len) bool tensor, True for
        real events. ``None`` means every position is real.

    Output shape:
        (batch_size, seq_len, dim), zero at padded positions.

    Args:
        dim: int. Model width; the last dimension of the input and the output.
        num_heads: int. Attention heads; must divide dim.
        ff_dim: int. Hidden width of the position-wise feed-forward network.
        dropout: float in [0, 1]. Dropout rate on the attention weights and on
            each residual branch. Defaults to 0.
        causal: bool. Whether position t sees only positions <= t. Defaults to
            True (next-item prediction at every position).
        epsilon: float. LayerNormalization epsilon. Defaults to 1e-6.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.0,
        causal: bool = True,
        epsilon: float = 1e-6,
        attention_dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        check_positive_int("ff_dim", ff_dim)
        check_rate("dropout", dropout)
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        check_rate("attention_dropout", attention_dropout)
        if dim % num_heads:
            raise ValueError(
                f"`num_heads` must divide `dim`. Received: dim={dim}, num_heads={num_heads}"
            )
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.ff_dim = int(ff_dim)
        self.dropout = float(dropout)
        self.attention_dropout_rate = float(attention_dropout)
        self.causal = bool(causal)
        self.epsilon = float(epsilon)

        policy = self.dtype_policy
        self.attention_norm = tf.keras.layers.LayerNormalization(
            epsilon=epsilon, name="attention_norm", dtype=policy
        )
        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=dim // num_heads,
            dropout=attention_dropout,
            softmax_robust_masking=True,
            name="attention",
            dtype=policy,
        )
        self.attention_dropout = tf.keras.layers.Dropout(
            dropout, name="attention_dropout", dtype=policy
        )
        self.probs_dropout = tf.keras.layers.Dropout(
            attention_dropout, name="attention_probs_dropout", dtype=policy
        )
        self.ff_norm = tf.keras.layers.LayerNormalization(
            epsilon=epsilon, name="ff_norm", dtype=policy
        )
        self.ff_hidden = tf.keras.layers.Dense(
            ff_dim, activation="gelu", name="ff_hidden", dtype=policy
        )
        self.ff_hidden_dropout = tf.keras.layers.Dropout(
            dropout, name="ff_hidden_dropout", dtype=policy
        )
        self.ff_output = tf.keras.layers.Dense(dim, name="ff_output", dtype=policy)
        self.ff_dropout = tf.keras.layers.Dropout(dropout, name="ff_dropout", dtype=policy)

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 3 or input_shape[-1] != self.dim:
            raise ValueError(
                f"{self.name} expects inputs of shape (batch_size, seq_len, {self.dim}). "
                f"Received: input_shape={input_shape}"
            )
        # Build every sublayer now, not lazily in call: a layer revived from a
        # SavedModel is built from its saved input shape and then restored, and
        # MultiHeadAttention's projections must exist by then (tf-keras#514).
        with tf.name_scope(self.attention_norm.name):
            self.attention_norm.build(input_shape)
        with tf.name_scope(self.attention.name):
            # tf_keras' MultiHeadAttention has no public build(shape).
            self.attention._build_from_signature(query=input_shape, value=input_shape)
        with tf.name_scope(self.ff_norm.name):
            self.ff_norm.build(input_shape)
        with tf.name_scope(self.ff_hidden.name):
            self.ff_hidden.build(input_shape)
        with tf.name_scope(self.ff_output.name):
            self.ff_output.build(input_shape[:-1].concatenate([self.ff_dim]))
        super().build(input_shape)

    def attention_mask(self, x: tf.Tensor, padding_mask: tf.Tensor | None = None) -> tf.Tensor:
        """The (B, L, L) bool mask: query row t may attend to key column s."""
        seq_len = tf.shape(x)[1]
        ones = tf.ones((seq_len, seq_len), tf.bool)
        allowed = tf.linalg.band_part(ones, -1, 0) if self.causal else ones  # (L, L)
        allowed = allowed[tf.newaxis]  # (1, L, L)
        if padding_mask is None:
            return tf.tile(allowed, [tf.shape(x)[0], 1, 1])  # (B, L, L)
        padding_mask = tf.cast(padding_mask, tf.bool)
        allowed = tf.logical_and(allowed, padding_mask[:, tf.newaxis, :])  # (B, L, L)
        # Every row keeps its own diagonal: real queries anyway (causal or not),
        # padded queries so their softmax row is never empty.
        eye = tf.eye(seq_len, dtype=tf.bool)[tf.newaxis]  # (1, L, L)
        return tf.logical_or(allowed, eye)  # (B, L, L)

    def last_row_mask(self, x: tf.Tensor, padding_mask: tf.Tensor | None = None) -> tf.Tensor:
        """The (B, 1, L) bool mask of the last query: ``attention_mask(x, padding_mask)[:, -1:]``.

        Causal or not, the last query may see every real key (and its own position).
        """
        seq_len = tf.shape(x)[1]
        if padding_mask is None:
            return tf.ones([tf.shape(x)[0], 1, seq_len], tf.bool)
        last = tf.one_hot(seq_len - 1, seq_len, on_value=True, off_value=False)  # (L,)
        return tf.logical_or(tf.cast(padding_mask, tf.bool), last)[:, tf.newaxis, :]

    def attend(
        self, query: tf.Tensor, value: tf.Tensor, mask: tf.Tensor, training: Any
    ) -> tf.Tensor:
        """Multi-head attention with the weights of ``self.attention`` (a Keras
        ``MultiHeadAttention``), written out: the mask becomes one additive bias and the
        softmax is one oneDNN kernel, and dropout on the attention weights is skipped when
        ``attention_dropout`` is 0 (the (B, H, Q, L) tensors dominate a CPU step at L = 200).

        Input shape: ``query`` (B, Q, D), ``value`` (B, L, D), ``mask`` (B, Q, L) bool.
        Output shape: (B, Q, D).
        """
        mha = self.attention
        q = mha._query_dense(query)  # (B, Q, H, K)
        k = mha._key_dense(value)  # (B, L, H, K)
        v = mha._value_dense(value)  # (B, L, H, K)
        q = q * tf.cast(1.0 / np.sqrt(self.dim // self.num_heads), q.dtype)
        scores = tf.einsum("bqhk,blhk->bhql", q, k)  # (B, H, Q, L)
        bias = tf.where(mask, 0.0, -1e9)[:, tf.newaxis]  # (B, 1, Q, L)
        probs = tf.nn.softmax(scores + tf.cast(bias, scores.dtype), axis=-1)  # (B, H, Q, L)
        if self.attention_dropout_rate > 0:
            probs = self.probs_dropout(probs, training=training)
        context = tf.einsum("bhql,blhk->bqhk", probs, v)  # (B, Q, H, K)
        return mha._output_dense(context)  # (B, Q, D)

    def call(
        self,
        x: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        training: Any = None,
        last_only: bool = False,
    ) -> tf.Tensor:
        """(B, L, D) → (B, L, D), or (B, 1, D) with ``last_only``: the same as ``[:, -1:]`` of the
        full output, with keys and values from every position but the query, the attention
        output and the feed-forward network at the last position only (what the top block
        of a servable needs; about a third of the block's work at L = 200)."""
        h = self.attention_norm(x)  # (B, L, D)
        if last_only:
            mask = self.last_row_mask(x, padding_mask)  # (B, 1, L)
            x, query = x[:, -1:], h[:, -1:]  # (B, 1, D)
            if padding_mask is not None:
                padding_mask = padding_mask[:, -1:]
        else:
            mask = self.attention_mask(x, padding_mask)  # (B, L, L)
            query = h
        h = self.attend(query, h, mask, training)  # (B, Q, D)
        x = x + self.attention_dropout(h, training=training)
        h = self.ff_norm(x)
        h = self.ff_hidden(h)  # (B, Q, F)
        h = self.ff_hidden_dropout(h, training=training)
        h = self.ff_output(h)  # (B, Q, D)
        x = x + self.ff_dropout(h, training=training)
        if padding_mask is not None:
            x = x * tf.cast(padding_mask, x.dtype)[..., tf.newaxis]
        return x

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            ff_dim=self.ff_dim,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout_rate,
            causal=self.causal,
            epsilon=self.epsilon,
        )
        return config
