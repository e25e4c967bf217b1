"""Full-catalog ranking metrics under the leave-one-out protocol the field compares on.

For every evaluated user the whole catalog (every movie index >= 2 of the training
vocabulary) is ranked, never a sample of negatives: sampled metrics reorder models
and inflate every number. Items already in the user's history (all of it, not just
a model's ``max_len`` window) are excluded, except the target itself when it is in
the history (a re-watch), so a re-watched target can still be hit.

Conventions, chosen so that no model gets credit it did not earn:

* **Pessimistic ties.** An item whose score equals the target's counts as ranked
  above it, so ``rank = #{candidates with score >= target score}`` (the target
  included). A constant-score model therefore ranks every target last, instead of
  first (optimistic) or in the middle (random tie-breaking).
* **OOV targets are misses.** A target that never occurs in training has index 1
  (OOV): no model can score it, so its rank is ``inf`` (HR = NDCG = 1/rank = 0),
  and the number of such users is reported as ``oov_targets``.
* HR@K (= Recall@K with one target), NDCG@K = 1/log2(rank + 1) if rank <= K else 0,
  MRR = mean of 1/rank with no cutoff, and catalog coverage@10 = the fraction of
  catalog items that appear in at least one user's top 10.

Everything here is numpy (no TensorFlow) so baselines, models and notebooks share
one implementation. A ``score_fn`` returns dense scores ``[b, N]`` over all ``N``
item indices (columns 0 and 1, PAD and OOV, are ignored).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from bst import features as F
from bst.data.prepared import Prepared

VALIDATION, TEST = "validation", "test"
KS = (1, 3, 5, 10, 20)  # the cutoffs every report uses (NDCG@3 for the seed notebooks)
COVERAGE_K = 10
LENGTH_BUCKETS = (0, 20, 50, 100, 200, 500, math.inf)
SELECTION_METRIC = "ndcg@10"  # early stopping and checkpoint choice, on validation
EPOCH_METRICS = ("hr@10", "ndcg@10", "mrr")  # the per-epoch validation log line


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """Every metric :func:`evaluate_scores` reports, in table order:
    ``hr@K`` for each K, ``ndcg@K`` for each K, ``mrr``, ``coverage@10``."""
    return [
        *(f"hr@{k}" for k in ks),
        *(f"ndcg@{k}" for k in ks),
        "mrr",
        f"coverage@{COVERAGE_K}",
    ]


MODEL_NAME = "BST"
"""The model's row name in every results table."""
TABLE_METRICS = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr", "coverage@10")
"""The columns of every results table (``bst.train``, ``bst.evaluate``, the README)."""
REPORT_METRICS = (*TABLE_METRICS[:4], "ndcg@3", "ndcg@5", *TABLE_METRICS[4:])
"""The columns of ``bst.evaluate``'s report (NDCG@3/5 too, for the seed notebooks)."""

ScoreFn = Callable[[np.ndarray], np.ndarray]


# --- the seen-items structure ------------------------------------------------------


@dataclass(frozen=True)
class SeenItems:
    """Each user's distinct history items (indices >= 2) in CSR form, built once.

    Row ``u`` is ``indices[indptr[u]:indptr[u + 1]]`` (sorted). Masking all seen
    items of a batch is then one fancy-index assignment, with no loop over users.

    Attributes:
        indptr: int64 ``[U + 1]``. Row offsets into ``indices``.
        indices: int32 ``[nnz]``. Item indices, sorted and unique within a row.
    """

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_histories(cls, histories: Sequence[np.ndarray]) -> SeenItems:
        rows = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]
        rows = [r[r >= F.NUM_RESERVED] for r in rows]  # PAD/OOV are excluded anyway
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
        return cls(indptr, indices)

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    def row(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u] : self.indptr[u + 1]]

    def take(self, rows: slice | Sequence[int] | np.ndarray) -> SeenItems:
        """The sub-structure for some users (a slice is cheap: no copy of ``indices``)."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.num_rows)
            if step == 1:
                ptr = self.indptr[start : max(start, stop) + 1]
                return SeenItems(ptr - ptr[0], self.indices[ptr[0] : ptr[-1]])
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # old offset of each kept entry = its new offset + (old row start - new row start)
        starts = np.repeat(self.indptr[rows] - indptr[:-1], lengths)
        return SeenItems(indptr, self.indices[starts + np.arange(indptr[-1])])

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(row ids ``[nnz]``, item ids ``[nnz]``) for masking a ``[U, N]`` score matrix."""
        rows = np.repeat(np.arange(self.num_rows), np.diff(self.indptr))
        return rows, self.indices


