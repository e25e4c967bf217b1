"""Every input format: the same events in any format give the same prepared sequences;
detection, refusal and download; bad input in the generic table names file and line."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bst.data import download as dl
from bst.data import formats
from bst.data.interactions import Columns
from bst.data.prepare import prepare
from bst.data.ratings import rating_levels
from bst.errors import DataError, UsageError
from pipelines import prepare as prepare_cli
from tests.conftest import write_dat

# Ten users, eight movies; user 9 has ties in time (kept in file order), user 10 has
# two events only (train-only). Row order is the file order of the MovieLens formats.
rng = np.random.default_rng(0)
EVENTS = [
    (u, int(m), int(r), 978_300_000 + 1000 * u + 60 * k)
    for u in range(1, 9)
    for k, (m, r) in enumerate(zip(rng.permutation(8)[:6] + 1, rng.integers(1, 6, 6), strict=True))
] + [(9, 3, 4, 978_400_000), (9, 1, 5, 978_400_000), (9, 2, 3, 978_400_000), (9, 4, 2, 978_400_500)]
EVENTS += [(10, 5, 3, 978_500_000), (10, 6, 4, 978_500_100)]
MOVIES = [
    (m, f"Movie {m}, The ({1990 + m})", "Drama|Comedy" if m % 2 else "Action") for m in range(1, 9)
]
USERS = [(u, "F" if u % 2 else "M", "25", "4", f"{10000 + u}") for u in range(1, 11)]


def write_ml1m(folder: Path) -> Path:
    write_dat(folder, "ratings.dat", [f"{u}::{m}::{r}::{t}" for u, m, r, t in EVENTS])
    write_dat(folder, "movies.dat", [f"{m}::{t}::{g}" for m, t, g in MOVIES])
    write_dat(folder, "users.dat", [f"{u}::{g}::{a}::{o}::{z}" for u, g, a, o, z in USERS])
    return folder


def write_ml10m(folder: Path) -> Path:
    write_dat(folder, "ratings.dat", [f"{u}::{m}::{float(r):g}::{t}" for u, m, r, t in EVENTS])
    write_dat(folder, "movies.dat", [f"{m}::{t}::{g}" for m, t, g in MOVIES], encoding="utf-8")
    write_dat(folder, "tags.dat", ["1::1::funny::978300760"])
    return folder


def write_ml100k(folder: Path) -> Path:
    genres = ["unknown", "Action", "Comedy", "Drama"]
    write_dat(folder, "u.data", [f"{u}\t{m}\t{r}\t{t}" for u, m, r, t in EVENTS])
    flags = {m: ["1" if g in gs.split("|") else "0" for g in genres] for m, _, gs in MOVIES}
    write_dat(
        folder,
        "u.item",
        [f"{m}|{t}|01-Jan-{1990 + m}||http://x|{'|'.join(flags[m])}" for m, t, _ in MOVIES],
    )
    write_dat(folder, "u.genre", [f"{g}|{i}" for i, g in enumerate(genres)])
    write_dat(folder, "u.user", [f"{u}|{a}|{g}|{o}|{z}" for u, g, a, o, z in USERS])
    return folder


def write_mlcsv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(EVENTS, columns=["userId", "movieId", "rating", "timestamp"]).assign(
        rating=lambda d: d["rating"].astype(float)
    ).to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame(MOVIES, columns=["movieId", "title", "genres"]).to_csv(
        folder / "movies.csv", index=False
    )
    return folder


def generic_frame(iso: bool = True) -> pd.DataFrame:
    """The same events with string ids and ISO-8601 times, rows shuffled (ties of user 9
    stay in their relative order, which is what defines their order)."""
    frame = pd.DataFrame(EVENTS, columns=["customer", "product", "stars", "ts"])
    frame["customer"] = frame["customer"].astype(str)
    frame["product"] = frame["product"].astype(str)
    if iso:
        frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True).dt.strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    order = np.r_[
        rng.permutation(np.flatnonzero(frame["customer"] != "9")),
        np.flatnonzero(frame["customer"] == "9"),
    ]
    return frame.iloc[order].reset_index(drop=True)


COLUMNS = Columns(user="customer", item="product", time="ts", rating="stars")


def sequences(out: Path) -> dict[str, str]:
    """``sequences.tsv`` rows by user id (without the user column)."""
    rows = (out / "sequences.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {r.split("\t")[0]: r.split("\t", 1)[1] for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml1m")
    prepare(write_ml1m(root / "raw"), root / "out", num_shards=1)
    return root / "out"


@pytest.mark.parametrize(
    "writer, fmt", [(write_ml100k, "ml-100k"), (write_mlcsv, "ml-csv"), (write_ml10m, "ml-10m")]
)
def test_movielens_formats_give_the_same_sequences(tmp_path, reference, writer, fmt):
    manifest = prepare(writer(tmp_path / "raw"), tmp_path / "out", num_shards=1)
    assert manifest["config"]["format"] == fmt
    assert sequences(tmp_path / "out") == sequences(reference)
    for name in ("movie_id.txt", "genres.txt", "year.txt"):
        assert (tmp_path / "out/vocab" / name).read_text() == (
            reference / "vocab" / name
        ).read_text()
    assert manifest["splits"] == json.loads((reference / "manifest.json").read_text())["splits"]
    assert manifest["provides"]["profile"] == (
        ["gender", "age", "occupation", "zip"] if fmt == "ml-100k" else []
    )


def test_generic_csv_with_iso_times_gives_the_same_sequences(tmp_path, reference):
    raw = tmp_path / "raw"
    raw.mkdir()
    generic_frame().to_csv(raw / "interactions.csv", index=False)
    manifest = prepare(raw, tmp_path / "out", num_shards=1, columns=COLUMNS)
    assert manifest["config"]["format"] == "interactions"
    assert manifest["provides"]["time_unit"] == "iso-8601"
    assert sequences(tmp_path / "out") == sequences(reference)
    assert (tmp_path / "out/vocab/movie_id.txt").read_text() == (
        reference / "vocab/movie_id.txt"
    ).read_text()
    assert (tmp_path / "out/vocab/genres.txt").read_text() == ""  # no items table: no genres


def test_generic_parquet_with_timestamp_column_and_side_tables(tmp_path, reference):
    raw = tmp_path / "raw"
    raw.mkdir()
    frame = generic_frame(iso=False)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s")
    frame.to_parquet(raw / "interactions.parquet")
    items = pd.DataFrame(
        [(str(m), t.rsplit(" (", 1)[0], g, 1990 + m) for m, t, g in MOVIES],
        columns=["product", "title", "genres", "year"],
    )
    items.to_parquet(raw / "items.parquet")
    # a generic users table: its columns are the profile, each value its own token
    users = pd.DataFrame(
        [(str(u), g, z, "" if u == 2 else "gold") for u, g, _, _, z in USERS],
        columns=["customer", "gender", "zip", "plan"],
    )
    users.to_csv(raw / "users.tsv", sep="\t", index=False)
    manifest = prepare(raw, tmp_path / "out", num_shards=1, columns=COLUMNS)
    assert manifest["provides"]["time_unit"] == "datetime"
    assert manifest["profile"] == {"features": ["gender", "zip", "plan"], "rule": "plain"}
    assert sequences(tmp_path / "out") == sequences(reference)
    for name in ("movie_id.txt", "genres.txt", "year.txt", "gender.txt"):
        assert (tmp_path / "out/vocab" / name).read_text() == (
            reference / "vocab" / name
        ).read_text()
    assert (tmp_path / "out/vocab/plan.txt").read_text() == "gold\n"
    assert len((tmp_path / "out/vocab/zip.txt").read_text().split()) == len(USERS)  # whole codes
    assert not (tmp_path / "out/vocab/occupation.txt").exists()


def test_string_ids_and_millisecond_times(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [
        ("a@x", "tt0114709", 1_600_000_000_500),
        ("a@x", "f81d4fae-7dec", 1_600_000_000_100),
        ("a@x", "tt0113497", 1_600_000_001_000),
        ("b", "tt0114709", 1_600_000_000_000),
    ]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(
        raw / "interactions.tsv", sep="\t", index=False
    )
    manifest = prepare(raw, tmp_path / "out", num_shards=1)
    assert manifest["provides"]["time_unit"] == "ms" and manifest["provides"]["ratings"] is False
    seq = sequences(tmp_path / "out")
    # milliseconds order the events inside one second; the file stores seconds
    assert (
        seq["a@x"]
        == "1\t1\t1\tf81d4fae-7dec tt0114709 tt0113497\t1600000000 1600000000 1600000001\t0 0 0"
    )
    assert seq["b"].startswith("1\t0\t0\ttt0114709")
    assert manifest["rating_scale"] == []


def test_rating_levels():
    levels, scale = rating_levels(pd.Series([1, 5, 3, 0]))
    assert levels.tolist() == [1, 5, 3, 0] and scale == [1, 2, 3, 4, 5]
    levels, scale = rating_levels(pd.Series([0.5, 5.0, 3.5]))
    assert levels.tolist() == [1, 10, 7] and len(scale) == 10
    levels, scale = rating_levels(pd.Series([0.0, 7.0, 10.0, np.nan]))  # 0-10 scale: 0 is a rating
    assert levels.tolist() == [1, 2, 3, 0] and scale == [0.0, 7.0, 10.0]
    with pytest.raises(DataError, match="21 distinct values.*data.rating_column=''"):
        rating_levels(pd.Series(np.arange(21) / 7))


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            "user_id,item,timestamp\n1,2,3\n",
            r"interactions.csv: missing column item_id \(columns found: user_id, item, timestamp\); set data.item_column",
        ),
        (
            "user_id,item_id,timestamp\n1,2,3\n1,2,yesterday\n",
            r"interactions.csv line 3: expected a timestamp .* got 'yesterday'",
        ),
        (
            "user_id,item_id,timestamp\n1,2,2001-02-30T00:00:00\n",
            r"line 2: expected an ISO-8601 timestamp",
        ),
        ("user_id,item_id,timestamp\n1,2,3\n,2,4\n", r"line 3: user id '' is empty"),
        ("user_id,item_id,timestamp\n1,a b,3\n", r"line 2: item id 'a b' is not usable"),
        (
            "user_id,item_id,timestamp,rating\n1,2,3,4\n1,3,4,good\n",
            r"line 3: expected a rating .* got 'good'",
        ),
        ("user_id,item_id,timestamp\n", r"interactions.csv: has a header but no rows"),
    ],
)
def test_bad_generic_input_names_file_and_line(tmp_path, rows, message):
    (tmp_path / "interactions.csv").write_text(rows)
    with pytest.raises(DataError, match=message):
        formats.resolve(tmp_path)[0].load(tmp_path, formats.Options())


def test_parquet_column_of_the_wrong_type(tmp_path):
    pd.DataFrame({"user_id": [True], "item_id": ["a"], "timestamp": [1]}).to_parquet(
        tmp_path / "interactions.parquet"
    )
    with pytest.raises(DataError, match=r"interactions.parquet: column 'user_id' has type bool"):
        formats.FORMATS["interactions"].load(tmp_path, formats.Options())


def test_unknown_items_and_duplicates_are_counted(tmp_path):
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\nu,a,1\nu,a,2\nu,zz,3\nu,b,4\n"
    )
    (tmp_path / "items.csv").write_text("item_id,title\na,Alpha\nb,Beta\n")
    ml, _ = formats.FORMATS["interactions"].load(tmp_path, formats.Options())
    assert ml.report.duplicate_pairs == 1 and ml.report.unknown_movie_ratings == 1
    assert "dropped 1 ratings of movies missing from items.csv" in " ".join(ml.report.notes)
    assert ml.ratings["movie_id"].tolist() == ["a", "a", "b"]


def test_detection_and_refusal(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(dl, "download", no_download)
    assert formats.resolve(write_ml100k(tmp_path / "a"))[0].name == "ml-100k"
    assert formats.resolve(write_mlcsv(tmp_path / "b" / "ml-latest-small")) == (
        formats.FORMATS["ml-csv"],
        tmp_path / "b" / "ml-latest-small",
    )
    assert (
        formats.resolve(tmp_path / "b")[1] == tmp_path / "b" / "ml-latest-small"
    )  # release folder inside
    other = tmp_path / "other"
    other.mkdir()
    (other / "clicks.json").write_text("{}")
    with pytest.raises(
        DataError,
        match=r"no dataset bst reads in .*other \(found clicks.json\); bst reads MovieLens 1M",
    ):
        formats.resolve(other)
    with pytest.raises(DataError, match="holds MovieLens 100K.*not format ml-csv"):
        formats.resolve(tmp_path / "a", "ml-csv")
    with pytest.raises(DataError, match="holds MovieLens 100K: .*not downloading ml-25m into it"):
        formats.resolve(tmp_path / "a", dataset="ml-25m")
    (tmp_path / "a" / "u.user").unlink()
    with pytest.raises(DataError, match=r"u.user is missing in .*a \(found u.data, u.item\)"):
        formats.resolve(tmp_path / "a")
    with pytest.raises(UsageError, match="unknown format 'ml-2m'"):
        formats.resolve(tmp_path, "ml-2m")


def test_dataset_download_checks_the_published_md5(tmp_path, monkeypatch):
    src = write_ml100k(tmp_path / "src")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in src.iterdir():
            zf.write(p, f"ml-100k/{p.name}")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    served = {
        archive.name: archive.read_bytes(),
        archive.name + ".md5": f"MD5 (ml-100k.zip) = {md5}\n".encode(),
    }

    def fake_download(url, dest, expected_md5=None, what=""):
        data = served[url.rsplit("/", 1)[1]]
        if expected_md5 and hashlib.md5(data).hexdigest() != expected_md5:
            raise DataError("checksum mismatch", dest)
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(data)
        return Path(dest)

    monkeypatch.setattr(dl, "download", fake_download)
    cache = tmp_path / "cache"
    unpinned = formats.Dataset("ml-100k", "ml-100k", "ml-100k")  # md5 read from the .md5 file
    monkeypatch.setitem(formats.DATASETS, "ml-100k", unpinned)
    fmt, folder = formats.resolve(cache, dataset="ml-100k")
    assert (fmt.name, folder) == ("ml-100k", cache / "ml-100k")
    assert (cache / "ml-100k.zip.md5").is_file()
    pinned = formats.Dataset("ml-100k", "ml-100k", "ml-100k", "0" * 32)
    monkeypatch.setitem(formats.DATASETS, "ml-100k", pinned)
    with pytest.raises(DataError, match="checksum mismatch"):
        formats.resolve(tmp_path / "cache2", dataset="ml-100k")
    assert not (tmp_path / "cache2" / "ml-100k").exists()


def test_prepare_cli_takes_the_data_options(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    generic_frame().to_csv(raw / "interactions.csv", index=False)
    sets = [
        "--set",
        "data.user_column=customer",
        "--set",
        "data.item_column=product",
        "--set",
        "data.time_column=ts",
        "--set",
        "data.rating_column=stars",
    ]
    manifest = prepare_cli.main(
        ["--data-dir", str(raw), "--out", str(tmp_path / "o"), *sets, "--set", "data.num_shards=3"]
    )
    assert manifest["config"]["num_shards"] == 3 and manifest["provides"]["ratings"]
    for argv, message in [
        (["--set", "model.dim=8"], "--set model.dim: pipelines.prepare takes only data.* fields"),
        (
            ["--num-shards", "2", "--set", "data.num_shards=3"],
            "--num-shards and --set data.num_shards are both given",
        ),
        (
            ["--format", "ml-100k"],
            "holds a generic table: interactions.csv, .tsv or .parquet (+ optional items.*, users.*), not format ml-100k",
        ),
    ]:
        with pytest.raises(SystemExit) as exit_:
            prepare_cli.main(["--data-dir", str(raw), "--out", str(tmp_path / "p"), *argv])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


def test_format_tables_match_the_config_names():
    from bst import config

    assert formats.FORMAT_CHOICES == config.FORMAT_NAMES
    assert tuple(formats.DATASETS) == config.DATASET_NAMES


@pytest.mark.slow
def test_string_ids_end_to_end(tmp_path, capsys):
    """Train, recommend, export and serve on a generic table whose ids are text."""
    import tensorflow as tf

    from bst import recommend, train
    from tests.conftest import tiny_on_files

    raw = tmp_path / "raw"
    raw.mkdir()
    frame = pd.DataFrame(
        [(f"user-{e[0]}@x", f"tt{e[1]:07d}", e[3], e[2] - 0.5) for e in EVENTS],
        columns=["user_id", "item_id", "timestamp", "rating"],
    )
    frame.to_csv(raw / "interactions.csv", index=False)
    pd.DataFrame(
        {"item_id": [f"tt{m:07d}" for m, _, _ in MOVIES], "title": [t for _, t, _ in MOVIES]}
    ).to_csv(raw / "items.csv", index=False)
    pd.DataFrame(
        {
            "user_id": [f"user-{u}@x" for u, *_ in USERS],
            "country": ["DE", "FR"] * 5,
            "plan": ["a", "b", ""] * 3 + ["a"],
        }
    ).to_csv(raw / "users.csv", index=False)
    run, models = tmp_path / "run", tmp_path / "models"
    result = train.main(
        tiny_on_files(raw, run, "--set", "data.num_shards=1", export_dir=str(models))
    )
    assert 0 <= result["test"]["ndcg@10"] <= 1
    shown = recommend.main(["--run-dir", str(run), "--user", "user-3@x", "--k", "3"])
    history = [m["movie_id"] for m in shown["history"]]
    assert len(shown["model"]) == min(3, len(MOVIES) - len(set(history)))
    assert all(m["movie_id"].startswith("tt") for m in shown["model"])
    assert not set(history) & {m["movie_id"] for m in shown["model"]}
    assert {m["rating"] for m in shown["history"]} <= {
        0.5,
        1.5,
        2.5,
        3.5,
        4.5,
    }  # half stars, as given
    assert "Movie " in capsys.readouterr().out  # titles from items.csv
    loaded = tf.saved_model.load(str(next(models.iterdir())))
    out = loaded.signatures["serving_default"](history=tf.constant([history]))
    served = out["movie_ids"].numpy().astype(str)[0][: len(MOVIES) - len(set(history))]
    assert all(m.startswith("tt") for m in served) and not set(served) & set(history)
    # the users table's own columns are the profile inputs, in the model and the servable
    signature = loaded.signatures["with_profile"]
    assert set(signature.structured_input_signature[1]) == {"history", "country", "plan"}
    with_profile = signature(
        history=tf.constant([history]), country=tf.constant(["DE"]), plan=tf.constant([""])
    )
    assert with_profile["movie_ids"].shape == out["movie_ids"].shape
    cfg, model, _ = __import__("bst.model", fromlist=["load_run"]).load_run(run)
    assert {"country", "plan"} <= set(model.input_names)
    assert {w.name.split("/")[0] for w in model.weights} >= {"country_embedding", "plan_embedding"}


def test_a_prepared_folder_of_another_source_is_refused(tmp_path):
    from bst import config
    from bst.data.prepare import ensure_prepared

    cfg = config.replace(
        config.ml1m(),
        {
            "data.data_dir": str(write_ml100k(tmp_path / "raw")),
            "data.prepared_dir": str(tmp_path / "p"),
        },
    )
    assert ensure_prepared(cfg, tmp_path / "run").data.format == "auto"
    assert json.loads((tmp_path / "p/manifest.json").read_text())["config"]["format"] == "ml-100k"
    for key, value, message in [
        (
            "data.format",
            "ml-csv",
            "prepared from format ml-100k but this run asks for data.format=ml-csv",
        ),
        (
            "data.dataset",
            "ml-100k",
            "prepared from another source but this run asks for data.dataset=ml-100k",
        ),
    ]:
        with pytest.raises(UsageError, match=message):
            ensure_prepared(config.replace(cfg, {key: value}), tmp_path / "run")


def test_rating_head_is_refused_on_another_scale(tmp_path, capsys):
    from bst import train
    from tests.conftest import tiny_on_files

    write_mlcsv(tmp_path / "raw")
    ratings = pd.read_csv(tmp_path / "raw/ratings.csv")
    ratings.assign(rating=ratings["rating"] - 0.5).to_csv(tmp_path / "raw/ratings.csv", index=False)
    with pytest.raises(SystemExit) as exit_:
        train.main(
            tiny_on_files(tmp_path / "raw", tmp_path / "run", "--set", "model.rating_head=true")
        )
    assert exit_.value.code == 2
    assert (
        "model.rating_head predicts ratings of 1 to 5 stars, but this data has ratings on the scale [0.5"
        in capsys.readouterr().err
    )


def test_half_star_ratings_are_checked(tmp_path):
    write_ml10m(tmp_path)
    write_dat(tmp_path, "ratings.dat", ["1::1::4.5::978300760", "1::2::4.25::978300761"])
    with pytest.raises(
        DataError,
        match=r"ratings.dat line 2: expected a rating from 0.5 to 5 in half stars, got 4.25",
    ):
        formats.resolve(tmp_path)[0].load(tmp_path, formats.Options())
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.5,978300760\n1,2,x,978300761\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"Heat, The (1995)",Action\n2,B,(no genres listed)\n'
    )
    with pytest.raises(DataError, match=r"ratings.csv line 3: expected a rating .* got 'x'"):
        formats.FORMATS["ml-csv"].load(tmp_path, formats.Options())


def test_features_the_data_lacks_are_absent_from_the_model(tmp_path):
    """No users file and no years: no profile embeddings, no year term; ML-1M keeps all."""
    from bst import config
    from bst.data.prepared import Prepared
    from bst.model import Tables, build_model

    raw = tmp_path / "raw"
    raw.mkdir()
    generic_frame().to_csv(raw / "interactions.csv", index=False)
    prepare(raw, tmp_path / "out", num_shards=1, columns=COLUMNS)
    cfg = config.replace(config.tiny(), {"data.prepared_dir": str(tmp_path / "out")})
    lacking = build_model(cfg, Tables.from_prepared(Prepared.open(tmp_path / "out")))
    assert lacking.encoder.profile == {}
    names = {w.name.split("/")[0] for w in lacking.weights}
    assert not any(n.startswith(("gender", "age", "occupation", "zip")) for n in names)
    catalog = lacking.encoder.items.all_items().numpy()
    assert np.allclose(catalog[0], 0)  # padding
    assert lacking.encoder.items.num_years == 2
    # a year vector would be added to every item alike; with no years none is
    year_weights = lacking.encoder.items.year_embedding.embeddings.numpy()
    movie_weights = lacking.encoder.items.movie_embedding.embeddings.numpy()
    assert np.allclose(catalog[2:], movie_weights[2:], atol=1e-6) and year_weights.any()


def test_readers_do_not_load_tensorflow():
    import subprocess
    import sys

    code = "import sys, bst.data.formats; print('tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("items.csv", "item_id,title\na,A\na,B\n", r"items.csv line 3: duplicate item id 'a'"),
        ("users.csv", "user_id,plan\nu,x\nu,y\n", r"users.csv line 3: duplicate user id 'u'"),
        (
            "users.csv",
            "user_id,rating\nu,x\n",
            r"users.csv: column 'rating' cannot name a profile feature",
        ),
        ("users.csv", "user_id\nu\n", r"users.csv: has only the 'user_id' column"),
    ],
)
def test_bad_side_tables(tmp_path, name, text, message):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu,a,1\n")
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        formats.FORMATS["interactions"].load(tmp_path, formats.Options())


def test_offline_dataset_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        formats.resolve(tmp_path / "cache", dataset="ml-100k")
    text = str(err.value)
    assert "cannot download https://files.grouplens.org/datasets/movielens/ml-100k.zip" in text
    assert f"put ml-100k.zip (or its extracted folder ml-100k/) in {tmp_path / 'cache'}" in text


def test_column_settings_for_another_format_are_refused(tmp_path):
    write_ml100k(tmp_path / "raw")
    with pytest.raises(
        UsageError, match=r"data.user_column, data.time_unit are read only from a generic"
    ):
        prepare(
            tmp_path / "raw", tmp_path / "out", columns=Columns(user="customer", time_unit="ms")
        )
