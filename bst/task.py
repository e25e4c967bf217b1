"""The training task: the losses that wrap the functional model for ``fit``.

:class:`BSTTrainer` adds to :func:`bst.model.build_model`'s model: full-softmax
cross-entropy over the catalog at every real position (over chunks of tokens for a
catalog whose logits would not fit ``train.logits_mib``), or a sampled softmax with
log-Q correction (negatives drawn from the catalog and shared by the batch, or TFRS
``Retrieval``'s in-batch negatives), plus the optional rating head.
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

    Built from each row's first position of every movie, ``first[b, j]`` (B x N, small):
    token (b, t) has seen movie j iff ``first[b, j] <= t``, one gather and one compare
    per mask entry, in 16-bit integers while the rows are shorter than 32767, chosen over
    writing the (token, earlier position) pairs into the mask and over a scatter into
    the logits, both slower on a CPU (docs/experiments.md, "Where an epoch goes"). Only
    a batch in which some target repeats an earlier movie pays a second pass, to clear
    those entries.
    """
    first = first_positions(ids, num_columns)
    token = tf.where(valid)  # (M, 2): (b, t) of each token
    row, step = tf.cast(token[:, 0], tf.int32), tf.cast(token[:, 1], tf.int32)
    label = tf.gather_nd(target, token) - F.NUM_RESERVED
    return seen_rows(first, row, step, label)


def first_positions(ids: tf.Tensor, num_columns) -> tf.Tensor:
    """``(B, num_columns)`` int32: the first position of each movie in each row of ``ids``
    (the row's length, ``L``, for a movie it does not hold); :func:`seen_mask`'s table."""
    batch, seq_len = tf.shape(ids)[0], tf.shape(ids)[1]
    columns = tf.cast(num_columns, tf.int32)
    column = ids - F.NUM_RESERVED
    # padding, the unknown movie and held-out movies (index >= columns) are no column
    real = (column >= 0) & (column < columns)
    segment = tf.where(real, tf.range(batch)[:, tf.newaxis] * columns + column, batch * columns)
    position = tf.broadcast_to(tf.range(seq_len)[tf.newaxis], tf.shape(ids))
    first = tf.math.unsorted_segment_min(
        tf.reshape(position, [-1]), tf.reshape(segment, [-1]), batch * columns + 1
    )[:-1]  # never-seen movies get int32's maximum
    return tf.reshape(tf.minimum(first, seq_len), tf.stack([batch, columns]))


