"""The prepare step: outputs, manifest, train-only vocabularies, determinism, safe replacement."""

from __future__ import annotations

import json

import pytest

from bst.data import prepare as prep
from bst.data.movielens import load_movielens
from bst.data.split import split_by_time
from bst.vocab import load_vocabularies
from pipelines import prepare as prepare_cli
from tests.conftest import write_dat


def test_outputs_and_manifest(prepared_dir, synthetic_dir):
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    ml = load_movielens(synthetic_dir)
    events, report = split_by_time(ml.ratings)
    assert manifest["counts"]["ratings"] == len(ml.ratings)
    assert manifest["counts"]["users"] == 30
    assert manifest["counts"]["movies"] == ml.ratings.movie_id.nunique()
    assert manifest["splits"]["train"]["events"] == report.train
    assert manifest["splits"]["validation"]["events"] == report.validation == 30
    assert manifest["splits"]["test"]["examples"] == 30
    assert manifest["config"]["num_shards"] == 2
    for rel, digest in manifest["outputs"].items():
        assert prep.sha256(prepared_dir / rel) == digest
    assert len([k for k in manifest["outputs"] if k.startswith("tfrecords/")]) == 6
    header, *rows = (prepared_dir / "sequences.tsv").read_text().splitlines()
    assert header.split("\t")[:4] == ["user_id", "n_train", "n_validation", "n_test"]
    assert len(rows) == 30
    uid, n_train, n_val, n_test, ids, times, ratings = rows[0].split("\t")
    assert int(n_train) + int(n_val) + int(n_test) == len(ids.split()) == len(times.split())


def test_vocabulary_from_training_split_only(tmp_path):
    folder = tmp_path / "raw"
    write_dat(folder, "movies.dat", [f"{m}::Movie {m} (199{m})::Drama|Comedy" for m in range(1, 6)])
    write_dat(folder, "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072"])
    # movie 5 is only ever a test item; movie 4 only a validation item
    write_dat(
        folder,
        "ratings.dat",
        [
            "1::1::5::10",
            "1::2::4::20",
            "1::4::3::30",
            "1::5::3::40",
            "2::1::4::10",
            "2::2::4::11",
            "2::3::2::12",
            "2::1::3::13",
            "2::2::3::14",
        ],
    )
    manifest = prep.prepare(folder, tmp_path / "out", num_shards=1)
    vocabs = load_vocabularies(tmp_path / "out" / "vocab")
    assert vocabs["movie_id"] == ["1", "2", "3"]  # by training frequency, then id
    assert vocabs["year"] == ["1991", "1992", "1993"]
    assert manifest["splits"]["eval_movies_not_in_train_vocab"] == 2


def test_same_inputs_give_identical_bytes(tmp_path, synthetic_dir):
    a = prep.prepare(synthetic_dir, tmp_path / "a", num_shards=2)
    b = prep.prepare(synthetic_dir, tmp_path / "b", num_shards=2)
    assert a == b
    for rel in a["outputs"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/manifest.json").read_bytes() == (
        tmp_path / "b/manifest.json"
    ).read_bytes()


