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
        self.items = model.encoder.items
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