def _as_seen(seen: SeenItems | Sequence[np.ndarray] | None, num_rows: int) -> SeenItems:
    if seen is None:
        seen = SeenItems(np.zeros(num_rows + 1, np.int64), np.zeros(0, np.int32))
    elif not isinstance(seen, SeenItems):
        seen = SeenItems.from_histories(seen)
    if seen.num_rows != num_rows:
        raise ValueError(
            f"`seen` must have one row per score row. Received: {seen.num_rows} rows "
            f"for scores with {num_rows} rows"
        )
    return seen


# --- data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalData:
    """Evaluated users of one split: full histories, held-out targets, seen items.

    Attributes:
        user_ids: str ``[U]``.
        histories: per user, int32 ``[n]`` item indices of every event before the target
            (the whole history, oldest first; a model may use only its last ``max_len``).
        targets: int64 ``[U]``. The held-out item index (1 = OOV: a guaranteed miss).
        num_items: ``N``, the movie vocabulary size including the 2 reserved indices.
        seen: the distinct history items per user, excluded from the ranking.
    """

    user_ids: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray
    num_items: int
    seen: SeenItems = field(repr=False)

    @classmethod
    def from_histories(
        cls,
        histories: Sequence[np.ndarray],
        targets: Sequence[int] | np.ndarray,
        num_items: int,
        user_ids: Sequence[str] | None = None,
    ) -> EvalData:
        histories = [np.asarray(h, dtype=np.int32) for h in histories]
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if len(targets) != len(histories):
            raise ValueError(
                f"one target per history expected. Received: {len(targets)} targets, "
                f"{len(histories)} histories"
            )
        if user_ids is None:
            user_ids = [str(i) for i in range(len(histories))]
        return cls(
            user_ids=np.asarray(user_ids, dtype=str),
            histories=histories,
            targets=targets,
            num_items=int(num_items),
            seen=SeenItems.from_histories(histories),
        )

    @property
    def num_users(self) -> int:
        return len(self.targets)

    def sample(self, users: int, seed: int) -> EvalData:
        """A fixed random ``users`` of these users (all of them when there are no more),
        in their order here: the same ``seed`` gives the same users, whatever their
        order (the users of the smallest seeded hashes of their ids; a folder prepared
        on Beam lists them in another order)."""
        if users <= 0 or users >= self.num_users:
            return self
        keys = np.fromiter(
            (zlib.crc32(f"{seed}:{u}".encode()) for u in self.user_ids.tolist()),
            dtype=np.int64,
            count=self.num_users,
        )
        rows = np.sort(np.argsort(keys, kind="stable")[:users])
        return EvalData.from_histories(
            [self.histories[r] for r in rows],
            self.targets[rows],
            self.num_items,
            self.user_ids[rows],
        )

    @property
    def history_lengths(self) -> np.ndarray:
        """int64 ``[U]``: events before the target, for :func:`by_history_length`."""
        return np.array([len(h) for h in self.histories], dtype=np.int64)


