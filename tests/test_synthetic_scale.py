"""bst.data.synthetic_scale: MovieLens-sized synthetic data in the MovieLens CSV format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bst.data import formats
from bst.data import synthetic as synthetic_cli
from bst.data import synthetic_scale as scale


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "raw"
    counts = scale.generate_at_scale(out, users=1000, movies=2000, ratings=60_000, seed=3)
    return out, counts


def test_writes_the_movielens_csv_format_bst_reads(generated):
    out, counts = generated
    found, folder = formats.resolve(out, "auto", "")
    assert found.name == "ml-csv" and folder == out
    ratings = pd.read_csv(out / "ratings.csv")
    assert list(ratings.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert len(ratings) == counts["ratings"]
    assert 0.99 * 60_000 <= counts["ratings"] <= 60_000  # what was asked, give or take
    assert ratings["userId"].nunique() == 1000 and ratings["movieId"].max() <= 2000
    assert set(ratings["rating"]) <= {x / 2 for x in range(1, 11)}
    assert not ratings.duplicated(["userId", "movieId"]).any()  # each pair once
    by_user = ratings.groupby("userId", sort=False)["timestamp"]
    assert (by_user.diff().dropna() >= 0).all()  # in time order within a user
    assert ratings["timestamp"].between(scale.START, scale.END).all()
    movies = pd.read_csv(out / "movies.csv")
    assert list(movies.columns) == ["movieId", "title", "genres"] and len(movies) == 2000
    assert movies["title"].str.contains(", The").any()  # a quoted title


def test_popularity_is_skewed_and_histories_have_a_long_tail(generated):
    out, _ = generated
    ratings = pd.read_csv(out / "ratings.csv")
    per_movie = ratings["movieId"].value_counts().to_numpy()
    assert per_movie[:200].sum() > 0.25 * len(ratings)  # the top 10 % of movies
    per_user = ratings["userId"].value_counts().to_numpy()
    assert per_user.min() >= scale.MIN_RATINGS
    assert per_user.max() > 4 * np.median(per_user)


def test_the_order_carries_signal_a_sequence_baseline_finds(generated, tmp_path):
    from bst.baselines import ItemTransition, Popularity
    from bst.data.prepare import prepare
    from bst.metrics import evaluate_scores, load_eval_data

    out, _ = generated
    prepare(out, tmp_path / "p", num_shards=1)
    data = load_eval_data(tmp_path / "p", "validation")
    scores = {}
    for baseline in (Popularity(), ItemTransition()):
        metrics, _, _ = evaluate_scores(baseline.fit(tmp_path / "p").scorer(data), data)
        scores[baseline.name] = metrics["ndcg@10"]
    assert scores["item_transition"] > 2 * scores["popularity"], scores


def test_the_same_seed_writes_the_same_bytes(generated, tmp_path):
    out, _ = generated
    scale.generate_at_scale(tmp_path / "again", users=1000, movies=2000, ratings=60_000, seed=3)
    for name in ("ratings.csv", "movies.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_like_sets_a_release_size_and_flags_override_it(monkeypatch, tmp_path):
    seen = {}

    def fake(out, users, movies, ratings, seed=0):
        seen.update(users=users, movies=movies, ratings=ratings)
        return {"ratings": ratings, "users": users, "movies": movies}

    monkeypatch.setattr(scale, "generate_at_scale", fake)
    synthetic_cli.main(["--like", "ml-25m", "--out", str(tmp_path)])
    assert seen == {"users": 162_541, "movies": 59_047, "ratings": 25_000_095}
    synthetic_cli.main(["--like", "ml-1m", "--ratings", "5000000", "--out", str(tmp_path)])
    assert seen == {"users": 6_040, "movies": 3_706, "ratings": 5_000_000}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ratings", "1000"], "--ratings needs --users and --movies"),
        (["--users", "10", "--movies", "5", "--ratings", "100"], "need at least 1 user, 10 movies"),
    ],
)
def test_impossible_sizes_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        synthetic_cli.main([*argv, "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()
