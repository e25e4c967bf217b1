"""python -m bst.evaluate on the tiny trained run: files, figures, agreement with training."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bst import evaluate as ev
from bst import features as F
from bst.baselines import BASELINES as CLASSES
from bst.metrics import load_eval_data
from bst.model import load_run, model_inputs
from bst.pipeline import make_dataset
from tests.conftest import brute_force_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASELINES = ("popularity", "item_transition", "item_knn")


@pytest.fixture(scope="module")
def run_copy(trained_run, tmp_path_factory) -> Path:
    """The session's run, copied: evaluation writes into the run folder and its logs/."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    out.mkdir()
    for name in ("config.json", "model.weights.h5", "metrics.json"):
        shutil.copy(trained_run / name, out / name)
    return out


@pytest.fixture(scope="module")
def evaluated(run_copy) -> tuple[Path, dict]:
    return run_copy, ev.main(["--run-dir", str(run_copy)])


# --- pure functions ----------------------------------------------------------------


def test_ndcg_curve_by_hand():
    ranks = np.array([1.0, 3.0, np.inf, 30.0])
    curve = ev.ndcg_curve(ranks, ks=(1, 2, 3, 20))
    assert curve == pytest.approx([1 / 4, 1 / 4, (1 + 0.5) / 4, (1 + 0.5) / 4])
    assert all(math.isnan(v) for v in ev.ndcg_curve(np.array([]), ks=(1, 5)))


def test_popularity_ranks_and_profile():
    counts = np.array([0, 0, 5, 1, 5, 0, 9], dtype=np.float32)  # items 2..6
    ranks = ev.popularity_ranks(counts)
    assert ranks.tolist() == [-1, -1, 1, 3, 2, 4, 0]  # ties (items 2, 4) by index
    top = np.array([[6, 2], [6, 0]])  # item 6 = most popular; 0 = padding, ignored
    prof = ev.popularity_profile(top, ranks)
    assert prof["distinct_items"] == 2
    assert prof["median_percentile"] == pytest.approx(0.0)  # ranks 0, 1, 0 over 5 items
    assert prof["head_share"] == pytest.approx(2 / 3)  # rank 0 < 0.1 * 5; rank 1 is not


# --- the command ---------------------------------------------------------------------


@pytest.mark.slow
def test_writes_metrics_report_and_plots(evaluated):
    run_dir, result = evaluated
    out = run_dir / "eval" / "test"
    written = json.loads((out / "metrics.json").read_text())
    assert written["model"]["BST"] == pytest.approx(result["model"]["BST"])
    assert written["split"] == "test" and written["users"] == result["users"] > 0
    for name in ev.PLOTS.values():
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name
    report = (out / "report.md").read_text()
    for row in ev.PUBLISHED:
        assert f"| {row['name']}, ML-1M (published, not measured here) |" in report
    assert "| 0.13–0.17 |" in report and "| 0.189 |" in report and "| 0.037 |" in report
    for words in ("Leave-one-out by time", "full catalog", "excluding the movies already",
                  "Ties are pessimistic", "counts as a miss"):  # fmt: skip
        assert words in report
    assert "| **BST** |" in report
    for name in BASELINES:
        assert f"| {name} (baseline) |" in report
    for name in ev.PLOTS.values():
        assert f"({name})" in report  # embedded images


@pytest.mark.slow
def test_metrics_agree_with_a_brute_force_ranking(evaluated):
    """bst.evaluate's figures equal a ranking written out by hand: each user scored alone
    (batch of 1, no length sorting or trimming), rank = 1 + the unseen movies scoring at
    least the target's score, on the test shards joined to sequences.tsv by user id."""

    run_dir, result = evaluated
    cfg, model, prepared = load_run(run_dir)
    data = load_eval_data(prepared, "test")
    scores = {}
    for features, _ in make_dataset(cfg, "test", batch_size=1, shuffle=False):
        user = features[F.USER_ID].numpy()[0].decode()
        scores[user] = model(model_inputs(features), training=False)["scores"].numpy()[0]
    ranks = []
    for user, history, target in zip(data.user_ids, data.histories, data.targets, strict=True):
        if target < F.NUM_RESERVED:
            ranks.append(math.inf)
            continue
        row = scores[str(user)]
        excluded = set(int(i) for i in history) - {int(target)}
        above = sum(
            1
            for i in range(F.NUM_RESERVED, len(row))
            if i != target and i not in excluded and row[i] >= row[target]
        )
        ranks.append(1 + above)
    ranks = np.array(ranks, dtype=float)
    got = result["model"]["BST"]
    assert got["users"] == len(ranks)
    assert got["hr@10"] == pytest.approx(float((ranks <= 10).mean()), abs=1e-6)
    ndcg = np.where(ranks <= 10, 1.0 / np.log2(np.minimum(ranks, 1e9) + 1.0), 0.0)
    assert got["ndcg@10"] == pytest.approx(float(ndcg.mean()), abs=1e-6)
    assert got["mrr"] == pytest.approx(float((1.0 / ranks).mean()), abs=1e-6)
    assert 0.0 < got["ndcg@10"] < 1.0  # a real spread of ranks, not a degenerate case
    for key in ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@20"):
        assert 0.0 <= got[key] <= 1.0
    assert got["ndcg@1"] == pytest.approx(got["hr@1"])
    assert got["ndcg@3"] <= got["ndcg@5"] <= got["ndcg@10"] <= got["ndcg@20"]


