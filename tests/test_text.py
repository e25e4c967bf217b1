"""Plot overviews as a feature, end to end on tiny data: ``bst.train --catalog`` joins a
catalog to ``movies.dat``, prepares the overview tokens, trains with them and exports a
servable whose answers equal the in-memory model's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import tensorflow as tf

from bst import config
from bst import train as train_cli
from bst.data.movielens import read_movies
from bst.metrics import load_eval_data
from bst.model import load_run
from bst.scoring import aligned_scores
from tests.conftest import brute_force_metrics, served_and_expected_top_k, tiny_on_files

pytestmark = pytest.mark.slow

WORDS = ["space", "love", "war", "heist", "ghost", "robot", "island", "spy"]


def write_catalog(movies_dat: Path, out: Path, every: int = 1) -> dict[int, str]:
    """A TMDB-style catalog listing every ``every``-th movie of ``movies_dat`` under its
    catalog title ("The X" for ML-1M's "X, The"), with a made-up overview."""
    movies = read_movies(movies_dat)
    overviews = {}
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "original_title", "release_date", "overview"])
        for i, row in enumerate(movies.itertuples()):
            if i % every:
                continue
            title = row.raw_title if hasattr(row, "raw_title") else row.title
            title = title.rsplit(" (", 1)[0]
            if title.endswith(", The"):
                title = "The " + title[: -len(", The")]
            text = f"A story of {WORDS[row.movie_id % len(WORDS)]} and {WORDS[i % 3]}."
            overviews[int(row.movie_id)] = text
            writer.writerow([1000 + i, title, title, f"{int(row.year)}-06-01", text])
    return overviews


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, synthetic_dir) -> Path:
    root = tmp_path_factory.mktemp("text")
    catalog = root / "catalog.csv"
    write_catalog(synthetic_dir / "movies.dat", catalog, every=2)
    run_dir = root / "run"
    train_cli.main(
        tiny_on_files(
            synthetic_dir, run_dir, "--catalog", str(catalog), export_dir=str(run_dir / "saved")
        )
    )
    return run_dir


def test_catalog_flag_joins_prepares_text_and_records_the_join(text_run, synthetic_dir):
    cfg = config.load(text_run / "config.json")
    assert len(cfg.data.catalogs) == 1 and Path(cfg.data.catalogs[0]).is_absolute()
    enriched = Path(cfg.data.enriched)
    assert enriched == text_run / "enriched" / "movies_enriched.csv"
    report = json.loads((text_run / "enriched" / "movies_enriched.report.json").read_text())
    movies = len(read_movies(synthetic_dir / "movies.dat"))
    assert report["movies"] == movies
    assert report["matched"] == (movies + 1) // 2  # every other movie is in the catalog
    manifest = json.loads((Path(cfg.data.prepared_dir) / "manifest.json").read_text())
    assert manifest["config"]["enriched"] is True
    assert manifest["text"]["movies_with_text"] == report["matched"]


def test_text_model_trains_and_its_servable_answers_like_the_in_memory_model(text_run):
    cfg, model, prepared = load_run(text_run)
    table, vocab_size = prepared.text_table
    assert table is not None and vocab_size > 2
    assert (table > 0).any(axis=1).sum() > 0  # some movies carry tokens
    names = [w.name for w in model.weights]
    assert any("text" in n for n in names), names
    metrics = json.loads((text_run / "metrics.json").read_text())
    # the figures written are the ones the saved text model scores, ranked by brute force
    test_data = load_eval_data(prepared, "test")
    rows = aligned_scores(model, cfg, "test", test_data)
    brute = brute_force_metrics(rows, test_data.histories, test_data.targets)
    for key in ("hr@10", "ndcg@10", "mrr"):
        assert metrics["test"][key] == pytest.approx(brute[key], abs=1e-6), key
    assert 0 < brute["ndcg@10"] < 1

    versions = sorted((text_run / "saved").iterdir())
    loaded = tf.saved_model.load(str(versions[-1]))
    _, got, expected = served_and_expected_top_k(cfg, model, prepared, loaded)
    assert (got[:, 0] == expected[:, 0]).all()
    assert (got == expected).mean() > 0.95  # float ties may swap neighbours


def test_a_reused_prepared_folder_without_text_is_refused(text_run, prepared_dir, tmp_path, capsys):
    """--catalog with a data.prepared_dir prepared without overviews would silently train
    without text: one line, exit 2, nothing written."""
    catalog = Path(config.load(text_run / "config.json").data.catalogs[0])
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(
            tiny_on_files(
                prepared_dir.parent,
                run_dir,
                "--set",
                f"data.prepared_dir={prepared_dir}",
                "--catalog",
                str(catalog),
            )
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "was prepared without movie overviews" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--catalog", "no/such.csv"], "--catalog no/such.csv: file not found"),
        (["--set", "data.catalogs=x.csv"], "data.catalogs with data.synthetic=true"),
    ],
)
def test_catalog_mistakes_are_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["--preset", "tiny", "--run-dir", str(tmp_path / "r"), *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
