"""The training task: the losses that wrap the functional model for ``fit``.

:class:`BSTTrainer` adds to :func:`bst.model.build_model`'s model: full-softmax
cross-entropy over the catalog at every real position (default), or TFRS
``Retrieval`` sampled softmax with log-Q correction, plus the optional rating head.
Regularization losses of the model's layers (``model.losses``) are added to the
training loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2
import tensorflow_recommenders as tfrs

from bst import features as F
from bst.config import Config
from bst.layers import MLPHead
from bst.model import model_inputs


def seen_mask(ids: tf.Tensor, target: tf.Tensor, valid: tf.Tensor, num_columns) -> tf.Tensor:
    """``(M, num_columns)`` bool: the movies each training token's history already holds,
    which the loss does not count as negatives (``model.mask_seen``).

    ``ids``: (B, L) input movie ids, left-padded; ``target``: (B, L) the next movie at
    each position; ``valid``: (B, L) bool, the positions that are training tokens, in the
    row-major order of ``tf.boolean_mask(query, valid)`` (token ``m`` = the m-th True).
    Row ``m`` = token (b, t) is True at the movies ``ids[b, s]`` for ``s <= t`` (the
    events it has seen; columns count real movies, index ``id - NUM_RESERVED``), except
    at its own target: a movie seen before and watched again stays a positive.

    Built from the (token, earlier position) pairs (a ragged range per token, about a
    million on an ML-1M batch) written into a dense mask at once: a scatter into the
    logits costs 4x more on a CPU.
    """
    seq_len = tf.shape(ids, out_type=tf.int64)[1]
    flat_ids = tf.reshape(ids, [-1])
    position = tf.where(tf.reshape(valid, [-1]))[:, 0]  # (M,) flat (b, t) of each token
    events = tf.reduce_sum(tf.cast(ids != F.PAD, tf.int64), axis=1)  # (B,)
    row = position // seq_len
    first = row * seq_len + seq_len - tf.gather(events, row)  # left padding: first event
    earlier = tf.ragged.range(first, position + 1)  # per token: flat (b, s), s <= t
    token = earlier.value_rowids()  # (P,)
    item = tf.gather(flat_ids, earlier.flat_values)  # (P,)
    keep = item != tf.gather(tf.gather(tf.reshape(target, [-1]), position), token)
    columns = tf.cast(num_columns, tf.int64)
    keep &= item >= F.NUM_RESERVED  # the unknown movie is no column
    keep &= tf.cast(item, tf.int64) < columns + F.NUM_RESERVED  # nor is a held-out movie
    flat = token * columns + tf.cast(item - F.NUM_RESERVED, tf.int64)
    size = tf.size(position, out_type=tf.int64) * columns
    mask = tf.raw_ops.SparseToDense(
        sparse_indices=tf.boolean_mask(flat, keep),
        output_shape=size[tf.newaxis],
        sparse_values=tf.constant(True),
        default_value=tf.constant(False),
        validate_indices=False,  # unsorted, and a movie seen twice is written twice
    )
    return tf.reshape(mask, tf.stack([tf.size(position, out_type=tf.int64), columns]))


def softmax_cross_entropy(
    logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None = None
) -> tf.Tensor:
    """Per-row ``-log softmax(logits)[label]``: ``(M, N)`` logits, int ``(M,)`` labels.

    The same values and gradients as ``tf.nn.sparse_softmax_cross_entropy_with_logits``,
    about 4x faster on a CPU for a catalog-wide softmax (14.5k x 3.7k float32 logits:
    71 ms against 299 ms forward and backward): one softmax (a oneDNN kernel) whose
    output the backward pass reuses, ``softmax - one_hot(label)`` written into it in
    place of a second pass. The softmax and its gradient keep the logits' dtype:
    bfloat16 logits (``train.bf16_logits``) halve the memory traffic of the (M, N)
    passes (the loss and its gradient then carry bfloat16 rounding, about 0.2 %
    relative, as under mixed precision); the returned loss is float32 either way.

    ``mask``: optional ``(M, N)`` bool, logits left out of the softmax (:func:`seen_mask`),
    never a row's label: they get probability 0 and gradient 0. None = none.
    """
    if mask is None:
        return _softmax_cross_entropy(logits, labels)
    return _masked_softmax_cross_entropy(logits, labels, mask)


def _cross_entropy_of(logits: tf.Tensor, labels: tf.Tensor):
    probs = tf.nn.softmax(logits)  # (M, N), in the logits' dtype
    rows = tf.range(tf.shape(labels)[0])
    index = tf.stack([rows, tf.cast(labels, tf.int32)], axis=1)  # (M, 2)
    picked = tf.gather_nd(probs, index)  # (M,)
    # log of the picked probability; the tiny floor only guards log(0) (a logit gap > 87)
    loss = -tf.math.log(tf.maximum(tf.cast(picked, tf.float32), 1e-37))

    def grad(upstream):
        delta = tf.tensor_scatter_nd_sub(probs, index, tf.ones_like(picked))  # softmax - 1_label
        return delta * tf.cast(upstream, probs.dtype)[:, tf.newaxis]

    return loss, grad


@tf.custom_gradient
def _softmax_cross_entropy(logits: tf.Tensor, labels: tf.Tensor):
    loss, grad = _cross_entropy_of(logits, labels)
    return loss, lambda upstream: (grad(upstream), None)


@tf.custom_gradient
def _masked_softmax_cross_entropy(logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor):
    # A large negative number, not -inf: its softmax is exactly 0 all the same, so the
    # backward pass's softmax - one_hot is already 0 there (no second pass over the mask).
    loss, grad = _cross_entropy_of(tf.where(mask, tf.constant(-1e9, logits.dtype), logits), labels)
    return loss, lambda upstream: (grad(upstream), None, None)


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
        # The catalog-wide logits matmul is the largest one of a step: bfloat16 inputs
        # (float32 accumulation) make it about 3x faster on CPUs with AMX/AVX512-BF16.
        self.logits_dtype = tf.bfloat16 if cfg.train.bf16_logits else None
        # Under XLA every shape is compiled once: the loss then covers every position of
        # the batch (padding weighted 0) instead of gathering the real ones (dynamic size).
        self.static_shapes = cfg.train.jit_compile == "true"
        # The schedule's planned steps (bst.optim.SchedulePlanner), saved with the backups.
        self.planned_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="planned_steps")
        self.num_negatives = cfg.model.num_negatives
        self.mask_seen = cfg.model.mask_seen and cfg.model.loss == "softmax"
        if self.loss_kind not in ("softmax", "sampled"):
            raise ValueError(
                f"model.loss must be 'softmax' or 'sampled'. Received: {self.loss_kind!r}"
            )
        self.items = model.encoder.items
        # Held-out movies (the cold-start protocol) are neither targets nor negatives:
        # training never sees them. They are the catalog's last rows, from num_trained on.
        self.num_trained = self.items.num_trained
        self.retrieval = None
        if self.loss_kind == "sampled":
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
        # The catalog's item tokens, once per step: the softmax needs them all, and the
        # history's tokens are gathered from them instead of being embedded again (with
        # overview text, a movie's token averages 64 word vectors: embedding every history
        # position was most of a step). The same forward pass as the functional model's
        # "query" output, without its last-position "scores" head, which training never uses.
        catalog = self.items.all_items(training)  # (N, D), in the compute dtype
        query = self.model.encoder(model_inputs(features), training=training, catalog=catalog)
        target = tf.cast(labels[F.NEXT_MOVIE], tf.int32)  # (B, L)
        valid = target >= F.NUM_RESERVED  # padding and "unknown movie" are never targets
        if self.num_trained < self.items.num_items:
            valid &= target < self.num_trained
        q = tf.boolean_mask(query, valid)  # (M, D)
        t = tf.boolean_mask(target, valid)  # (M,)
        if self.retrieval is None and self.static_shapes:
            items = catalog[F.NUM_RESERVED : self.num_trained]
            if self.logits_dtype is not None:
                query, items = tf.cast(query, self.logits_dtype), tf.cast(items, self.logits_dtype)
            logits = tf.einsum("bld,nd->bln", query, items)  # (B, L, N - 2)
            label = tf.where(valid, target - F.NUM_RESERVED, 0)
            logits = tf.cast(logits, tf.float32)
            if self.mask_seen:  # dense (B, L, N - 2): movies at positions <= t, not the target
                ids = tf.cast(features[F.MOVIE_ID], tf.int32) - F.NUM_RESERVED
                seen = tf.cumsum(tf.one_hot(ids, tf.shape(items)[0]), axis=1) > 0
                seen &= ~tf.cast(tf.one_hot(label, tf.shape(items)[0]), tf.bool)
                logits = tf.where(seen, tf.constant(-1e9, tf.float32), logits)
            log_probs = tf.nn.log_softmax(logits)
            picked = tf.gather(log_probs, label, batch_dims=2)  # (B, L)
            weight = tf.cast(valid, tf.float32)
            loss = -tf.reduce_sum(picked * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)
        elif self.retrieval is None:
            # Only real movies are candidates: columns 0 and 1 (padding, unknown) are cut.
            # The matmul runs in bfloat16 with bf16_logits (accumulating in float32), else
            # in the compute dtype; the softmax keeps that dtype, the loss is float32.
            items = catalog[F.NUM_RESERVED : self.num_trained]  # (N - 2, D)
            if self.logits_dtype is not None:
                q, items = tf.cast(q, self.logits_dtype), tf.cast(items, self.logits_dtype)
            logits = tf.matmul(q, items, transpose_b=True)  # (M, N - 2)
            mask = None
            if self.mask_seen:
                ids = tf.cast(features[F.MOVIE_ID], tf.int32)
                mask = seen_mask(ids, target, valid, tf.shape(items)[0])  # (M, N - 2)
            per_token = softmax_cross_entropy(logits, t - F.NUM_RESERVED, mask)  # (M,) f32
            loss = tf.reduce_mean(per_token)
        else:
            count = tf.shape(t)[0]
            keep = tf.random.shuffle(tf.range(count))[: self.num_negatives]
            q, t = tf.gather(q, keep), tf.gather(t, keep)
            candidates = tf.cast(tf.gather(catalog, t), tf.float32)  # (S, D)
            loss = self.retrieval(
                tf.cast(q, tf.float32),
                candidates,
                candidate_sampling_probability=tf.gather(self.log_q, t),
                candidate_ids=t,
                compute_metrics=False,
                compute_batch_metrics=False,
            )
        if self.rating_head is not None:
            rating = tf.cast(labels[F.NEXT_RATING], tf.int32)
            known = valid & (rating >= F.NUM_RESERVED)
            rq = tf.cast(tf.boolean_mask(query, known), tf.float32)
            rt = tf.boolean_mask(target, known)
            true = tf.cast(tf.boolean_mask(rating, known) - F.NUM_RESERVED + 1, tf.float32)
            pred = self.predict_rating(rq, tf.cast(tf.gather(catalog, rt), tf.float32))
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
            if self.model.losses:  # layer regularizers, if any
                loss += tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses])
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
