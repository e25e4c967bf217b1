"""python -m bst.recommend on the tiny trained run: in process, SavedModel, REST server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from bst import recommend as rec


def sequences(run_dir: Path) -> dict[str, list[str]]:
    """user id → all movie ids of sequences.tsv, in time order."""
    prepared = Path(json.loads((run_dir / "config.json").read_text())["data"]["prepared_dir"])
    rows = (prepared / "sequences.tsv").read_text().splitlines()[1:]
    return {r.split("\t")[0]: r.split("\t")[4].split() for r in rows}


def prepared_of(run_dir: Path):
    from bst.data.prepared import Prepared

    return Prepared.open(json.loads((run_dir / "config.json").read_text())["data"]["prepared_dir"])


def titles(run_dir: Path) -> dict[str, str]:
    movies = prepared_of(run_dir).movies
    return dict(zip(movies["movie_id"].astype(str), movies["title"], strict=True))


def vocab_of(run_dir: Path) -> list[str]:
    """The movie ids the model knows, most frequent first."""
    return list(prepared_of(run_dir).vocabs["movie_id"])


@pytest.fixture(scope="module")
def user(trained_run) -> tuple[str, list[str]]:
    """The user with the shortest history (most unseen movies left to recommend)."""
    uid, ids = min(sequences(trained_run).items(), key=lambda kv: len(set(kv[1])))
    return uid, ids


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    from bst.export import export

    base = tmp_path_factory.mktemp("recommend") / "bst"
    export(trained_run, base)
    return base


def ids_of(items: list[dict]) -> list[str]:
    return [m["movie_id"] for m in items]


def test_known_user_excludes_seen_and_names_movies(trained_run, user, capsys):
    uid, history = user
    result = rec.main(["--run-dir", str(trained_run), "--user", uid])
    out = capsys.readouterr().out
    names = titles(trained_run)
    picks = ids_of(result["model"])
    assert len(picks) == 10 and len(set(picks)) == 10
    assert not set(picks) & set(history)
    assert all(m["title"] == names[m["movie_id"]] for m in result["model"])
    scores = [m["score"] for m in result["model"]]
    assert scores == sorted(scores, reverse=True)
    # whole history known, last 10 shown, oldest first
    assert result["history_length"] == len(history)
    assert ids_of(result["history"]) == history[-10:]
    assert all(1 <= h["rating"] <= 5 and h["timestamp"] > 0 for h in result["history"])
    assert f"User {uid}: {len(history)} ratings" in out
    for movie in result["model"][:3] + result["popular"][:3] + result["history"][-3:]:
        assert movie["title"][:30] in out


def test_popular_list_is_popularity_order_minus_seen(trained_run, user):
    from bst.baselines import Popularity

    uid, history = user
    result = rec.main(["--run-dir", str(trained_run), "--user", uid, "--history", "3"])
    prepared = prepared_of(trained_run)
    counts = Popularity().fit(prepared.folder).popularity
    vocab = prepared.vocabs["movie_id"]
    order = sorted(range(len(vocab)), key=lambda i: (-counts[i + 2], i))
    expected = [vocab[i] for i in order if vocab[i] not in set(history)][:10]
    assert ids_of(result["popular"]) == expected
    assert [m["count"] for m in result["popular"]] == [
        int(counts[vocab.index(m) + 2]) for m in expected
    ]
    assert ids_of(result["history"]) == history[-3:]


def test_model_list_is_the_models_best_unseen(trained_run, user):
    """The in-process top 10 are the 10 best-scored unseen movies of the same scores."""
    uid, history = user
    source = rec.InProcess(trained_run)
    prepared = prepared_of(trained_run)
    scores = source.scores(prepared.user_events(uid), prepared.user_profile(uid))
    vocab = vocab_of(trained_run)
    unseen = [i for i in range(2, len(scores)) if vocab[i - 2] not in set(history)]
    best = sorted(unseen, key=lambda i: -scores[i])[:10]
    result = rec.recommend(trained_run, user=uid)
    assert ids_of(result["model"]) == [vocab[i - 2] for i in best]
    assert [m["score"] for m in result["model"]] == pytest.approx([scores[i] for i in best])


def test_movies_list_new_user(trained_run, caplog, capsys):
    vocab = vocab_of(trained_run)
    given = [vocab[0], "no-such-movie", vocab[3], vocab[1], "99999"]
    with caplog.at_level("WARNING", logger="bst.recommend"):
        result = rec.main(["--run-dir", str(trained_run), "--movies", ",".join(given)])
    assert result["user"] is None and result["ignored"] == ["no-such-movie", "99999"]
    assert "ignored 2 of 5 movie ids" in caplog.text
    assert ids_of(result["history"]) == [vocab[0], vocab[3], vocab[1]]
    picks = ids_of(result["model"])
    assert len(set(picks)) == 10 and not set(picks) & set(given)
    assert not set(ids_of(result["popular"])) & set(given)
    out = capsys.readouterr().out
    assert "New user: 3 movies given" in out and "Ignored 2 unknown movie ids" in out


@pytest.mark.slow
def test_saved_model_matches_in_process_for_movie_list(trained_run, exported):
    vocab = vocab_of(trained_run)
    movies = ",".join([vocab[5], vocab[2], vocab[7]])
    here = rec.main(["--run-dir", str(trained_run), "--movies", movies])
    saved = rec.main(
        ["--run-dir", str(trained_run), "--movies", movies, "--model-dir", str(exported)]
    )
    assert saved["source"] == f"SavedModel {exported / '1'}"
    assert ids_of(saved["model"]) == ids_of(here["model"])
    assert [m["score"] for m in saved["model"]] == pytest.approx(
        [m["score"] for m in here["model"]], abs=1e-4
    )
    assert saved["popular"] == here["popular"]
    # more than the exported K: the whole unseen catalog through the `score` signature
    here12 = rec.recommend(trained_run, movies=movies.split(","), k=12)
    saved12 = rec.recommend(trained_run, movies=movies.split(","), k=12, model_dir=exported)
    assert ids_of(saved12["model"]) == ids_of(here12["model"])


@pytest.mark.slow
def test_saved_model_known_user_excludes_their_whole_history(trained_run, exported):
    """The servable masks only its last max_len positions; recommend must mask the rest."""
    cfg = json.loads((trained_run / "config.json").read_text())
    longest_uid, history = max(sequences(trained_run).items(), key=lambda kv: len(kv[1]))
    assert len(history) > cfg["model"]["max_len"]
    result = rec.recommend(trained_run, user=longest_uid, model_dir=exported, k=5)
    picks = ids_of(result["model"])
    assert len(picks) == min(5, len(set(vocab_of(trained_run)) - set(history)))
    assert not set(picks) & set(history)


@pytest.mark.slow
def test_server_matches_in_process_for_movie_list(trained_run, exported):
    from bst.serving import rest

    vocab = vocab_of(trained_run)
    movies = ",".join([vocab[4], vocab[9]])
    here = rec.main(["--run-dir", str(trained_run), "--movies", movies])
    app = rest.create_app(exported, poll_seconds=0)
    with rest.ServerThread(app) as server:
        remote = rec.main(
            ["--run-dir", str(trained_run), "--movies", movies, "--server", server.url]
        )
    assert remote["source"] == f"server {server.url}"
    assert ids_of(remote["model"]) == ids_of(here["model"])
    assert [m["score"] for m in remote["model"]] == pytest.approx(
        [m["score"] for m in here["model"]], abs=1e-4
    )


@pytest.fixture()
def other_catalog_run(trained_run, tmp_path) -> Path:
    """A copy of the run whose prepared catalog names one movie differently."""
    import shutil

    cfg = json.loads((trained_run / "config.json").read_text())
    prepared = tmp_path / "prepared"
    shutil.copytree(cfg["data"]["prepared_dir"], prepared)
    movies = (prepared / "movies.tsv").read_text().splitlines()
    vocab = vocab_of(trained_run)
    for i, line in enumerate(movies):
        fields = line.split("\t")
        if fields[0] in vocab:
            fields[1] = "Another Movie"
            movies[i] = "\t".join(fields)
    (prepared / "movies.tsv").write_text("\n".join(movies) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    cfg["data"]["prepared_dir"] = str(prepared)
    (run / "config.json").write_text(json.dumps(cfg))
    shutil.copy(trained_run / "model.weights.h5", run / "model.weights.h5")
    return run


@pytest.mark.slow
@pytest.mark.parametrize("via", ["model", "server"])
def test_a_model_from_another_catalog_is_refused(other_catalog_run, exported, capsys, via):
    from bst.serving import rest

    vocab = vocab_of(other_catalog_run)
    argv = ["--run-dir", str(other_catalog_run), "--movies", vocab[3]]
    with pytest.raises(SystemExit) as info:
        if via == "model":
            rec.main([*argv, "--model-dir", str(exported)])
        else:
            with rest.ServerThread(rest.create_app(exported, poll_seconds=0)) as server:
                rec.main([*argv, "--server", server.url])
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "use a model exported from this run" in err[0], err
    assert ("whose movie catalog is not" if via == "model" else "Another Movie") in err[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "no-such-user"], "user 'no-such-user' is not in"),
        (["--movies", "no-such-movie,99999"], "none of the 2 movie ids is known"),
        (["--movies", ""], "the movie list is empty"),
        (["--movies", " , ,"], "the movie list is empty"),
        (["--user", "1", "--model-dir", "{tmp}/empty"], "no SavedModel under"),
        (["--user", "1", "--server", "http://127.0.0.1:{port}"], "cannot reach the server"),
        (["--user", "1", "--run-dir", "{tmp}/no-run"], "run folder"),
        (
            ["--user", "1", "--server", "ftp://x"],
            "--server must be a REST base URL such as http://127.0.0.1:8501, got 'ftp://x'",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(trained_run, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, port=_closed_port()) for a in args]
    argv = ["--run-dir", str(trained_run), *args]
    with pytest.raises(SystemExit) as info:
        rec.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if "bst.recommend" not in line]  # logging, if any
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_format_falls_back_to_stacked_blocks_when_narrow():
    movie = {"movie_id": "1", "title": "A" * 60, "year": 1999, "genres": "Drama"}
    result = {
        "user": "7",
        "source": "in-process model",
        "history_length": 1,
        "splits": (1, 0, 0),
        "history": [{**movie, "rating": 4, "timestamp": 0}],
        "model": [{**movie, "score": 1.5}],
        "popular": [{**movie, "count": 3}],
        "ignored": [],
    }
    wide = rec.format_result(result, width=400).splitlines()
    narrow = rec.format_result(result, width=60).splitlines()
    assert any("Top 1 from" in line and "Most popular" in line for line in wide)
    assert not any("Top 1 from" in line and "Most popular" in line for line in narrow)
    assert "1970-01-01" in "\n".join(narrow) and "4/5" in "\n".join(narrow)
    assert all(len(line) <= 120 for line in narrow)
    assert "A" * 37 + "…" in "\n".join(narrow)
