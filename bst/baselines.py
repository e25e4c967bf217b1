"""Non-neural baselines, scored under exactly the same protocol as the model.

A transformer's figures mean little without them: popularity says what knowing
nothing about the user is worth, and the item-to-item baselines say how much of
"what comes next" is already in simple co-occurrence statistics.

Every baseline is fitted on the **training part of each user's sequence only**
(the first ``n_train`` events), for validation and for test evaluation alike: the
validation event is never a training example, so the test figures of a baseline
and of the model (trained on the same events) compare like with like. At scoring
time a user's whole history is used, which for test includes the validation event.

Each baseline has ``fit(source)`` and ``score(histories) -> float32 [b, N]``;
``scorer(data)`` adapts it to :func:`bst.metrics.evaluate_scores`::

    data = load_eval_data(folder, "test")
    metrics, ranks, top10 = evaluate_scores(ItemTransition().fit(folder).scorer(data), data)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from bst import features as F
from bst.data.prepared import Prepared
from bst.metrics import EvalData, ScoreFn

Source = Prepared | str | os.PathLike | Sequence[np.ndarray]

# Weight of the popularity prior added to the item-to-item baselines: small enough
# to only order items the main signal leaves tied (or a user with no usable row).
TIE_BREAK = 1e-6


def training_sequences(
    source: Source, num_items: int | None = None
) -> tuple[list[np.ndarray], int]:
    """(training sequences as int32 item indices, ``N``) from a prepared folder or arrays.

    With arrays, ``num_items`` defaults to the largest index + 1 (at least the 2
    reserved indices).
    """
    if isinstance(source, Prepared | str | os.PathLike):
        seqs = Prepared.open(source).sequences
        if num_items is not None and num_items != seqs.num_items:
            raise ValueError(
                f"`num_items` disagrees with the vocabulary of {source}. Received: "
                f"num_items={num_items}, vocabulary size {seqs.num_items}"
            )
        return seqs.train(), seqs.num_items
    sequences = [np.asarray(s, dtype=np.int32).reshape(-1) for s in source]
    largest = max((int(s.max()) for s in sequences if len(s)), default=F.OOV)
    if num_items is None:
        num_items = max(largest + 1, F.NUM_RESERVED)
    elif largest >= num_items:
        raise ValueError(
            f"item index {largest} does not fit num_items={num_items} (indices must be < N)"
        )
    return sequences, int(num_items)


def _catalog(items: np.ndarray) -> np.ndarray:
    """Drop PAD and OOV: they are never recommended and carry no co-occurrence."""
    return items[items >= F.NUM_RESERVED]


class Baseline:
    """Shared plumbing: the item count, the popularity prior and the scorer adapter."""

    name = "baseline"

    def __init__(self) -> None:
        self.num_items: int | None = None
        self.popularity: np.ndarray | None = None  # float32 [N], training counts

    def fit(self, source: Source, num_items: int | None = None) -> Baseline:
        sequences, self.num_items = training_sequences(source, num_items)
        items = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
        counts = np.bincount(_catalog(items), minlength=self.num_items).astype(np.float32)
        counts[: F.NUM_RESERVED] = 0.0
        self.popularity = counts
        self._fit(sequences)
        return self

    def _fit(self, sequences: list[np.ndarray]) -> None:
        pass

    def _prior(self) -> np.ndarray:
        """Popularity scaled into [0, TIE_BREAK]: float32 ``[N]``."""
        top = float(self.popularity.max()) if self.popularity.size else 0.0
        return self.popularity * np.float32(TIE_BREAK / top) if top > 0 else self.popularity

    def _check_fitted(self) -> None:
        if self.popularity is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(...) first")

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """float32 ``[b, N]`` scores for each history (item indices, oldest first)."""
        raise NotImplementedError

    def scorer(self, data: EvalData) -> ScoreFn:
        """``score_fn`` for :func:`bst.metrics.evaluate_scores` over ``data``'s users."""
        self._check_fitted()
        if data.num_items != self.num_items:
            raise ValueError(
                f"{type(self).__name__} was fitted on {self.num_items} item indices but the "
                f"evaluation data has {data.num_items}: fit and evaluate on the same folder"
            )
        return lambda users: self.score([data.histories[u] for u in users])


def all_baselines() -> tuple[Baseline, ...]:
    """The baselines every results table shows, unfitted, in table order."""
    return (Popularity(), ItemTransition(), ItemKNN())


class Popularity(Baseline):
    """Score = how often the item occurs in the training events: the same list for everyone.

    Seen items are removed by the metric, so each user gets the most popular
    movies they have not watched yet.
    """

    name = "popularity"

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        self._check_fitted()
        return np.tile(self.popularity, (len(histories), 1))  # (b, N)