def seen_rows(first: tf.Tensor, row: tf.Tensor, step: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """The rows of :func:`seen_mask` for the tokens at ``(row, step)`` (int32 ``(m,)``)
    whose targets are the columns ``label``: ``(m, N)`` bool from :func:`first_positions`
    (so a chunk of tokens can have its rows alone)."""
    seq_len = tf.reduce_max(first) + 1  # at least the row length: int16 fits below 32767
    columns = tf.shape(first)[1]

    def compare(dtype):
        return lambda: tf.gather(tf.cast(first, dtype), row) <= tf.cast(step, dtype)[:, None]

    mask = tf.cond(seq_len < 32767, compare(tf.int16), compare(tf.int32))
    # a target seen before stays a positive: clear (m, target) where first <= t
    label = tf.clip_by_value(label, 0, columns - 1)  # valid tokens are in range already
    index = tf.stack([tf.range(tf.shape(label)[0]), label], axis=1)  # (M, 2)
    repeat = tf.gather_nd(first, tf.stack([row, label], axis=1)) <= step
    return tf.cond(
        tf.reduce_any(repeat),
        lambda: tf.tensor_scatter_nd_update(
            mask,
            tf.boolean_mask(index, repeat),
            tf.zeros_like(tf.boolean_mask(label, repeat), tf.bool),
        ),
        lambda: mask,
    )


def catalog_cross_entropy(
    query: tf.Tensor,
    items: tf.Tensor,
    labels: tf.Tensor,
    mask: tf.Tensor | None = None,
    logits_dtype: tf.DType | None = None,
) -> tf.Tensor:
    """Per-row ``-log softmax(query @ items^T)[label]``, float32: ``(M, D)`` queries,
    ``(N, D)`` items, int ``(M,)`` labels (row indices of ``items``).

    The values and gradients (for ``query`` and ``items``) of
    ``tf.nn.sparse_softmax_cross_entropy_with_logits`` over the logits matmul, with one
    matmul, one softmax (a oneDNN kernel) and no other pass over the (M, N) logits:

    * the backward pass reuses the softmax ``P``, and takes the one-hot out of the
      matmuls instead of writing ``P - one_hot(label)``: ``dquery = P @ items -
      items[label]``, ``ditems = P^T @ query - segment_sum(query, label)``;
    * the upstream gradient (``1/M`` under a mean) scales the (M, D) query side, not
      the (M, N) softmax.

    On a CPU that is faster than TensorFlow's op for a catalog-wide softmax and than
    writing ``P - one_hot`` (docs/experiments.md, "Where an epoch goes").

    ``logits_dtype``: bfloat16 (``train.bf16_logits``) runs the matmuls and the softmax
    in bfloat16 (float32 accumulation), halving the memory traffic of the (M, N) passes;
    the loss and gradients then carry bfloat16 rounding (about 0.5 % relative on ML-1M
    shaped data, as under mixed precision). None = the inputs' dtype.

    ``mask``: optional ``(M, N)`` bool, logits left out of the softmax (:func:`seen_mask`),
    never a row's label: they get probability 0 and gradient 0. None = none.
    """
    labels = tf.cast(labels, tf.int32)

    @tf.custom_gradient
    def run(query, items):
        dtype = logits_dtype or query.dtype
        q, c = tf.cast(query, dtype), tf.cast(items, dtype)
        logits = tf.matmul(q, c, transpose_b=True)  # (M, N)
        if mask is not None:
            # A large negative number, not -inf: its softmax is exactly 0 all the same,
            # so the gradient there is 0 too (no second pass over the mask).
            logits = tf.where(mask, tf.constant(-1e9, dtype), logits)
        probs = tf.nn.softmax(logits)  # (M, N), in the logits' dtype
        index = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)  # (M, 2)
        picked = tf.cast(tf.gather_nd(probs, index), tf.float32)  # (M,)
        # the tiny floor only guards log(0) (a logit gap > 87)
        loss = -tf.math.log(tf.maximum(picked, 1e-37))

        def grad(upstream):
            u = tf.cast(upstream, tf.float32)[:, tf.newaxis]  # (M, 1)
            qu = tf.cast(q, tf.float32) * u
            label_items = tf.cast(tf.gather(c, labels), tf.float32)
            dq = (tf.cast(tf.matmul(probs, c), tf.float32) - label_items) * u
            # (qu^T @ P)^T, not P^T @ qu: oneDNN then transposes the small operand
            pq = tf.transpose(tf.matmul(tf.cast(qu, dtype), probs, transpose_a=True))
            dc = tf.cast(pq, tf.float32) - tf.math.unsorted_segment_sum(qu, labels, tf.shape(c)[0])
            return tf.cast(dq, query.dtype), tf.cast(dc, items.dtype)

        return loss, grad

    return run(query, items)


def replicas() -> int:
    """Replicas training in sync here: 1 outside a replica context (and on one device)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def global_count(count: tf.Tensor) -> tf.Tensor:
    """``count`` (float32) summed over the replicas training in sync: a loss that is a
    mean over the global batch divides each replica's sum by it, so the gradients that
    the optimizer sums over replicas are those of one device on the whole batch."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return count
    return context.all_reduce(tf.distribute.ReduceOp.SUM, count)


