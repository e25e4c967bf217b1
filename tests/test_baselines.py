"""Baselines on data whose answer is known, and against each other on the synthetic ring."""

from __future__ import annotations

import numpy as np
import pytest

from bst import metrics as M
from bst.baselines import BASELINES, ItemKNN, ItemTransition, Popularity
from bst.data.prepared import Prepared


def test_popularity_counts_training_events_and_skips_seen_items():
    model = Popularity().fit([[2, 3, 4], [3, 4], [3]], num_items=6)
    np.testing.assert_array_equal(model.popularity, [0, 0, 1, 3, 2, 0])
    scores = model.score([[2], [3]])
    assert scores.shape == (2, 6) and scores.dtype == np.float32
    np.testing.assert_array_equal(M.top_k(scores, [[2], [3]], 2), [[3, 4], [4, 2]])


def test_popularity_from_a_prepared_folder_counts_only_training_events(prepared_dir):
    seqs = Prepared.open(prepared_dir).sequences
    model = Popularity().fit(prepared_dir)
    assert model.num_items == seqs.num_items
    assert model.popularity.sum() == seqs.n_train.sum()  # validation/test events not counted
    full = np.bincount(np.concatenate(seqs.items), minlength=seqs.num_items)[2:]
    assert model.popularity[2:].sum() < full.sum()


def test_item_transition_ranks_the_true_next_item_first():
    chain = [2, 3, 4, 5, 6, 7]
    model = ItemTransition(window=1).fit([chain, chain, [7, 2]], num_items=8)
    np.testing.assert_allclose(
        model.transitions.toarray()[4], np.eye(8)[5]
    )  # 4 is always followed by 5
    data = M.EvalData.from_histories([[2, 3, 4], [6, 7], [5]], [5, 2, 6], num_items=8)
    metrics, ranks, top = M.evaluate_scores(model.scorer(data), data)
    np.testing.assert_array_equal(ranks, [1, 1, 1])
    assert top[:, 0].tolist() == [5, 2, 6]
    assert metrics["ndcg@1"] == 1.0


def test_item_transition_window_votes_and_cold_rows_fall_back_to_popularity():
    # 2 -> 3 twice, 4 -> 5 once; 6 never has a successor; 3 is the most popular
    sequences = [[2, 3], [2, 3], [4, 5], [6], [3]]
    model = ItemTransition(window=2, decay=0.5).fit(sequences, num_items=8)
    scores = model.score([[2, 4], [6]])
    # user 0: last item 4 votes 5 with weight 1, item 2 votes 3 with weight 0.5
    assert M.top_k(scores, [[2, 4], [6]], 2)[0].tolist() == [5, 3]
    # user 1: no transitions out of 6, so popularity (3 three times, then 2) decides
    assert M.top_k(scores[1:], [[6]], 2)[0].tolist() == [3, 2]
    assert scores[1].max() <= 1e-6  # the prior only breaks ties
    with pytest.raises(ValueError, match="window=0"):
        ItemTransition(window=0)


def test_item_knn_recommends_the_co_occurring_item():
    users = [[2, 3], [3, 2], [4, 5], [5, 4, 6], [6]]
    model = ItemKNN(neighbors=None).fit(users, num_items=7)
    similarity = model.similarity.toarray()  # sparse: never a dense (N, N) while fitting
    assert similarity[2, 3] == pytest.approx(1.0)  # same two users
    assert similarity[4, 6] == pytest.approx(1 / np.sqrt(2 * 2))
    assert np.all(np.diag(similarity) == 0)
    assert M.top_k(model.score([[2], [4]]), [[2], [4]], 1)[:, 0].tolist() == [3, 5]
    sparse = ItemKNN(neighbors=1).fit(users, num_items=7)
    assert (sparse.similarity.toarray() > 0).sum(axis=1).max() == 1


def test_baselines_check_their_inputs():
    with pytest.raises(RuntimeError, match="not fitted"):
        Popularity().score([[2]])
    model = Popularity().fit([[2, 3]], num_items=4)
    data = M.EvalData.from_histories([[2]], [3], num_items=5)
    with pytest.raises(ValueError, match="fitted on 4 item indices"):
        model.scorer(data)
    with pytest.raises(ValueError, match="does not fit num_items=3"):
        Popularity().fit([[2, 3]], num_items=3)


def test_item_transition_beats_popularity_on_the_synthetic_ring(prepared_dir):
    data = M.load_eval_data(prepared_dir, "test")
    results = {
        name: M.evaluate_scores(cls().fit(prepared_dir).scorer(data), data)[0]
        for name, cls in BASELINES.items()
    }
    pop, trans = results["popularity"], results["item_transition"]
    assert pop["users"] == trans["users"] == 30
    # measured: popularity 0.41, item transition 0.80 (the generator follows the ring 80 %)
    assert trans["ndcg@10"] > pop["ndcg@10"] + 0.25
    assert trans["mrr"] > 1.5 * pop["mrr"]
    assert results["item_knn"]["ndcg@10"] > pop["ndcg@10"]


def test_item_knn_in_blocks_of_items_is_the_whole_matrix(monkeypatch):
    """The similarity built a few items at a time (the bound on its memory) is the one
    built at once, neighbours and all, and so are the scores."""
    import bst.baselines as B

    rng = np.random.default_rng(0)
    users = [rng.choice(np.arange(2, 40), rng.integers(1, 15), replace=False) for _ in range(60)]
    whole = ItemKNN(neighbors=5).fit(users, num_items=40)
    monkeypatch.setattr(B, "SIMILARITY_BLOCK_ENTRIES", 3 * 40)  # blocks of 3 items
    blocks = ItemKNN(neighbors=5).fit(users, num_items=40)
    np.testing.assert_array_equal(blocks.similarity.toarray(), whole.similarity.toarray())
    np.testing.assert_array_equal(blocks.score(users[:7]), whole.score(users[:7]))