def baseline_scores_by_hand(name: str, train: list, histories: list, n: int) -> np.ndarray:
    """Each baseline's scores from its definition, one pair or user at a time with
    Python counters (not bst.baselines' matrices): popularity = training counts;
    item_transition = sum over the last 3 history movies of 0.5**t x the share of that
    movie's training transitions that went to each movie; item_knn = summed cosine
    similarity of user sets over the history's distinct movies (every neighbour kept:
    which 20 of tied neighbours the default keeps is arbitrary); both plus popularity
    scaled to at most 1e-6. Returns (scores, the item_knn similarity)."""
    from collections import Counter, defaultdict

    seqs = [[int(i) for i in s if i >= F.NUM_RESERVED] for s in train]
    counts = Counter(i for s in seqs for i in s)
    pop = np.array([counts.get(i, 0) for i in range(n)], np.float64)
    prior = pop * 1e-6 / pop.max()
    rows = []
    if name == "popularity":
        return np.array([pop] * len(histories)), None
    if name == "item_transition":
        follow = defaultdict(Counter)
        for s in seqs:
            for a, b in zip(s, s[1:], strict=False):
                follow[a][b] += 1
        for h in histories:
            row = prior.copy()
            recent = [int(i) for i in h if i >= F.NUM_RESERVED][::-1][:3]
            for t, item in enumerate(recent):
                total = sum(follow[item].values())
                for nxt, c in follow[item].items():
                    row[nxt] += 0.5**t * c / total
            rows.append(row)
        return np.array(rows), None
    users_of = defaultdict(set)
    for u, s in enumerate(seqs):
        for i in s:
            users_of[i].add(u)
    sim = np.zeros((n, n))
    for i in users_of:
        for j in users_of:
            if i != j:
                shared = len(users_of[i] & users_of[j])
                sim[i, j] = shared / math.sqrt(len(users_of[i]) * len(users_of[j]))
    for h in histories:
        row = prior.copy()
        for i in {int(i) for i in h if i >= F.NUM_RESERVED}:
            row += sim[i]
        rows.append(row)
    return np.array(rows), sim


@pytest.mark.slow
def test_baselines_score_as_defined_and_report_what_they_score(evaluated):
    """Each baseline's scores equal a by-hand computation from its definition, and the
    report's figures are those scores ranked by brute force."""
    run_dir, result = evaluated
    assert set(result["baselines"]) == set(BASELINES)
    _, _, prepared = load_run(run_dir)
    data = load_eval_data(prepared.folder, "test")
    train = prepared.sequences.train()
    users = list(range(len(data.targets)))
    for name in BASELINES:
        baseline = CLASSES[name]().fit(prepared.folder)
        scores = baseline.scorer(data)(users)
        by_hand, similarity = baseline_scores_by_hand(name, train, data.histories, data.num_items)
        if name == "item_knn":  # every neighbour by hand; the default keeps 20 of them
            every = CLASSES[name](neighbors=None).fit(prepared.folder).scorer(data)(users)
            np.testing.assert_allclose(every, by_hand, rtol=1e-5, atol=1e-7)
            for full, kept in zip(similarity, baseline.similarity.toarray(), strict=True):
                cut = (kept == 0) & (full > 0)
                assert (kept > 0).sum() <= 20
                np.testing.assert_allclose(kept[kept > 0], full[kept > 0], rtol=1e-5)
                if cut.any() and (kept > 0).any():  # only the less similar were cut
                    assert full[cut].max() <= kept[kept > 0].min() * (1 + 1e-6)
        else:
            np.testing.assert_allclose(scores, by_hand, rtol=1e-5, atol=1e-7, err_msg=name)
        brute = brute_force_metrics(scores, data.histories, data.targets)
        for key in ("hr@10", "ndcg@10", "mrr"):
            assert result["baselines"][name][key] == pytest.approx(brute[key], abs=1e-6), name
        assert result["baselines"][name]["users"] == result["users"]