def chunked_catalog_cross_entropy(
    query: tf.Tensor,
    items: tf.Tensor,
    labels: tf.Tensor,
    chunk: int,
    mask_rows=None,
    logits_dtype: tf.DType | None = None,
) -> tf.Tensor:
    """:func:`catalog_cross_entropy` over ``chunk`` rows (tokens) at a time: the same
    values and gradients with at most ``chunk x N`` logits in memory at once, for
    catalogs whose ``(M, N)`` logits would not fit (``train.logits_mib``).

    The forward pass keeps only each row's loss; the backward pass computes each
    chunk's softmax again (so a step does the logits matmul and softmax twice) and
    accumulates the items' gradient over the chunks. ``mask_rows(start, end)`` gives
    the ``(end - start, N)`` mask of rows ``start:end`` (:func:`seen_rows`), or None.
    """
    labels = tf.cast(labels, tf.int32)
    rows = tf.shape(query)[0]
    count = (rows + chunk - 1) // chunk

    def span(i):
        start = i * chunk
        return start, tf.minimum(start + chunk, rows)

    def softmax(q, c, start, end):
        logits = tf.matmul(q[start:end], c, transpose_b=True)  # (chunk, N)
        if mask_rows is not None:
            logits = tf.where(mask_rows(start, end), tf.constant(-1e9, logits.dtype), logits)
        return tf.nn.softmax(logits)

    @tf.custom_gradient
    def run(query, items):
        dtype = logits_dtype or query.dtype
        q, c = tf.cast(query, dtype), tf.cast(items, dtype)

        def forward(i, out):
            start, end = span(i)
            probs = softmax(q, c, start, end)
            index = tf.stack([tf.range(end - start), labels[start:end]], axis=1)
            picked = tf.cast(tf.gather_nd(probs, index), tf.float32)
            return i + 1, out.write(i, -tf.math.log(tf.maximum(picked, 1e-37)))

        pieces = tf.TensorArray(tf.float32, size=count, infer_shape=False)
        # one chunk at a time: the loop's default runs 10 iterations at once, 10x the memory
        _, pieces = tf.while_loop(
            lambda i, _: i < count, forward, (0, pieces), parallel_iterations=1
        )
        loss = tf.reshape(pieces.concat(), [rows])

        def grad(upstream):
            u = tf.cast(upstream, tf.float32)[:, tf.newaxis]  # (M, 1)
            qu = tf.cast(q, tf.float32) * u

            def backward(i, dq, dc):
                start, end = span(i)
                probs = softmax(q, c, start, end)
                label_items = tf.cast(tf.gather(c, labels[start:end]), tf.float32)
                part = (tf.cast(tf.matmul(probs, c), tf.float32) - label_items) * u[start:end]
                pq = tf.matmul(tf.cast(qu[start:end], dtype), probs, transpose_a=True)
                return i + 1, dq.write(i, part), dc + tf.cast(tf.transpose(pq), tf.float32)

            dq = tf.TensorArray(tf.float32, size=count, infer_shape=False)
            dc = tf.zeros(tf.shape(c), tf.float32)
            _, dq, dc = tf.while_loop(
                lambda i, *_: i < count, backward, (0, dq, dc), parallel_iterations=1
            )
            dc -= tf.math.unsorted_segment_sum(qu, labels, tf.shape(c)[0])
            dq = tf.reshape(dq.concat(), tf.shape(query))
            return tf.cast(dq, query.dtype), tf.cast(dc, items.dtype)

        return loss, grad

    return run(query, items)


# Shared negatives are drawn by training popularity raised to this power: between the
# uniform draw (0), which rarely offers the popular movies a query confuses with its
# target, and popularity itself (1), which rarely offers the rest.
NEGATIVES_DISTORTION = 0.75


