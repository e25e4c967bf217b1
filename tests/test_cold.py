"""Cold start on tiny synthetic data with a planted text signal: movies held out of training
(``data.cold_fraction``) and movies added at export (``bst.export --add-movies``) are
embedded from their overview, genres and year, ranked, served and named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bst import export as export_cli
from bst import features as F
from bst import train as train_cli
from bst.data.movielens import read_movies
from bst.data.prepared import Prepared
from bst.evaluate import evaluate
from bst.model import load_run
from bst.recommend import recommend
from bst.versions import read_origin
from bst.vocab import read_vocabulary
from tests.conftest import tiny_on_files

pytestmark = pytest.mark.slow


def zone(movie_id: int) -> str:
    """Neighbours on the synthetic ring (the likely next movie) share a zone word."""
    return f"zone{movie_id // 4}"


def write_catalog(movies_dat: Path, out: Path) -> dict[int, str]:
    """A TMDB-style catalog of every movie: its zone word, a word only it uses, filler."""
    overviews = {}
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "original_title", "release_date", "overview"])
        for row in read_movies(movies_dat).itertuples():
            title = row.title.rsplit(" (", 1)[0]
            if title.endswith(", The"):
                title = "The " + title[: -len(", The")]
            text = f"A {zone(row.movie_id)} story, told once: only{row.movie_id}."
            overviews[int(row.movie_id)] = text
            writer.writerow([row.movie_id, title, title, f"{int(row.year)}-06-01", text])
    return overviews


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory, synthetic_dir) -> tuple[Path, dict[int, str]]:
    root = tmp_path_factory.mktemp("cold")
    overviews = write_catalog(synthetic_dir / "movies.dat", root / "catalog.csv")
    run_dir = root / "run"
    train_cli.main(
        tiny_on_files(
            synthetic_dir,
            run_dir,
            "--catalog",
            str(root / "catalog.csv"),
            "--set",
            "data.cold_fraction=0.2",
            "--set",
            "train.epochs=8",
        )
    )
    return run_dir, overviews


def test_held_out_movies_leave_training_and_the_text_vocabulary(cold_run):
    run_dir, overviews = cold_run
    cfg, model, prepared = load_run(run_dir)
    manifest = prepared.manifest
    cold = manifest["cold_start"]
    assert cold["movies"] == round(0.2 * cold["candidates"]) == prepared.cold_movies > 0
    vocab = prepared.vocabs[F.MOVIE_ID]
    held_out = vocab[len(vocab) - cold["movies"] :]  # the last entries
    trained = vocab[: len(vocab) - cold["movies"]]
    assert prepared.num_trained_items == len(trained) + F.NUM_RESERVED

    sequences = prepared.sequences
    counts = prepared.train_item_counts()
    assert counts[prepared.num_trained_items :].sum() == 0  # no training event of theirs
    assert (counts[F.NUM_RESERVED : prepared.num_trained_items] > 0).all()
    assert cold["train_events_removed"] > 0
    test = sequences.split("test")
    assert (test.targets >= prepared.num_trained_items).sum() == cold["test_targets"] > 0

    text_vocab = read_vocabulary(prepared.folder / "vocab" / "text.txt")
    assert all(f"only{m}" not in text_vocab for m in held_out)  # training movies only
    assert any(f"only{m}" in text_vocab for m in trained)
    table, _ = prepared.text_table
    row = table[vocab.index(held_out[0]) + F.NUM_RESERVED]
    assert F.OOV in row  # its own word is out of vocabulary, not added

    # No id term for a held-out movie: its catalog row is its content alone.
    items = model.encoder.items
    catalog = items.all_items().numpy()
    rows = np.arange(prepared.num_trained_items, items.num_items)
    content = items.content(
        items.genre_table[rows], items.year_table[rows], items.text_table[rows]
    ).numpy()
    np.testing.assert_allclose(catalog[rows], content, rtol=1e-6, atol=1e-6)
    assert not np.allclose(
        catalog[2],
        items.content(items.genre_table[[2]], items.year_table[[2]], items.text_table[[2]]).numpy()[
            0
        ],
    )


def test_evaluate_reports_the_held_out_targets_and_the_text_beats_the_baselines(cold_run):
    run_dir, _ = cold_run
    result = evaluate(run_dir)
    cold = result["cold_start"]
    assert cold["users"] > 0
    models = cold["models"]
    # Popularity and transitions never saw these movies: every one of them ties at their
    # lowest score, below each unseen trained movie (ties count against a model). The
    # planted signal: a held-out movie shares its zone word with the movie before it on
    # the ring, so the text-aware model ranks it above them.
    for name in ("popularity", "item_transition"):
        assert models["BST"]["mrr"] > 1.5 * models[name]["mrr"], (name, models)
    report = (run_dir / "eval" / "test" / "report.md").read_text()
    assert "## Cold start: targets held out of training" in report
    saved = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    assert saved["cold_start"]["users"] == cold["users"]


def test_export_adds_new_movies_embedded_from_their_text(cold_run, tmp_path):
    """A new movie that copies a held-out movie's overview, genres and year gets the same
    vector (both are content-only): the same score for any history, and the same effect
    as that movie inside a history. The answer carries its title."""
    run_dir, overviews = cold_run
    cfg, model, prepared = load_run(run_dir)
    vocab = prepared.vocabs[F.MOVIE_ID]
    twin_of = vocab[-1]  # a held-out movie
    movie = prepared.movies.set_index("movie_id").loc[twin_of]
    new_csv = tmp_path / "new.csv"
    with open(new_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["movie_id", "title", "year", "genres", "overview"])
        writer.writerow(
            ["9001", "Brand New (2001)", movie["year"], movie["genres"], overviews[int(twin_of)]]
        )
        writer.writerow([vocab[0], "Already there", "", "", "x"])  # skipped: in the catalog
        writer.writerow(["9002", "No Overview", "", "", ""])  # skipped: nothing to embed
    out = tmp_path / "saved"
    path = export_cli.export(run_dir, out, k=len(vocab) + 1, add_movies=new_csv)
    origin = read_origin(path)
    assert origin["added_movies"]["movies"] == 1
    loaded = tf.saved_model.load(str(path))

    history = tf.constant([[vocab[0], vocab[1], vocab[2]]])
    others = [m for m in vocab[3:12]]
    scored = loaded.signatures["score"](
        history=history, candidates=tf.constant([[twin_of, "9001", *others]])
    )["scores"].numpy()[0]
    assert scored[0] == pytest.approx(scored[1], rel=1e-5, abs=1e-5)
    assert (scored[1] > -1e8).all()  # known, not the unknown score

    in_history = loaded.signatures["score"](
        history=tf.constant([[vocab[0], vocab[1], "9001"], [vocab[0], vocab[1], twin_of]]),
        candidates=tf.constant([others, others]),
    )["scores"].numpy()
    np.testing.assert_allclose(in_history[0], in_history[1], rtol=1e-5, atol=1e-5)

    top = loaded.signatures["serving_default"](history=history)
    ids = top["movie_ids"].numpy().astype(str)[0].tolist()
    titles = [t.decode("utf-8") for t in top["titles"].numpy()[0]]
    assert titles[ids.index("9001")] == "Brand New (2001)"
    assert "9002" not in ids

    # bst.recommend with that model: the new movie is shown with its title.
    unseen = len(vocab) + 1 - 3  # the whole exported catalog but the history
    picks = recommend(run_dir, movies=[vocab[0], vocab[1], vocab[2]], model_dir=out, k=unseen)
    shown = {m["movie_id"]: m["title"] for m in picks["model"]}
    assert shown["9001"] == "Brand New (2001)"

    # The same export again: the newest version already holds it.
    assert export_cli.export(run_dir, out, k=len(vocab) + 1, add_movies=new_csv) == path


@pytest.mark.parametrize(
    "rows, message",
    [
        ([["movie_id", "title"], ["1", "x"]], "missing overview"),
        ([["movie_id", "title", "overview"], ["", "x", "y"]], "is empty or has a space"),
        ([["movie_id", "title", "overview"], ["1", "x", ""]], "adds no movie"),
        ([["movie_id", "title", "overview", "year"], ["777", "x", "y", "nineteen"]], "year"),
        (
            [["movie_id", "title", "overview"], ["777", "x", "y"], ["777", "z", "w"]],
            "movie_id 777 repeats",
        ),
    ],
)
def test_bad_new_movie_files_are_one_line(trained_run, tmp_path, capsys, rows, message):
    new_csv = tmp_path / "new.csv"
    with open(new_csv, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    out = tmp_path / "saved"
    with pytest.raises(SystemExit) as exit_:
        export_cli.main(
            ["--run-dir", str(trained_run), "--model-dir", str(out), "--add-movies", str(new_csv)]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and new_csv.name in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_cold_fraction_needs_overviews(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(
            [
                "--preset",
                "tiny",
                "--run-dir",
                str(tmp_path / "r"),
                "--set",
                "data.cold_fraction=0.1",
            ]
        )
    assert exit_.value.code == 2
    assert "give --catalog" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_prepared_folder_with_another_cold_fraction_is_refused(cold_run, tmp_path, capsys):
    run_dir, _ = cold_run
    prepared = Prepared.open(
        json.loads((run_dir / "config.json").read_text())["data"]["prepared_dir"]
    )
    enriched = run_dir / "enriched" / "movies_enriched.csv"
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(
            tiny_on_files(
                tmp_path,
                tmp_path / "r",
                "--set",
                f"data.prepared_dir={prepared.folder}",
                "--set",
                f"data.enriched={enriched}",
            )
        )
    assert exit_.value.code == 2
    assert "data.cold_fraction=0.2 but this run asks for 0" in capsys.readouterr().err


def test_prepare_takes_the_data_flags_of_train_and_prepares_the_same(
    cold_run, synthetic_dir, tmp_path
):
    """pipelines.prepare --catalog --cold-fraction joins beside its folder and writes the
    prepared data bst.train --catalog --set data.cold_fraction wrote for its run."""
    from pipelines import prepare as prepare_cli

    run_dir, _ = cold_run
    out = tmp_path / "p"
    catalog = run_dir.parent / "catalog.csv"
    flags = ["--catalog", str(catalog), "--cold-fraction", "0.2", "--num-shards", "2"]
    manifest = prepare_cli.main(["--data-dir", str(synthetic_dir), "--out", str(out), *flags])
    assert (tmp_path / "p-enriched" / "movies_enriched.csv").is_file()
    assert (tmp_path / "p-enriched" / "movies_enriched.report.md").is_file()
    assert not list(synthetic_dir.glob("movies_enriched*"))  # nothing into the data folder
    trained = json.loads((run_dir / "prepared" / "manifest.json").read_text())
    for name in ("sequences.tsv", "vocab/movie_id.txt", "vocab/text.txt"):
        assert manifest["outputs"][name] == trained["outputs"][name], name
    assert manifest["cold_start"] == trained["cold_start"]