class ItemTransition(Baseline):
    """First-order Markov chain: which item followed the user's last item in training.

    ``P[i, j]`` = share of the training transitions out of ``i`` that went to ``j``
    (row-normalized counts of consecutive events). A user's scores are
    ``sum_{t < window} decay**t * P[h[-1 - t]]`` over the last ``window`` history
    items, plus a tiny popularity prior that orders ties and answers for items never
    seen followed by anything. Row normalization keeps a frequently watched item
    from drowning out the others when ``window > 1``.

    The defaults were picked on ML-1M *validation* NDCG@10 among windows of 1 to 5
    (docs/experiments.md, "The baselines' settings"); test was not looked at.

    Args:
        window: int. How many of the most recent history items vote. Defaults to 3.
        decay: float. Weight ratio between consecutive votes. Defaults to 0.5.
    """

    name = "item_transition"

    def __init__(self, window: int = 3, decay: float = 0.5) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"`window` must be positive. Received: window={window}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"`decay` must be in (0, 1]. Received: decay={decay}")
        self.window = window
        self.decay = decay
        self.transitions: sparse.csr_array | None = None  # float32 [N, N], sparse

    def _fit(self, sequences: list[np.ndarray]) -> None:
        n = self.num_items
        pairs = [
            (s[:-1].astype(np.int64) * n + s[1:]) for s in map(_catalog, sequences) if len(s) > 1
        ]
        keys, counts = np.unique(
            np.concatenate(pairs) if pairs else np.zeros(0, np.int64), return_counts=True
        )
        # (N, N) from-item x next-item, only the transitions that occur (memory ~ events)
        rows, cols = keys // n, keys % n
        totals = np.bincount(rows, weights=counts, minlength=n).astype(np.float32)  # (N,)
        shares = counts.astype(np.float32) / totals[rows]
        self.transitions = sparse.csr_array((shares, (rows, cols)), shape=(n, n))

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        self._check_fitted()
        scores = np.tile(self._prior(), (len(histories), 1))  # (b, N)
        # recent[u, t] = t-th most recent catalog item of user u, or PAD (an all-zero row)
        recent = np.zeros((len(histories), self.window), dtype=np.int64)  # (b, window)
        for u, h in enumerate(histories):
            tail = _catalog(np.asarray(h))[::-1][: self.window]
            recent[u, : len(tail)] = tail
        for t in range(self.window):
            rows = self.transitions[recent[:, t]].toarray()  # (b, N)
            scores += np.float32(self.decay**t) * rows
        return scores


class ItemKNN(Baseline):
    """Item-based nearest neighbours: cosine similarity of items' training-user sets.

    ``S[i, j] = |U_i & U_j| / sqrt(|U_i| |U_j|)`` with the diagonal zeroed, optionally
    keeping only each item's ``neighbors`` most similar items (the classic sparsified
    ItemKNN). A user's scores are the summed similarity to their distinct history
    items, plus the tiny popularity prior. Order is ignored: this is the
    non-sequential co-occurrence reference.

    The default was picked on ML-1M *validation* NDCG@10 among all, 100 and 20
    neighbours (docs/experiments.md, "The baselines' settings").

    Args:
        neighbors: int or None. Similarities kept per item; None keeps all.
            Defaults to 20.
    """

    name = "item_knn"

    def __init__(self, neighbors: int | None = 20) -> None:
        super().__init__()
        if neighbors is not None and neighbors < 1:
            raise ValueError(f"`neighbors` must be positive. Received: neighbors={neighbors}")
        self.neighbors = neighbors
        self.similarity: sparse.csr_array | None = None  # float32 [N, N]

    def _fit(self, sequences: list[np.ndarray]) -> None:
        n = self.num_items
        bags = _bags(sequences, n)  # (U, N) binary, sparse
        norms = np.sqrt(bags.sum(axis=0)).astype(np.float32)  # (N,) sqrt of item user counts
        norms[norms == 0] = 1.0
        by_item = bags.T.tocsr()  # (N, U)
        keep = self.neighbors if self.neighbors is not None and self.neighbors < n else None
        # blocks of items: their (block, N) co-occurrence counts are dense, never the (N, N)
        block = max(1, min(n, SIMILARITY_BLOCK_ENTRIES // max(n, 1)))
        parts = []
        for start in range(0, n, block):
            stop = min(start + block, n)
            counts = (by_item[start:stop] @ bags).toarray().astype(np.float32)  # (b, N)
            counts /= norms[start:stop, None]
            counts /= norms[None, :]
            counts[np.arange(stop - start), np.arange(start, stop)] = 0.0  # the diagonal
            if keep is not None:
                cut = np.argpartition(-counts, keep - 1, axis=1)[:, keep:]
                np.put_along_axis(counts, cut, 0.0, axis=1)
            parts.append(sparse.csr_array(counts))
        self.similarity = sparse.vstack(parts, format="csr") if parts else None

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        self._check_fitted()
        bags = _bags(histories, self.num_items)  # (b, N), sparse
        return (bags @ self.similarity).toarray() + self._prior()  # (b, N)


# ItemKNN builds its similarity in blocks of items of at most this many (item, item)
# entries (float32: 32 MiB), so memory does not grow with the catalog squared.
SIMILARITY_BLOCK_ENTRIES = 2**23


def _bags(histories: Sequence[np.ndarray], num_items: int) -> sparse.csr_array:
    """float32 ``(len(histories), num_items)`` sparse: 1 at each history's catalog items."""
    rows = [np.unique(_catalog(np.asarray(h))) for h in histories]
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    data = np.ones(len(indices), np.float32)
    return sparse.csr_array((data, indices, indptr), shape=(len(rows), num_items))


BASELINES = {cls.name: cls for cls in (Popularity, ItemTransition, ItemKNN)}