@pytest.mark.slow
def test_history_buckets_and_curves_are_consistent(evaluated):
    _, result = evaluated
    users = result["users"]
    for name in ("BST", *BASELINES):
        overall = result["model"]["BST"] if name == "BST" else result["baselines"][name]
        for breakdown in ("by_history_length", "by_target_count"):
            rows = result[breakdown][name]
            assert sum(r["users"] for r in rows) == users
            weighted = sum(r["users"] * r["ndcg@10"] for r in rows if r["users"]) / users
            assert weighted == pytest.approx(overall["ndcg@10"])
        curve = result["ndcg_curve"][name]
        assert len(curve) == 20 and curve == sorted(curve)  # NDCG@K grows with K
        for k in (1, 5, 10, 20):
            assert curve[k - 1] == pytest.approx(overall[f"ndcg@{k}"])
        prof = result["popularity_bias"][name]
        assert 0.0 <= prof["median_percentile"] <= 1.0 and 0 < prof["distinct_items"]
    # popularity recommends the most popular unseen items: the most head-heavy list
    shares = {n: p["head_share"] for n, p in result["popularity_bias"].items()}
    assert shares["popularity"] == max(shares.values())


@pytest.mark.slow
def test_tensorboard_scalars_and_images(evaluated):

    run_dir, result = evaluated
    logdir = run_dir / "logs" / "eval"

    def summaries(folder: Path) -> dict[str, str]:
        """tag → plugin name, for the event files directly in ``folder``."""
        out, values = {}, {}
        for path in folder.glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for v in event.summary.value:
                    out[v.tag] = v.metadata.plugin_data.plugin_name
                    if out[v.tag] == "scalars":
                        values[v.tag] = float(tf.make_ndarray(v.tensor))
        return out, values

    tags, values = summaries(logdir)
    assert values["test/ndcg@10"] == pytest.approx(result["model"]["BST"]["ndcg@10"])
    assert values["test/mrr"] == pytest.approx(result["model"]["BST"]["mrr"])
    for key in ev.PLOTS:
        assert tags[f"test_plots/{key}"] == "images"
    for name in BASELINES:
        _, base = summaries(logdir / name)
        assert base["test/ndcg@10"] == pytest.approx(result["baselines"][name]["ndcg@10"])


@pytest.mark.slow
def test_validation_split(evaluated):
    run_copy, _ = evaluated  # the test split's report is written first
    result = ev.evaluate(run_copy, "validation")
    _, _, prepared = load_run(run_copy)
    assert result["split"] == "validation"
    assert result["users"] == load_eval_data(prepared.folder, "validation").num_users
    saved = json.loads((run_copy / "eval" / "validation" / "metrics.json").read_text())
    assert saved["split"] == "validation"
    # the test report beside it stays the test report
    assert ev.read_report(run_copy, "test")["split"] == "test"
    assert ev.read_report(run_copy, "validation") == saved
    assert "on the validation split" in (run_copy / "eval/validation/report.md").read_text()


def test_reports_of_the_former_layout_are_still_found(tmp_path):
    """Runs evaluated before eval/<split>/ hold eval/metrics.json (test) and
    eval-validation/: read_report finds them, and the new layout wins where both are."""
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval-validation").mkdir()
    (run / "eval" / "metrics.json").write_text('{"split": "test", "old": true}')
    (run / "eval-validation" / "metrics.json").write_text('{"split": "validation"}')
    assert ev.read_report(run, "test") == {"split": "test", "old": True}
    assert ev.find_report(run, "validation") == run / "eval-validation"
    (run / "eval" / "test").mkdir()
    (run / "eval" / "test" / "metrics.json").write_text('{"split": "test"}')
    assert ev.read_report(run, "test") == {"split": "test"}
    with pytest.raises(ev.UsageError, match="no evaluation of the validation split"):
        ev.find_report(tmp_path / "elsewhere", "validation")


@pytest.mark.parametrize("make", ["missing", "empty", "no_weights"])
def test_bad_run_dir_exits_2_with_one_line(tmp_path, capsys, trained_run, make):
    run_dir = tmp_path / "run"
    if make != "missing":
        run_dir.mkdir()
    if make == "no_weights":
        shutil.copy(trained_run / "config.json", run_dir / "config.json")
    with pytest.raises(SystemExit) as info:
        ev.main(["--run-dir", str(run_dir)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(run_dir) in err[0]
    assert not (run_dir / "eval").exists()


def test_report_marks_published_rows_as_context_on_synthetic_data():
    metrics = {k: 0.5 for k in ev.TABLE_KEYS} | {"oov_targets": 0}
    bucket = {"bucket": "0-19", "users": 3, "hr@10": 0.5, "ndcg@10": 0.25}
    result = {
        "run_dir": "runs/x",
        "split": "test",
        "dataset": "synthetic (tiny test data)",
        "users": 3,
        "catalog_items": F.NUM_RESERVED + 10,
        "model": {"BST": metrics},
        "baselines": {"popularity": metrics},
        "by_history_length": {"BST": [bucket], "popularity": [bucket]},
        "by_target_count": {"BST": [bucket], "popularity": [bucket]},
        "popularity_bias": {
            "BST": {"median_percentile": 0.5, "head_share": 0.1, "distinct_items": 7}
        },
        "published": ev.PUBLISHED,
        "seconds": {"load": 1.0},
    }
    report = ev.format_report(result)
    assert "context, not a comparison" in report
    assert "| 0-19 | 3 | 0.2500 | 0.2500 | 0.5000 |" in report
