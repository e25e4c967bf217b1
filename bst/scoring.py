"""Scoring a model for evaluation: every evaluated user of a split, aligned to the targets.

Evaluation targets and histories come from ``sequences.tsv``
(:meth:`bst.data.prepared.Prepared.eval_split`, in :class:`bst.metrics.EvalData`);
the model's inputs come from the split's TFRecord shards through the same
``tf.data`` featurizer as training. :func:`aligned_scores` joins the two by user id,
in one place, so training's per-epoch validation and ``bst.evaluate`` rank the
same rows the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2
from tqdm.auto import tqdm

from bst import config as config_lib
from bst import features as F
from bst.config import Config
from bst.errors import DataError
from bst.metrics import KS, EvalData, ScoreFn, evaluate_scores, load_eval_data
from bst.model import model_inputs
from bst.pipeline import make_dataset

SEQUENCE_INPUTS = (F.MOVIE_ID, F.TIME_GAP, F.RATING)


@dataclass(frozen=True)
class SplitInputs:
    """A split's model inputs, featurized once (read from the shards through ``tf.data``)."""

    users: np.ndarray  # str [U]
    inputs: dict[str, np.ndarray]  # model inputs: int32 [U, L] sequences, [U] profile
    lengths: np.ndarray  # int64 [U], real events per row

    @classmethod
    def read(cls, cfg: Config, split: str) -> SplitInputs:
        uncached = config_lib.replace(cfg, {"data.cache": False})  # kept here, not in tf.data
        parts: dict[str, list[np.ndarray]] = {}
        for features, _ in make_dataset(uncached, split, batch_size=1024, shuffle=False):
            for name, value in {**model_inputs(features), F.USER_ID: features[F.USER_ID]}.items():
                parts.setdefault(name, []).append(value.numpy())
        data = {name: np.concatenate(values) for name, values in parts.items()}
        users = data.pop(F.USER_ID).astype(str)
        return cls(users, data, (data[F.MOVIE_ID] > 0).sum(axis=1))

    def subset(self, users: np.ndarray) -> SplitInputs:
        """The rows of ``users`` (ids), in that order."""
        order = {u: i for i, u in enumerate(self.users)}
        rows = np.array([order[u] for u in users], dtype=np.int64)
        return SplitInputs(
            self.users[rows], {k: v[rows] for k, v in self.inputs.items()}, self.lengths[rows]
        )