def test_failed_run_keeps_previous_outputs(tmp_path, synthetic_dir):
    out = tmp_path / "out"
    prep.prepare(synthetic_dir, out, num_shards=1)
    before = (out / "manifest.json").read_bytes()
    bad = tmp_path / "bad"
    write_dat(bad, "movies.dat", ["1::A (1995)::Drama"])
    write_dat(bad, "users.dat", ["1::F::1::10::48067"])
    write_dat(bad, "ratings.dat", ["1::1::5::10", "1::1::oops::11"])
    with pytest.raises(Exception, match="ratings.dat line 2"):
        prep.prepare(bad, out, num_shards=1)
    assert (out / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_replace_a_foreign_folder(tmp_path, synthetic_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(Exception, match="not a prepared folder"):
        prep.prepare(synthetic_dir, out, num_shards=1)
    assert (out / "notes.txt").read_text() == "keep me"


def test_cli(tmp_path, synthetic_dir, capsys):
    manifest = prepare_cli.main(
        ["--data-dir", str(synthetic_dir), "--out", str(tmp_path / "o"), "--num-shards", "1"]
    )
    assert manifest["counts"]["users"] == 30
    assert "30 users" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        prepare_cli.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_sasrec_format(tmp_path):
    write_dat(tmp_path / "s", "ml-1m.txt", ["1 1", "1 2", "1 3", "1 4", "2 2", "2 3", "2 4"])
    manifest = prep.prepare(tmp_path / "s", tmp_path / "out", fmt="sasrec", num_shards=1)
    assert manifest["counts"] == {
        "ratings": 7,
        "users": 2,
        "movies": 4,
        "movies_in_table": 4,
        "users_in_table": 2,
    }
    assert manifest["splits"]["test"]["events"] == 2
    assert manifest["config"]["format"] == "sasrec"


@pytest.mark.slow
def test_enriched_overviews_become_token_ids(tmp_path):
    import pandas as pd

    from bst.data.prepared import Prepared

    folder = tmp_path / "raw"
    write_dat(folder, "movies.dat", [f"{m}::Movie {m} (1995)::Drama" for m in range(1, 5)])
    write_dat(folder, "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072"])
    # movie 4 is only a test item: its words must not enter the text vocabulary
    write_dat(
        folder,
        "ratings.dat",
        ["1::1::5::10", "1::2::4::20", "1::3::3::30", "1::4::3::40", "2::1::4::10", "2::2::4::11"],
    )
    enriched = tmp_path / "enriched.csv"
    pd.DataFrame(
        {
            "movie_id": [1, 2, 3, 4],
            "overview": ["a space ship", "space pirates", "", "zebra secret"],
            "method": ["exact", "fuzzy", "none", "exact"],
        }
    ).to_csv(enriched, index=False)
    manifest = prep.prepare(folder, tmp_path / "out", num_shards=1, enriched=enriched)
    text_vocab = (tmp_path / "out" / "vocab" / "text.txt").read_text().splitlines()
    assert "space" in text_vocab and "zebra" not in text_vocab and "secret" not in text_vocab
    assert manifest["text"]["movies_with_text"] == 3
    table, size = Prepared.open(tmp_path / "out").text_table
    assert size == len(text_vocab)
    # movie "1" has vocab index 2 (most frequent); its row holds the ids of "a space ship"
    ids = [i for i in table[2] if i]
    assert [text_vocab[i] for i in ids] == ["a", "space", "ship"]


def test_cold_fraction_holds_movies_out_of_training(tmp_path):
    """The cold-start protocol: the held-out movies' training events are gone, their
    validation and test events stay, they follow the trained movies in the vocabulary and
    their words stay out of the text vocabulary."""
    import pandas as pd

    from bst.data.prepared import Prepared

    folder = tmp_path / "raw"
    write_dat(folder, "movies.dat", [f"{m}::Movie {m} (1995)::Drama" for m in range(1, 11)])
    write_dat(folder, "users.dat", [f"{u}::F::1::10::48067" for u in range(1, 7)])
    ratings = [f"{u}::{m}::4::{100 * u + m}" for u in range(1, 7) for m in range(1, 11)]
    write_dat(folder, "ratings.dat", ratings)
    enriched = tmp_path / "enriched.csv"
    pd.DataFrame(
        {"movie_id": range(1, 11), "overview": [f"common word{m}" for m in range(1, 11)]}
    ).to_csv(enriched, index=False)
    manifest = prep.prepare(
        folder, tmp_path / "out", num_shards=1, enriched=enriched, cold_fraction=0.2
    )
    cold = manifest["cold_start"]
    assert cold["movies"] == 2 and cold["candidates"] == 10
    prepared = Prepared.open(tmp_path / "out")
    vocab = prepared.vocabs["movie_id"]
    held_out = vocab[-2:]
    assert prepared.num_trained_items == len(vocab)  # 8 trained + 2 reserved
    counts = prepared.train_item_counts()
    assert counts[-2:].sum() == 0 and (counts[2:-2] > 0).all()
    removed = sum(1 for u in range(1, 7) for m in range(1, 9) if str(m) in held_out)
    assert cold["train_events_removed"] == removed
    assert manifest["splits"]["train"]["events"] == 6 * 8 - removed
    assert manifest["config"]["cold_fraction"] == 0.2
    text_vocab = (tmp_path / "out" / "vocab" / "text.txt").read_text().splitlines()
    assert all(f"word{m}" not in text_vocab for m in held_out)
    # The same data and fraction hold out the same movies.
    again = prep.prepare(
        folder, tmp_path / "again", num_shards=1, enriched=enriched, cold_fraction=0.2
    )
    assert again["outputs"]["vocab/movie_id.txt"] == manifest["outputs"]["vocab/movie_id.txt"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--cold-fraction", "0.1"],
            "--cold-fraction (data.cold_fraction) 0.1 holds out movies that have an overview: "
            "give --catalog or --enriched too",
        ),
        (["--cold-fraction", "0.9", "--enriched", "x.csv"], "--cold-fraction must be in [0, 0.5]"),
        (["--cold-fraction", "nan", "--enriched", "x.csv"], "--cold-fraction must be in [0, 0.5]"),
    ],
)
def test_cold_fraction_flag_mistakes(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        prepare_cli.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