class SharedNegatives:
    """Draws ``num`` distinct catalog columns for a whole step, shared by every token.

    Column ``j`` is drawn by ``counts[j] ** distortion`` (``counts``: training events per
    column, at least 1), without replacement, by the Gumbel top-k trick (``num`` largest
    of ``log p + Gumbel noise``: one uniform draw and one ``top_k`` over the catalog, on
    any device and under XLA). :attr:`log_q` is the log of each column's chance to be
    among them, ``1 - (1 - p_j) ** T`` with ``T`` such that the chances add up to
    ``num`` (the approximation TensorFlow's own samplers use), computed once;
    :func:`sampled_cross_entropy` subtracts it from the logits (the log-Q correction), so
    that the sampled softmax estimates the full one rather than one over a catalog skewed
    towards popular movies. With ``num`` at least the catalog every column is drawn,
    with ``log_q = 0``: the full softmax.
    """

    def __init__(self, counts: np.ndarray, num: int, distortion: float = NEGATIVES_DISTORTION):
        counts = np.maximum(np.asarray(counts, np.float64), 1.0)
        probs = counts**distortion
        probs /= probs.sum()
        self.num = int(min(num, len(probs)))
        self.catalog = len(probs)
        if self.num >= self.catalog:
            chance = np.ones_like(probs)
        else:
            low, high = float(self.num), float(self.num)
            while _expected_draws(probs, high) < self.num:
                high *= 2.0
            for _ in range(100):  # bisection on the number of draws T
                mid = 0.5 * (low + high)
                low, high = (mid, high) if _expected_draws(probs, mid) < self.num else (low, mid)
            chance = -np.expm1(high * np.log1p(-probs))
        self.log_p = tf.constant(np.log(probs), tf.float32)
        self.log_q = tf.constant(np.log(np.maximum(chance, 1e-30)), tf.float32)

    def __call__(self) -> tf.Tensor:
        """int32 ``(num,)``: this step's negatives."""
        if self.num >= self.catalog:
            return tf.range(self.catalog, dtype=tf.int32)
        uniform = tf.random.uniform([self.catalog], minval=1e-20, maxval=1.0)
        gumbel = -tf.math.log(-tf.math.log(uniform))
        return tf.math.top_k(self.log_p + gumbel, k=self.num, sorted=False).indices


def _expected_draws(probs: np.ndarray, tries: float) -> float:
    """Distinct columns expected among ``tries`` draws with replacement by ``probs``."""
    return float(-np.expm1(tries * np.log1p(-probs)).sum())


