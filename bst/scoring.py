"""Scoring a model for evaluation: every evaluated user of a split, aligned to the targets.

Evaluation targets and histories come from ``sequences.tsv``
(:meth:`bst.data.prepared.Prepared.eval_split`, in :class:`bst.metrics.EvalData`);
the model's inputs come from the split's TFRecord shards through the same
``tf.data`` featurizer as training. :func:`aligned_scores` joins the two by user id,
in one place, so training's per-epoch validation and ``bst.evaluate`` rank the
same rows the same way.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst import features as F
from bst.config import Config
from bst.errors import DataError
from bst.metrics import KS, EvalData, evaluate_scores, load_eval_data
from bst.model import model_inputs
from bst.pipeline import make_dataset


def predict_scores(
    model: tf.keras.Model, cfg: Config, split: str, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, last-position scores ``[U, N]``) for every evaluated user of ``split``.

    Users are scored in order of history length, each batch cut to its longest
    history: padded positions take no part, so this changes no score and skips
    about half the work on ML-1M.
    """

    @tf.function(reduce_retracing=True)
    def scores_of(features):
        return model(features, training=False)["scores"]

    parts: dict[str, list[np.ndarray]] = {}
    for features, _ in make_dataset(cfg, split, batch_size=1024, shuffle=False):
        for name, value in {**model_inputs(features), F.USER_ID: features[F.USER_ID]}.items():
            parts.setdefault(name, []).append(value.numpy())
    data = {name: np.concatenate(values) for name, values in parts.items()}
    users = data.pop(F.USER_ID).astype(str)
    lengths = (data[F.MOVIE_ID] > 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    scores = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        keep = max(int(lengths[rows].max()), 1)
        batch = {
            name: (value[rows][:, -keep:] if value.ndim == 2 else value[rows])
            for name, value in data.items()
        }
        out = scores_of(batch).numpy()
        if scores is None:
            scores = np.empty((len(users), out.shape[1]), np.float32)
        scores[rows] = out
    return users, scores


def aligned_scores(model: tf.keras.Model, cfg: Config, split: str, data: EvalData) -> np.ndarray:
    """float32 ``[U, N]`` model scores in the row order of ``data``."""
    users, scores = predict_scores(model, cfg, split)  # (U, N)
    order = {u: i for i, u in enumerate(users)}
    missing = [u for u in data.user_ids if u not in order]
    if missing:
        raise DataError(
            f"{len(missing)} {split} users of sequences.tsv are missing from the {split} "
            f"TFRecord shards of {cfg.data.prepared_dir} (first: {missing[0]}): re-run "
            "pipelines.prepare"
        )
    return scores[np.array([order[u] for u in data.user_ids], dtype=np.int64)]


def rank_metrics(
    model: tf.keras.Model, cfg: Config, split: str, data: EvalData | None = None
) -> dict:
    """Full-ranking metrics of the model on ``split`` (seen items excluded)."""
    data = data or load_eval_data(cfg.data.prepared_dir, split)
    scores = aligned_scores(model, cfg, split, data)
    metrics, _, _ = evaluate_scores(lambda rows: scores[rows], data, ks=KS)
    return metrics