def load_eval_data(prepared: Prepared | str | os.PathLike, split: str) -> EvalData:
    """Users evaluated on ``split`` ('validation' or 'test') of a prepared folder
    (targets and histories: :meth:`bst.data.prepared.Prepared.eval_split`)."""
    if split not in (VALIDATION, TEST):
        raise ValueError(f"`split` must be 'validation' or 'test'. Received: split={split!r}")
    part = Prepared.open(prepared).eval_split(split)
    return EvalData.from_histories(
        histories=part.histories,
        targets=part.targets,
        num_items=part.num_items,
        user_ids=part.user_ids,
    )


# --- ranking ------------------------------------------------------------------------


def _float_copy(scores: np.ndarray) -> np.ndarray:
    """A writable float copy (float32 unless the input needs more), checked for NaN."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be [users, items]. Received: shape {scores.shape}")
    dtype = np.float64 if scores.dtype in (np.float64, np.int64, np.uint64) else np.float32
    out = np.array(scores, dtype=dtype, copy=True)
    if np.isnan(out).any():
        raise ValueError("`scores` contain NaN: the model or baseline produced invalid scores")
    return out


def _mask_excluded(scores: np.ndarray, seen: SeenItems, value: float) -> None:
    """Set PAD, OOV and every seen item to ``value``, in place."""
    scores[:, : F.NUM_RESERVED] = value
    rows, cols = seen.coordinates()
    scores[rows, cols] = value


def target_ranks(
    scores: np.ndarray,
    targets: np.ndarray | Sequence[int],
    seen: SeenItems | Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """1-based rank of each target among the user's candidate items.

    Candidates are all item indices >= 2 not in ``seen``, plus the target itself
    (so a re-watched target can be hit). Ties count against the target.

    Args:
        scores: float ``[U, N]``. Higher is better; any real values, ``-inf`` allowed.
        targets: int ``[U]`` item indices; indices 0 and 1 (PAD/OOV) give ``inf``.
        seen: ``SeenItems`` with ``U`` rows (or one history array per user).

    Returns:
        float64 ``[U]``: ranks in ``1..N-2``, ``inf`` for OOV targets.
    """
    scores = _float_copy(scores)  # (U, N)
    num_users, num_items = scores.shape
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(targets) != num_users:
        raise ValueError(
            f"one target per score row expected. Received: {len(targets)} targets for "
            f"{num_users} rows"
        )
    if (targets < 0).any() or (targets >= num_items).any():
        raise ValueError(
            f"targets must be item indices in [0, {num_items}). Received: "
            f"min {targets.min()}, max {targets.max()}"
        )
    seen = _as_seen(seen, num_users)
    rankable = targets >= F.NUM_RESERVED
    rows = np.arange(num_users)
    target_score = scores[rows, targets]  # (U,)
    _mask_excluded(scores, seen, np.nan)  # NaN compares False: never counted
    scores[rows[rankable], targets[rankable]] = target_score[rankable]
    with np.errstate(invalid="ignore"):
        ranks = np.count_nonzero(scores >= target_score[:, None], axis=1).astype(np.float64)
    ranks[~rankable] = np.inf
    return ranks


def top_k(scores: np.ndarray, seen: SeenItems | Sequence[np.ndarray] | None, k: int) -> np.ndarray:
    """The ``k`` best unseen catalog items per row, best first.

    ``np.argpartition`` keeps this O(N) per row. Among equal scores the lower index
    comes first, but which of several tied items make the cut at position ``k`` is
    arbitrary. When fewer than ``k`` recommendable items exist (or ``k`` exceeds the
    catalog) the row is padded with 0 (PAD); an item scored ``-inf`` (or the lowest
    finite float) counts as not recommendable.

    Returns:
        int64 ``[U, k]`` item indices.
    """
    if k < 1:
        raise ValueError(f"`k` must be positive. Received: k={k}")
    scores = _float_copy(scores)  # (U, N)
    num_users, num_items = scores.shape
    # a finite sentinel, not -inf or NaN: numpy's partition is several times slower on those
    floor = np.finfo(scores.dtype).min
    _mask_excluded(scores, _as_seen(seen, num_users), floor)
    kk = min(k, num_items - F.NUM_RESERVED)
    out = np.zeros((num_users, k), dtype=np.int64)
    if kk <= 0 or num_users == 0:
        return out
    best = np.argpartition(scores, -kk, axis=1)[:, -kk:]  # (U, kk), unordered
    values = np.take_along_axis(scores, best, axis=1)  # (U, kk)
    order = np.lexsort((best, -values), axis=1)  # by score descending, then by index
    best = np.take_along_axis(best, order, axis=1)
    best[np.take_along_axis(values, order, axis=1) <= floor] = F.PAD
    out[:, :kk] = best
    return out


# --- summaries ----------------------------------------------------------------------


def summarize(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float | int]:
    """HR@K, NDCG@K for each K, MRR, and the counts behind them.

    Returns keys ``hr@K``, ``ndcg@K``, ``mrr``, ``users`` and ``oov_targets``; metrics
    are NaN when there are no users.
    """
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1)
    out: dict[str, float | int] = {}
    empty = len(ranks) == 0
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = math.nan if empty else float(hit.mean())
        gain = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1.0) + 1.0), 0.0)
        out[f"ndcg@{k}"] = math.nan if empty else float(gain.mean())
    out["mrr"] = math.nan if empty else float((1.0 / ranks).mean())
    out["users"] = len(ranks)
    out["oov_targets"] = int(np.isinf(ranks).sum())
    return out


SCORE_ENTRIES = 2**24  # a chunk's [users, N] scores: at most this many (64 MiB in float32)


def evaluate_scores(
    score_fn: ScoreFn,
    data: EvalData,
    batch_size: int | None = None,
    ks: Sequence[int] = KS,
    order: np.ndarray | None = None,
    progress: str | None = None,
) -> tuple[dict[str, float | int], np.ndarray, np.ndarray]:
    """Score, rank and summarize every user of ``data``, ``batch_size`` users at a time.

    Args:
        score_fn: ``score_fn(user_positions: int64 [b]) -> [b, N]`` scores, where the
            positions index ``data`` (``data.histories[i]`` etc.); models and baselines
            alike. Chunking bounds memory to a few ``batch_size * N`` arrays, whatever
            the number of users.
        data: the evaluated users.
        batch_size: users per ``score_fn`` call; None = 1024, or fewer so that a chunk's
            scores hold at most :data:`SCORE_ENTRIES` (284 users at 59 k movies).
        ks: cutoffs for HR and NDCG.
        order: the positions in the order to score them (a model scores users of similar
            history length together); None = ``0 .. U-1``. The results do not depend on it.
        progress: a progress bar's label (shown on a terminal only); None = no bar.

    Returns:
        (metrics with ``coverage@10`` and ``catalog_items`` added, ranks float64 ``[U]``,
        top-10 item indices int64 ``[U, 10]``), both in the order of ``data``.
    """
    if batch_size is None:
        batch_size = max(1, min(1024, SCORE_ENTRIES // max(data.num_items, 1)))
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive. Received: batch_size={batch_size}")
    n = data.num_users
    positions = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    if len(positions) != n or (n and not np.array_equal(np.sort(positions), np.arange(n))):
        raise ValueError(f"`order` must be a permutation of the {n} users' positions")
    ranks = np.empty(n, dtype=np.float64)
    top = np.zeros((n, COVERAGE_K), dtype=np.int64)
    bar = tqdm(total=n, desc=progress, unit="user", leave=False, disable=None if progress else True)
    with bar:
        for start in range(0, n, batch_size):
            rows = positions[start : start + batch_size]
            scores = np.asarray(score_fn(rows))  # (b, N)
            if scores.shape != (len(rows), data.num_items):
                raise ValueError(
                    f"score_fn must return [batch, num_items] = {[len(rows), data.num_items]}. "
                    f"Received: shape {list(scores.shape)}"
                )
            seen = data.seen.take(rows if order is not None else slice(start, start + len(rows)))
            ranks[rows] = target_ranks(scores, data.targets[rows], seen)
            top[rows] = top_k(scores, seen, COVERAGE_K)
            bar.update(len(rows))
    metrics = summarize(ranks, ks)
    catalog = data.num_items - F.NUM_RESERVED
    recommended = np.unique(top[top >= F.NUM_RESERVED])
    metrics[f"coverage@{COVERAGE_K}"] = len(recommended) / catalog if catalog else math.nan
    metrics["catalog_items"] = catalog
    return metrics, ranks, top


def by_history_length(
    ranks: np.ndarray,
    lengths: np.ndarray,
    buckets: Sequence[float] = LENGTH_BUCKETS,
) -> list[dict[str, float | int | str]]:
    """HR@10 and NDCG@10 per history-length bucket ``[lo, hi)``.

    Sequential models should gain most on long histories; a flat profile across
    buckets says the model is not using the sequence. Empty buckets are kept (NaN
    metrics) so tables from different models line up.
    """
    return by_bucket(ranks, lengths, buckets)


# Training ratings of the target movie: 0 (never rated in training: OOV or cold), rare
# (1-4, 5-19), then the body and the head of the catalog.
TARGET_COUNT_BUCKETS = (0, 1, 5, 20, 100, math.inf)


def by_target_count(
    ranks: np.ndarray,
    targets: np.ndarray,
    train_counts: np.ndarray,
    buckets: Sequence[float] = TARGET_COUNT_BUCKETS,
) -> list[dict[str, float | int | str]]:
    """HR@10 and NDCG@10 by how often the target movie was rated in training: where a
    content feature (overview text, genres) must carry a model that ids alone cannot.

    ``targets``: item index per row (1 = OOV, counted as 0 ratings); ``train_counts``:
    ``[N]`` training ratings per item index (:meth:`Prepared.train_item_counts`).
    """
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    counts = np.where(targets >= F.NUM_RESERVED, np.asarray(train_counts)[targets], 0)
    return by_bucket(ranks, counts, buckets)


def by_bucket(
    ranks: np.ndarray, values: np.ndarray, buckets: Sequence[float]
) -> list[dict[str, float | int | str]]:
    """HR@10 and NDCG@10 of the rows whose ``values`` fall in each bucket ``[lo, hi)``
    (empty buckets kept, with NaN metrics, so tables from different models line up)."""
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1)
    lengths = np.asarray(values).reshape(-1)
    if len(ranks) != len(lengths):
        raise ValueError(
            f"one value per rank expected. Received: {len(lengths)} values, {len(ranks)} ranks"
        )
    rows = []
    for lo, hi in zip(buckets[:-1], buckets[1:], strict=True):
        inside = (lengths >= lo) & (lengths < hi)
        if math.isinf(hi):
            label = f"{int(lo)}+"
        elif hi - lo == 1:
            label = f"{int(lo)}"
        else:
            label = f"{int(lo)}-{int(hi) - 1}"
        summary = summarize(ranks[inside], ks=(10,))
        rows.append(
            {
                "bucket": label,
                "users": summary["users"],
                "hr@10": summary["hr@10"],
                "ndcg@10": summary["ndcg@10"],
            }
        )
    return rows


def results_table(split: str, users: int, rows: dict[str, dict]) -> str:
    """What ``bst.train`` and ``bst.evaluate`` print: a title line and :func:`format_table`."""
    return (
        f"{split.capitalize()} split, full ranking, seen items excluded ({users:,} users):\n"
        + format_table(rows, TABLE_METRICS)
    )


def format_table(rows: dict[str, dict], keys: Sequence[str] = TABLE_METRICS) -> str:
    """The one results table: a Markdown row per model, a column per metric."""
    head = "| model | " + " | ".join(keys) + " |"
    sep = "|---" * (len(keys) + 1) + "|"
    body = [
        f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |"
        for name, m in rows.items()
    ]
    return "\n".join([head, sep, *body])
