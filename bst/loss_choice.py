"""Which loss ``model.loss=auto`` trains with (:func:`choose_loss`), and the loss step on
a random batch it times on a CPU (also what ``benchmarks/catalog_loss.py`` reports)."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst import features as F
from bst.config import Config
from bst.task import (
    SharedNegatives,
    catalog_cross_entropy,
    chunked_catalog_cross_entropy,
    first_positions,
    loss_chunk,
    sampled_cross_entropy,
    seen_mask,
    seen_rows,
)


def loss_step(
    cfg: Config,
    catalog: int,
    kind: str,
    chunk: int | None = None,
    popularity: np.ndarray | None = None,
    seed: int = 0,
):
    """A traced step (forward and backward, seen mask) of the full softmax (``kind``
    ``softmax``: in one pass, or in chunks of ``chunk`` tokens) or the ``sampled`` loss
    over ``catalog`` movies, on a random batch shaped like ``cfg``'s
    (``train.batch_size`` windows of random lengths up to ``model.max_len``, random
    movies, ``model.dim``; bfloat16 logits as ``train.bf16_logits`` says).

    Returns ``(step, tokens, negatives)``: ``step()`` gives ``(loss, gradients)``;
    ``negatives`` draws by ``popularity`` (default: random counts).
    """
    rng = np.random.default_rng(seed)
    batch = cfg.train.batch_size if cfg.train.batch_size > 0 else 128
    length, dim = cfg.model.max_len, cfg.model.dim
    lengths = np.minimum(rng.integers(20, 2 * length, batch), length)
    ids = np.zeros((batch, length), np.int32)
    for row, n in enumerate(lengths):
        ids[row, length - n :] = rng.integers(F.NUM_RESERVED, catalog + F.NUM_RESERVED, n)
    target = np.zeros_like(ids)
    target[:, :-1] = ids[:, 1:]
    target[:, -1] = rng.integers(F.NUM_RESERVED, catalog + F.NUM_RESERVED, batch)
    target[ids == 0] = 0
    ids_t, target_t = tf.constant(ids), tf.constant(target)
    valid = target_t >= F.NUM_RESERVED
    tokens = int(tf.reduce_sum(tf.cast(valid, tf.int32)))
    query = tf.Variable(rng.normal(size=(tokens, dim)).astype(np.float32) * 0.3)
    items = tf.Variable(rng.normal(size=(catalog, dim)).astype(np.float32) * 0.3)
    labels = tf.boolean_mask(target_t, valid) - F.NUM_RESERVED
    dtype = tf.bfloat16 if cfg.train.bf16_logits else None
    if popularity is None:
        popularity = rng.random(catalog) * 100 + 1
    negatives = SharedNegatives(popularity, cfg.model.num_negatives)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            token = tf.where(valid)
            row, pos = tf.cast(token[:, 0], tf.int32), tf.cast(token[:, 1], tf.int32)
            if kind == "sampled":
                drawn = negatives()
                first = tf.gather(first_positions(ids_t, catalog), drawn, axis=1)
                mask = tf.gather(first, row) <= pos[:, tf.newaxis]
                loss = sampled_cross_entropy(
                    query, items, labels, drawn, negatives.log_q, mask, dtype
                )
            elif chunk is None:
                mask = seen_mask(ids_t, target_t, valid, catalog)
                loss = catalog_cross_entropy(query, items, labels, mask, dtype)
            else:
                first = first_positions(ids_t, catalog)

                def rows(a, z):
                    return seen_rows(first, row[a:z], pos[a:z], labels[a:z])

                loss = chunked_catalog_cross_entropy(query, items, labels, chunk, rows, dtype)
            loss = tf.reduce_mean(loss)
        return loss, tape.gradient(loss, [query, items])

    return step, tokens, negatives


def time_loss_step(cfg: Config, catalog: int, kind: str, steps: int = 3, seed: int = 0) -> float:
    """Seconds of one step of the full (``softmax``, one pass) or ``sampled`` loss over
    ``catalog`` movies (:func:`loss_step`): the fastest of ``steps`` after a traced
    warm-up. What ``model.loss=auto`` measures."""
    step, _, _ = loss_step(cfg, catalog, kind, seed=seed)
    step()  # trace and warm up
    best = float("inf")
    for _ in range(max(steps, 1)):
        started = time.perf_counter()
        _, grads = step()
        float(tf.reduce_sum(grads[0]))  # wait for the step
        best = min(best, time.perf_counter() - started)
    return best


# model.loss=auto on a CPU, where the full softmax fits: sampled when one step of the full
# softmax measures at least this many times one of the sampled loss (slow matrix
# products); there the sampled loss reached the validation marks sooner (docs/results.md,
# "Full and sampled softmax on ML-1M").
SLOW_FULL_SOFTMAX = 1.25


def choose_loss(
    cfg: Config, catalog: int, measured: tuple[float, float] | None = None
) -> tuple[str, str]:
    """``(loss, why)``: the loss ``cfg`` trains with over ``catalog`` movies, ``softmax``
    or ``sampled``. Any ``model.loss`` but ``auto`` is used as given. ``auto`` is
    ``sampled`` (shared negatives) past ``train.logits_mib`` (there the full softmax
    would run over chunks of tokens, many times slower a step: docs/results.md, "The
    loss at growing catalogs"); below it, ``softmax``, unless ``measured`` (seconds of
    one step of the full and of the sampled loss on this machine,
    :func:`bst.loss_timing.time_loss_step`) says the full softmax is at least
    :data:`SLOW_FULL_SOFTMAX` times slower."""
    if cfg.model.loss != "auto":
        return cfg.model.loss, f"model.loss={cfg.model.loss}"
    if loss_chunk(cfg, catalog) is not None:
        return "sampled", (
            "model.loss=auto: a full batch's logits would not fit train.logits_mib, and the "
            "sampled loss is many times faster a step there than the chunked full softmax"
        )
    if measured is not None:
        full, sampled = measured
        ratio = full / max(sampled, 1e-9)
        verdict = "sampled" if ratio >= SLOW_FULL_SOFTMAX else "softmax"
        return verdict, (
            f"model.loss=auto: a full batch's logits fit train.logits_mib; one loss step "
            f"measured {1000 * full:.0f} ms with the full softmax and {1000 * sampled:.0f} "
            f"ms sampled here ({ratio:.2f}x; the sampled loss is chosen from "
            f"{SLOW_FULL_SOFTMAX}x, where matrix products are slow enough that it reached "
            "the validation marks sooner)"
        )
    return "softmax", "model.loss=auto: a full batch's logits fit train.logits_mib"
