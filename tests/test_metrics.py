"""Full-catalog ranking metrics: hand-computed ranks, pessimistic ties, exclusions, loading."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bst import features as F
from bst import metrics as M
from bst.vocab import index_of, read_vocabulary

# N = 6: columns 0 (PAD) and 1 (OOV) are reserved, items are 2..5.
ROW = [9.0, 9.0, 0.5, 0.9, 0.1, 0.7]


def test_target_ranks_hand_computed():
    scores = np.array([ROW, ROW, ROW])
    # item 3 (0.9) is best; item 4 (0.1) is last of 4 candidates; item 2 (0.5) is third
    ranks = M.target_ranks(scores, [3, 4, 2])
    np.testing.assert_array_equal(ranks, [1.0, 4.0, 3.0])  # reserved columns' 9.0 ignored


def test_ties_are_pessimistic_so_constant_scores_get_no_credit():
    scores = np.zeros((3, 6))
    ranks = M.target_ranks(scores, [2, 3, 3], seen=[[], [4], [2, 3]])
    # every candidate ties with the target, so the target is last among candidates
    np.testing.assert_array_equal(ranks, [4.0, 3.0, 3.0])  # the re-watched 3 stays a candidate
    one_tie = np.array([[0.0, 0.0, 0.5, 0.5, 0.1, 0.7]])
    assert M.target_ranks(one_tie, [2])[0] == 3.0  # 5 above, 3 tied (counts above), then 2
    assert M.summarize(M.target_ranks(np.zeros((4, 6)), [2, 3, 4, 5]))["hr@3"] == 0.0


def test_seen_items_are_excluded_except_a_rewatched_target():
    scores = np.array([[0.0, 0.0, 0.5, 0.3, 0.1, 0.7]])
    # seen {5}: candidates 2 (0.5), 3 (0.3), 4 (0.1); target 4 is third, not fourth
    assert M.target_ranks(scores, [4], seen=[[5]])[0] == 3.0
    # seen {3, 5} with target 3 (a re-watch): candidates 2, 3, 4 -> 3 is second
    assert M.target_ranks(scores, [3], seen=[[5, 3, 3]])[0] == 2.0
    # PAD/OOV in a history are harmless
    assert M.target_ranks(scores, [3], seen=[[0, 1, 5]])[0] == 2.0


def test_oov_target_is_a_miss_and_counted():
    scores = np.array([ROW, ROW])
    ranks = M.target_ranks(scores, [F.OOV, 3])
    assert math.isinf(ranks[0]) and ranks[1] == 1.0
    summary = M.summarize(ranks, ks=(1, 20))
    assert summary["hr@1"] == summary["hr@20"] == 0.5
    assert summary["mrr"] == 0.5
    assert summary["oov_targets"] == 1 and summary["users"] == 2


def test_summarize_hand_computed():
    ranks = np.array([1.0, 2.0, 3.0, 11.0, np.inf])
    s = M.summarize(ranks)
    assert s["hr@1"] == pytest.approx(0.2)
    assert s["hr@3"] == pytest.approx(0.6)
    assert s["hr@10"] == pytest.approx(0.6)
    assert s["hr@20"] == pytest.approx(0.8)
    assert s["ndcg@1"] == pytest.approx(0.2)
    assert s["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 5)
    assert s["ndcg@20"] == pytest.approx((1 + 1 / math.log2(3) + 0.5 + 1 / math.log2(12)) / 5)
    assert s["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 11) / 5)
    assert (s["users"], s["oov_targets"]) == (5, 1)
    assert math.isnan(M.summarize(np.array([]))["hr@10"])


def test_k_larger_than_the_catalog():
    scores = np.array([[0.0, 0.0, 0.2, 0.8]])  # only items 2 and 3
    ranks = M.target_ranks(scores, [2])
    assert ranks[0] == 2.0
    assert M.summarize(ranks, ks=(10, 20))["hr@20"] == 1.0
    np.testing.assert_array_equal(M.top_k(scores, None, 5), [[3, 2, 0, 0, 0]])  # PAD-filled


def test_single_user_single_interaction_end_to_end():
    data = M.EvalData.from_histories([[2]], [4], num_items=5, user_ids=["u1"])
    assert data.seen.row(0).tolist() == [2]
    metrics, ranks, top = M.evaluate_scores(
        lambda users: np.array([[0.0, 0.0, 9.0, 0.5, 0.4]])[users * 0], data
    )
    assert ranks.tolist() == [2.0]  # 2 is seen; 3 (0.5) beats the target 4 (0.4)
    assert metrics["ndcg@3"] == pytest.approx(1 / math.log2(3))
    assert top[0].tolist()[:2] == [3, 4] and top[0, 2:].tolist() == [0] * 8
    assert metrics["coverage@10"] == pytest.approx(2 / 3)
    assert metrics["catalog_items"] == 3


def test_top_k_excludes_seen_and_reserved_and_orders_ties_by_index():
    scores = np.array([[5.0, 5.0, 1.0, 3.0, 3.0, 2.0, 0.0], [5.0, 5.0, 1.0, 3.0, 3.0, 2.0, 0.0]])
    top = M.top_k(scores, [[3], []], 3)
    np.testing.assert_array_equal(top, [[4, 5, 2], [3, 4, 5]])
    assert top.dtype == np.int64
    with pytest.raises(ValueError, match="k=0"):
        M.top_k(scores, None, 0)


def test_vectorized_ranks_match_a_brute_force_loop():
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    scores = rng.integers(0, 5, size=(n_users, n_items)).astype(np.float32)  # many ties
    histories = [rng.choice(n_items, size=rng.integers(0, 12)) for _ in range(n_users)]
    targets = rng.integers(0, n_items, size=n_users)
    ranks = M.target_ranks(scores, targets, histories)
    top = M.top_k(scores, histories, 5)
    for u in range(n_users):
        t = targets[u]
        candidates = [i for i in range(2, n_items) if i not in set(histories[u]) or i == t]
        expected = math.inf if t < 2 else sum(scores[u, i] >= scores[u, t] for i in candidates)
        assert ranks[u] == expected
        unseen = [i for i in range(2, n_items) if i not in set(histories[u])]
        best = sorted(unseen, key=lambda i: -scores[u, i])[:5]
        assert sorted(scores[u, top[u]]) == sorted(scores[u, best])  # same scores, ties aside
        assert not set(top[u]) & set(histories[u])


def test_evaluate_scores_is_independent_of_batch_size():
    rng = np.random.default_rng(1)
    histories = [rng.choice(np.arange(2, 25), size=rng.integers(1, 8)) for _ in range(11)]
    data = M.EvalData.from_histories(histories, rng.integers(1, 25, size=11), num_items=25)
    table = rng.standard_normal((11, 25))
    a = M.evaluate_scores(lambda users: table[users], data, batch_size=3)
    b = M.evaluate_scores(lambda users: table[users], data, batch_size=1024)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    # scored in another order (a model's: by history length), the same results in data's
    c = M.evaluate_scores(lambda users: table[users], data, batch_size=4, order=np.arange(11)[::-1])
    assert c[0] == a[0]
    np.testing.assert_array_equal(c[1], a[1])
    np.testing.assert_array_equal(c[2], a[2])
    with pytest.raises(ValueError, match="permutation"):
        M.evaluate_scores(lambda users: table[users], data, order=np.zeros(11, np.int64))
    with pytest.raises(ValueError, match="num_items"):
        M.evaluate_scores(lambda users: table[users, :20], data)
    with pytest.raises(ValueError, match="NaN"):
        M.target_ranks(np.full((1, 5), np.nan), [2])


def test_seen_items_take_matches_the_rows():
    histories = [[2, 3], [], [4, 4, 1, 5], [6]]
    seen = M.SeenItems.from_histories(histories)
    assert [seen.row(u).tolist() for u in range(4)] == [[2, 3], [], [4, 5], [6]]
    part = seen.take(slice(1, 3))
    assert [part.row(u).tolist() for u in range(2)] == [[], [4, 5]]
    picked = seen.take([3, 0, 2])
    assert [picked.row(u).tolist() for u in range(3)] == [[6], [2, 3], [4, 5]]
    rows, cols = picked.coordinates()
    assert rows.tolist() == [0, 1, 1, 2, 2] and cols.tolist() == [6, 2, 3, 4, 5]


def test_by_history_length_buckets():
    ranks = np.array([1.0, 50.0, 3.0, np.inf])
    lengths = np.array([5, 19, 20, 600])
    rows = M.by_history_length(ranks, lengths, buckets=(0, 20, 100, math.inf))
    assert [r["bucket"] for r in rows] == ["0-19", "20-99", "100+"]
    assert [r["users"] for r in rows] == [2, 1, 1]
    assert rows[0]["hr@10"] == 0.5 and rows[1]["ndcg@10"] == pytest.approx(0.5)
    assert rows[2]["hr@10"] == 0.0


def test_by_target_count_buckets_targets_by_their_training_ratings():
    ranks = np.array([1.0, 2.0, 30.0, 1.0, np.inf])
    targets = np.array([2, 3, 4, 5, 1])  # 1 = OOV: counted as never rated
    counts = np.array([0, 0, 0, 4, 5, 250])
    rows = M.by_target_count(ranks, targets, counts)
    assert [r["bucket"] for r in rows] == ["0", "1-4", "5-19", "20-99", "100+"]
    assert [r["users"] for r in rows] == [2, 1, 1, 0, 1]
    assert rows[0]["hr@10"] == 0.5  # target 2 (0 ratings) hit, the OOV target missed
    assert rows[2]["hr@10"] == 0.0 and rows[4]["hr@10"] == 1.0
    assert math.isnan(rows[3]["ndcg@10"])


def test_load_eval_data_agrees_with_sequences_tsv(prepared_dir):
    header, *lines = (prepared_dir / "sequences.tsv").read_text().splitlines()
    lookup = index_of(read_vocabulary(prepared_dir / "vocab" / "movie_id.txt"))
    validation = M.load_eval_data(prepared_dir, "validation")
    test = M.load_eval_data(prepared_dir, "test")
    assert validation.num_users == test.num_users == 30
    assert test.num_items == len(lookup) + 2
    for u, line in enumerate(lines):
        uid, n_train, n_val, _, ids, _, _ = line.split("\t")
        ids = [lookup.get(m, F.OOV) for m in ids.split()]
        n_train = int(n_train)
        assert validation.user_ids[u] == test.user_ids[u] == uid
        assert validation.targets[u] == ids[n_train]
        assert test.targets[u] == ids[n_train + int(n_val)]
        assert validation.histories[u].tolist() == ids[:n_train]
        assert test.histories[u].tolist() == ids[: n_train + 1]
        assert test.seen.row(u).tolist() == sorted({i for i in ids[: n_train + 1] if i >= 2})
    np.testing.assert_array_equal(validation.history_lengths + 1, test.history_lengths)
    with pytest.raises(ValueError, match="split='train'"):
        M.load_eval_data(prepared_dir, "train")


def test_train_only_users_are_not_evaluated(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "movie_id.txt").write_text("10\n20\n30\n")
    (tmp_path / "sequences.tsv").write_text(
        "user_id\tn_train\tn_validation\tn_test\tmovie_ids\ttimestamps\tratings\n"
        "1\t2\t0\t0\t10 20\t1 2\t5 5\n"
        "2\t1\t1\t1\t20 30 99\t1 2 3\t4 4 4\n"
    )
    test = M.load_eval_data(tmp_path, "test")
    assert test.user_ids.tolist() == ["2"]
    assert test.targets.tolist() == [F.OOV]  # movie 99 never in training
    assert test.histories[0].tolist() == [2 + 1, 2 + 2]
    scores = np.ones((1, test.num_items))
    metrics, _, _ = M.evaluate_scores(lambda users: scores[users], test)
    assert metrics["oov_targets"] == 1 and metrics["hr@20"] == 0.0
    (tmp_path / "sequences.tsv").write_text(
        "user_id\tn_train\tn_validation\tn_test\tmovie_ids\ttimestamps\tratings\n"
        "1\t2\t1\t1\t10 20\t1 2\t5 5\n"
    )
    with pytest.raises(ValueError, match="line 2: split sizes"):
        M.load_eval_data(tmp_path, "test")