def sampled_cross_entropy(
    query: tf.Tensor,
    items: tf.Tensor,
    labels: tf.Tensor,
    negatives: tf.Tensor,
    log_q: tf.Tensor,
    mask: tf.Tensor | None = None,
    logits_dtype: tf.DType | None = None,
) -> tf.Tensor:
    """Per-row ``-log softmax`` over the row's label and ``K`` negatives shared by every
    row (:class:`SharedNegatives`), float32 ``(M,)``: ``(M, D)`` queries, ``(N, D)``
    items, int ``(M,)`` labels and ``(K,)`` negatives (row indices of ``items``).

    Each logit has ``log_q`` (float32 ``(N,)``, the log of each column's chance to be
    drawn) of its column subtracted. A
    negative that is the row's label (an accidental hit) is left out of that row, as are
    the entries of ``mask`` (optional ``(M, K)`` bool: the negatives each token's history
    already holds, :func:`seen_mask`'s rule). The ``(M, K)`` logits matmul runs in
    ``logits_dtype`` (bfloat16 with ``train.bf16_logits``), the softmax in float32.
    """
    labels, negatives = tf.cast(labels, tf.int32), tf.cast(negatives, tf.int32)
    drop = tf.equal(labels[:, tf.newaxis], negatives[tf.newaxis, :])  # (M, K) accidental hits
    if mask is not None:
        drop |= mask
    label_q, negative_q = tf.gather(log_q, labels), tf.gather(log_q, negatives)

    @tf.custom_gradient
    def run(query, items):
        # as catalog_cross_entropy: one matmul and one softmax forward, the backward pass
        # from that softmax; column 0 of the (M, 1 + K) softmax is each row's label
        dtype = logits_dtype or query.dtype
        q32, c = tf.cast(query, tf.float32), tf.gather(items, negatives)  # (K, D)
        label_items = tf.cast(tf.gather(items, labels), tf.float32)  # (M, D)
        positive = tf.reduce_sum(q32 * label_items, axis=-1) - label_q  # (M,)
        q = tf.cast(query, dtype)
        negative = tf.matmul(q, tf.cast(c, dtype), transpose_b=True)  # (M, K)
        negative = tf.cast(negative, tf.float32) - negative_q[tf.newaxis, :]
        negative = tf.where(drop, tf.constant(-1e9, tf.float32), negative)
        probs = tf.nn.softmax(tf.concat([positive[:, tf.newaxis], negative], axis=1))
        loss = -tf.math.log(tf.maximum(probs[:, 0], 1e-37))  # (M,)

        def grad(upstream):
            u = tf.cast(upstream, tf.float32)[:, tf.newaxis]  # (M, 1)
            qu = q32 * u
            # a zero row for column 0: probs @ [0; c] = the negatives' share of dquery
            padded = tf.concat([tf.zeros_like(c[:1]), c], axis=0)  # (1 + K, D)
            pq = tf.cast(probs, dtype)
            spread = tf.cast(tf.matmul(pq, tf.cast(padded, dtype)), tf.float32)  # (M, D)
            dq = (spread + (probs[:, :1] - 1.0) * label_items) * u
            dc = tf.matmul(tf.cast(qu, dtype), pq, transpose_a=True)  # (D, 1 + K)
            dc = tf.transpose(tf.cast(dc, tf.float32))[1:]  # (K, D)
            rows = tf.shape(items)[0]
            ditems = tf.math.unsorted_segment_sum(dc, negatives, rows)
            ditems += tf.math.unsorted_segment_sum((probs[:, :1] - 1.0) * qu, labels, rows)
            return tf.cast(dq, query.dtype), tf.cast(ditems, items.dtype)

        return loss, grad

    return run(query, items)


def logits_bytes_per_entry(bf16: bool, mask_seen: bool) -> int:
    """Bytes the default loss holds per (token, movie) entry at once: the logits, the
    masked logits and the softmax (bfloat16 or float32), and with the seen mask the
    mask and the int16 table it is compared from; what ``train.logits_mib`` bounds."""
    return 3 * (2 if bf16 else 4) + (3 if mask_seen else 0)