class Scorer:
    """Last-position scores of every catalog item, through the servable's path: the
    model's :class:`bst.model.Encoder` with ``last_only=True`` and the catalog's item
    vectors computed once per call. Traced once (dynamic batch and length)."""

    def __init__(self, model: tf.keras.Model):
        self.model = model
        spec = {
            name: tf.TensorSpec([None, None] if name in SEQUENCE_INPUTS else [None], tf.int32)
            for name in model.input_names
        }
        self._catalog = tf.function(self._catalog_vectors)
        self._scores = tf.function(
            self._scores_of, input_signature=[spec, tf.TensorSpec([None, None], tf.float32)]
        )

    def _catalog_vectors(self) -> tf.Tensor:
        return tf.cast(self.model.encoder.items.all_items(), tf.float32)  # (N, D)

    def _scores_of(self, features: dict[str, tf.Tensor], catalog: tf.Tensor) -> tf.Tensor:
        query = self.model.encoder(features, training=False, last_only=True, catalog=catalog)
        return tf.matmul(tf.cast(query[:, 0], tf.float32), catalog, transpose_b=True)  # (B, N)

    def __call__(
        self, data: SplitInputs, batch_size: int = 256, progress: str | None = None
    ) -> np.ndarray:
        """float32 ``[U, N]`` scores in the row order of ``data`` (every user at once: for
        small data; :func:`model_score_fn` scores a split in bounded memory)."""
        order = np.argsort(data.lengths, kind="stable")
        scores = np.empty((len(order), self.catalog_size()), np.float32)
        bar = tqdm(total=len(order), desc=progress, unit="user", leave=False, disable=None)
        with bar:
            for start in range(0, len(order), 4 * batch_size):
                rows = order[start : start + 4 * batch_size]
                scores[rows] = self.score_rows(data, rows, batch_size)
                bar.update(len(rows))
        return scores

    def catalog_size(self) -> int:
        return int(self.model.encoder.items.num_items)

    def score_rows(self, data: SplitInputs, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """float32 ``[len(rows), N]``: the scores of ``data``'s ``rows``, in that order.

        Each batch of ``batch_size`` rows is cut to its longest history: padded positions
        take no part, so this changes no score, and rows of similar length (the caller
        passes them in order of length) skip most of the padding's work. Batches of 256
        keep the (B, heads, L, L) attention tensors of the lower blocks small enough to
        stay in cache on a CPU.
        """
        catalog = self._catalog()
        scores = np.empty((len(rows), int(catalog.shape[0])), np.float32)
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            keep = max(int(data.lengths[part].max()), 1)
            batch = {
                name: (value[part][:, -keep:] if value.ndim == 2 else value[part])
                for name, value in data.inputs.items()
            }
            scores[start : start + len(part)] = self._scores(batch, catalog).numpy()
        return scores


def align(users: np.ndarray, data: EvalData, what: str) -> np.ndarray:
    """Row of ``users`` for each user of ``data`` (the evaluation targets), or one DataError."""
    order = {u: i for i, u in enumerate(users)}
    missing = [u for u in data.user_ids if u not in order]
    if missing:
        raise DataError(
            f"{len(missing)} users of sequences.tsv are missing from {what} "
            f"(first: {missing[0]}): re-run pipelines.prepare"
        )
    return np.array([order[u] for u in data.user_ids], dtype=np.int64)


def aligned_scores(
    model: tf.keras.Model,
    cfg: Config,
    split: str,
    data: EvalData,
    inputs: SplitInputs | None = None,
    scorer: Scorer | None = None,
) -> np.ndarray:
    """float32 ``[U, N]`` model scores in the row order of ``data`` (the whole matrix at
    once, for small data; evaluation takes :func:`model_score_fn`'s chunks)."""
    score_fn, order = model_score_fn(model, cfg, split, data, inputs, scorer)
    scores = score_fn(order)  # (U, N) in order of history length
    aligned = np.empty_like(scores)
    aligned[order] = scores
    return aligned


def model_score_fn(
    model: tf.keras.Model,
    cfg: Config,
    split: str,
    data: EvalData,
    inputs: SplitInputs | None = None,
    scorer: Scorer | None = None,
) -> tuple[ScoreFn, np.ndarray]:
    """``(score_fn, order)`` for :func:`bst.metrics.evaluate_scores`: the model's scores of
    ``data``'s users (positions), a chunk at a time, and the positions in order of
    history length, so each chunk's batches are cut to little padding. Memory stays a
    chunk's ``[users, N]`` scores, never the whole split's."""
    inputs = inputs or SplitInputs.read(cfg, split)
    rows = align(inputs.users, data, f"the {split} TFRecord shards of {cfg.data.prepared_dir}")
    scorer = scorer or Scorer(model)
    order = np.argsort(inputs.lengths[rows], kind="stable")
    return (lambda positions: scorer.score_rows(inputs, rows[positions])), order


def rank_metrics(
    model: tf.keras.Model,
    cfg: Config,
    split: str,
    data: EvalData | None = None,
    inputs: SplitInputs | None = None,
    scorer: Scorer | None = None,
) -> dict:
    """Full-ranking metrics of the model on ``split`` (seen items excluded), in bounded
    memory (:func:`model_score_fn`)."""
    data = data or load_eval_data(cfg.data.prepared_dir, split)
    score_fn, order = model_score_fn(model, cfg, split, data, inputs, scorer)
    metrics, _, _ = evaluate_scores(score_fn, data, ks=KS, order=order, progress=f"ranking {split}")
    return metrics