def loss_chunk(cfg: Config, catalog: int) -> int | None:
    """Rows (tokens) per chunk of the default loss, or None for one pass: a full batch
    (``batch_size x max_len`` tokens) has its ``(tokens, catalog)`` logits in one pass
    while they fit ``train.logits_mib``, in chunks that fit it otherwise."""
    per_row = catalog * logits_bytes_per_entry(cfg.train.bf16_logits, cfg.model.mask_seen)
    batch = cfg.train.batch_size if cfg.train.batch_size > 0 else 128
    bound = cfg.train.logits_mib * 2**20
    if bound <= 0 or batch * cfg.model.max_len * per_row <= bound:
        return None
    return max(1, int(bound // per_row))


class BSTTrainer(tf.keras.Model):
    """Wraps the functional model with its training loss (``fit``/``evaluate``).

    ``loss="softmax"``: cross-entropy over the full catalog at every real position.
    ``loss="sampled"``: with ``negatives="shared"``, a softmax over each position's
    target and ``num_negatives`` movies drawn for the batch (:class:`SharedNegatives`,
    :func:`sampled_cross_entropy`); with ``"in-batch"``, TFRS ``Retrieval`` over at most
    ``num_negatives`` positions per batch, their targets serving as each other's
    negatives; both with log-Q correction by training-item frequency. ``loss="auto"``
    is one of the two (:func:`bst.loss_choice.choose_loss`; :attr:`loss_kind` says which). With ``rating_head`` an MLP over [query, target item]
    predicts the rating (1..5) of the next event; its MSE is added with weight 0.1.

    Under a distribution strategy each replica's loss is its share of the global batch's
    (its sum over tokens divided by the tokens of every replica, :func:`global_count`;
    the sampled loss, a sum over its rows, and the layers' regularizers divided by the
    replicas), since the optimizer sums the replicas' gradients: R replicas give the
    gradients one device gives on the same global batch. The loss shown and logged is
    the global batch's.
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
        # (float32 accumulation) speed it up where bfloat16 is native (AMX/AVX512-BF16).
        self.logits_dtype = tf.bfloat16 if cfg.train.bf16_logits else None
        # Under XLA every shape is compiled once: the loss then covers every position of
        # the batch (padding weighted 0) instead of gathering the real ones (dynamic size).
        self.static_shapes = cfg.train.jit_compile == "true"
        # The schedule's planned steps (bst.optim.SchedulePlanner), saved with the backups.
        self.planned_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="planned_steps")
        # Seconds trained over the whole run up to the last backup (bst.clock.RunClock).
        self.elapsed_seconds = tf.Variable(
            0.0, trainable=False, dtype=tf.float64, name="elapsed_seconds"
        )
        if self.loss_kind not in ("auto", "softmax", "sampled"):
            raise ValueError(
                f"model.loss must be 'auto', 'softmax' or 'sampled'. Received: {self.loss_kind!r}"
            )
        if cfg.model.negatives not in ("shared", "in-batch"):
            raise ValueError(
                f"model.negatives must be 'shared' or 'in-batch'. Received: {cfg.model.negatives!r}"
            )
        self.items = model.encoder.items
        # Held-out movies (the cold-start protocol) are neither targets nor negatives:
        # training never sees them. They are the catalog's last rows, from num_trained on.
        self.num_trained = self.items.num_trained
        catalog = self.num_trained - F.NUM_RESERVED
        from bst.loss_choice import choose_loss  # it times this module's losses

        self.loss_kind, self.loss_reason = choose_loss(cfg, catalog)
        in_batch = self.loss_kind == "sampled" and cfg.model.negatives == "in-batch"
        self.num_negatives = cfg.model.num_negatives
        self.mask_seen = cfg.model.mask_seen and not in_batch
        # None: the full softmax's logits fit train.logits_mib in one pass (bst.train logs it)
        self.chunk = loss_chunk(cfg, catalog) if self.loss_kind == "softmax" else None
        freq = np.maximum(
            np.asarray(
                item_frequency if item_frequency is not None else np.ones(self.items.num_items),
                np.float64,
            ),
            1.0,
        )
        self.retrieval = self.negatives = None
        if in_batch:
            self.log_q = tf.constant(freq / freq.sum(), tf.float32)
            self.retrieval = tfrs.tasks.Retrieval(remove_accidental_hits=True, name="retrieval")
        elif self.loss_kind == "sampled":
            trained = freq[F.NUM_RESERVED : self.num_trained]
            self.negatives = SharedNegatives(trained, cfg.model.num_negatives)
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
        if self.negatives is not None:  # sampled softmax, negatives shared by the batch
            items = catalog[F.NUM_RESERVED : self.num_trained]  # (N - 2, D)
            negatives = self.negatives()  # (K,)
            mask = None
            if self.mask_seen:  # the negatives each token's history holds
                ids = tf.cast(features[F.MOVIE_ID], tf.int32)
                first = first_positions(ids, tf.shape(items)[0])  # (B, N - 2), small
                token = tf.where(valid)
                row, step = tf.cast(token[:, 0], tf.int32), tf.cast(token[:, 1], tf.int32)
                first = tf.gather(first, negatives, axis=1)  # (B, K)
                mask = tf.gather(first, row) <= step[:, tf.newaxis]  # (M, K)
            per_token = sampled_cross_entropy(
                q,
                items,
                t - F.NUM_RESERVED,
                negatives,
                self.negatives.log_q,
                mask,
                self.logits_dtype,
            )
            tokens = global_count(tf.cast(tf.size(per_token), tf.float32))
            loss = tf.math.divide_no_nan(tf.reduce_sum(per_token), tokens)
        elif self.retrieval is None and self.static_shapes:
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
            tokens = tf.maximum(global_count(tf.reduce_sum(weight)), 1.0)
            loss = -tf.reduce_sum(picked * weight) / tokens
        elif self.retrieval is None:
            # Only real movies are candidates: columns 0 and 1 (padding, unknown) are cut.
            # The matmul runs in bfloat16 with bf16_logits (accumulating in float32), else
            # in the compute dtype; the softmax keeps that dtype, the loss is float32.
            items = catalog[F.NUM_RESERVED : self.num_trained]  # (N - 2, D)
            if self.chunk is None:
                mask = None
                if self.mask_seen:
                    ids = tf.cast(features[F.MOVIE_ID], tf.int32)
                    mask = seen_mask(ids, target, valid, tf.shape(items)[0])  # (M, N - 2)
                per_token = catalog_cross_entropy(  # (M,) float32
                    q, items, t - F.NUM_RESERVED, mask, self.logits_dtype
                )
            else:  # a catalog whose logits would not fit: chunks of tokens, same loss
                mask_rows = None
                if self.mask_seen:
                    ids = tf.cast(features[F.MOVIE_ID], tf.int32)
                    first = first_positions(ids, tf.shape(items)[0])  # (B, N - 2), small
                    token = tf.where(valid)
                    row, step = tf.cast(token[:, 0], tf.int32), tf.cast(token[:, 1], tf.int32)
                    label = t - F.NUM_RESERVED

                    def mask_rows(start, end):
                        return seen_rows(first, row[start:end], step[start:end], label[start:end])

                per_token = chunked_catalog_cross_entropy(
                    q, items, t - F.NUM_RESERVED, self.chunk, mask_rows, self.logits_dtype
                )
            # the global batch's mean, and 0 (not NaN) for a batch without a valid target
            tokens = global_count(tf.cast(tf.size(per_token), tf.float32))
            loss = tf.math.divide_no_nan(tf.reduce_sum(per_token), tokens)
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
            ) / float(replicas())
        if self.rating_head is not None:
            rating = tf.cast(labels[F.NEXT_RATING], tf.int32)
            known = valid & (rating >= F.NUM_RESERVED)
            rq = tf.cast(tf.boolean_mask(query, known), tf.float32)
            rt = tf.boolean_mask(target, known)
            true = tf.cast(tf.boolean_mask(rating, known) - F.NUM_RESERVED + 1, tf.float32)
            pred = self.predict_rating(rq, tf.cast(tf.gather(catalog, rt), tf.float32))
            # 0 (not NaN) for a batch without a known rating
            squared = tf.reduce_sum(tf.square(pred - true))
            rated = global_count(tf.cast(tf.size(true), tf.float32))
            loss += 0.1 * tf.math.divide_no_nan(squared, rated)
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
            if self.model.losses:  # layer regularizers, if any (once over the replicas)
                penalty = tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses])
                loss += penalty / float(replicas())
            scaled = (
                self.optimizer.get_scaled_loss(loss)
                if hasattr(self.optimizer, "get_scaled_loss")
                else loss
            )
        grads = tape.gradient(scaled, self.trainable_variables)
        if hasattr(self.optimizer, "get_unscaled_gradients"):
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        # the metric averages the replicas' values: R shares of the mean make the mean
        self.loss_tracker.update_state(loss * float(replicas()))
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
        self.loss_tracker.update_state(loss * float(replicas()))
        return {m.name: m.result() for m in self.metrics}
