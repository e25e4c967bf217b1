"""Readers, acquisition and bad input: each bad file gives one clear error naming file and line."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import zipfile
from pathlib import Path

import pytest

from bst.data import download as dl
from bst.data.movielens import (
    load_movielens,
    parse_title,
    read_movies,
    read_ratings,
    read_users,
)
from bst.errors import DataError
from tests.conftest import write_dat

MOVIES = ["1::Toy Story (1995)::Animation|Children's|Comedy", "2::Cité des enfants (1995)::Drama"]
USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]
RATINGS = ["1::1::5::978300760", "1::2::3::978302109", "2::1::4::978301968"]


def small_ml(folder: Path, ratings=RATINGS, users=USERS, movies=MOVIES) -> Path:
    write_dat(folder, "movies.dat", movies)
    write_dat(folder, "users.dat", users)
    write_dat(folder, "ratings.dat", ratings)
    return folder


@pytest.mark.parametrize(
    "raw, title, year",
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("Associate, The (L'Associe)(1982)", "Associate, The (L'Associe)", 1982),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "City of Lost Children, The (Cité des enfants perdus, La)",
            1995,
        ),
        ("Untitled", "Untitled", None),
    ],
)
def test_parse_title(raw, title, year):
    assert parse_title(raw) == (title, year)


def test_readers_on_synthetic(synthetic_dir):
    ml = load_movielens(synthetic_dir)
    assert len(ml.users) == 30 and len(ml.movies) == 20
    assert list(ml.ratings.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    assert str(ml.ratings["user_id"].dtype) == "int64"
    assert ml.ratings["rating"].between(1, 5).all()
    assert ml.report.ratings == len(ml.ratings) == ml.report.ratings_read
    # the latin-1 title decoded to the right characters
    assert any(t.startswith("Cité") for t in ml.movies["title"])
    assert all(isinstance(g, list) and g for g in ml.movies["genres"])


def test_movies_latin1_and_utf8(tmp_path):
    latin = write_dat(tmp_path / "a", "movies.dat", MOVIES, "latin-1")
    utf8 = write_dat(tmp_path / "b", "movies.dat", MOVIES, "utf-8")
    assert read_movies(latin)["title"][1] == "Cité des enfants"
    assert read_movies(utf8)["title"][1] == "Cité des enfants"


def test_duplicates_and_unknown_ids_are_counted(tmp_path):
    ratings = RATINGS + ["1::1::2::978300800", "9::1::3::978300000", "2::77::3::978300000"]
    ml = load_movielens(small_ml(tmp_path, ratings=ratings))
    r = ml.report
    assert r.ratings_read == 6
    assert r.duplicate_pairs == 1  # kept, as a separate event
    assert r.unknown_user_ratings == 1 and r.unknown_movie_ratings == 1
    assert r.ratings == 4 == len(ml.ratings)
    assert any("dropped 1 ratings of users" in n for n in r.notes)


@pytest.mark.parametrize(
    "name, lines, message",
    [
        (
            "ratings.dat",
            RATINGS[:2] + ["1::2::3"],
            "ratings.dat line 3: expected 4 fields separated by '::'",
        ),
        (
            "ratings.dat",
            RATINGS[:1] + ["1::x::3::978300760"],
            "ratings.dat line 2: expected an integer MovieID, got 'x'",
        ),
        (
            "ratings.dat",
            ["1::1::9::978300760"],
            "ratings.dat line 1: expected a rating in 1..5, got 9",
        ),
        ("ratings.dat", RATINGS[:1] + ["", RATINGS[1]], "ratings.dat line 2: expected 4 fields"),
        (
            "users.dat",
            USERS[:1] + ["2::X::56::16::70072"],
            "users.dat line 2: expected Gender 'M' or 'F'",
        ),
        ("users.dat", USERS + ["2::M::56::16::70072"], "users.dat line 3: duplicate UserID 2"),
        ("users.dat", ["1::F::1::10::48067::extra"], "users.dat line 1: expected 5 fields"),
        (
            "movies.dat",
            MOVIES + ["2::Again (1995)::Drama"],
            "movies.dat line 3: duplicate MovieID 2",
        ),
        ("movies.dat", ["1:: (1995)::Drama"], "movies.dat line 1: expected a title"),
    ],
)
def test_malformed_lines(tmp_path, name, lines, message):
    small_ml(tmp_path)
    write_dat(tmp_path, name, lines)
    with pytest.raises(DataError) as err:
        load_movielens(tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_undecodable_bytes(tmp_path):
    small_ml(tmp_path)
    (tmp_path / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::7\xff072\n")
    with pytest.raises(DataError, match=r"users.dat line 2: byte 0xff is not valid ascii"):
        read_users(tmp_path / "users.dat")
    (tmp_path / "ratings.dat").write_bytes(b"1::1::5::978300760\n\x80::1::5::978300760\n")
    with pytest.raises(DataError, match=r"ratings.dat line 2: byte 0x80"):
        read_ratings(tmp_path / "ratings.dat")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_ratings(tmp_path / "ratings.dat")
    (tmp_path / "ratings.dat").write_text("\n\n")
    with pytest.raises(
        DataError, match=r"ratings.dat: file is empty; expected lines like 'UserID::MovieID"
    ):
        read_ratings(tmp_path / "ratings.dat")
    with pytest.raises(
        DataError, match=r"users.dat, movies.dat are missing in .* \(found ratings.dat\)"
    ):
        load_movielens(tmp_path)


def test_windows_line_endings(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_bytes(("\r\n".join(RATINGS) + "\r\n").encode())
    assert read_ratings(path)["timestamp"].tolist() == [978300760, 978302109, 978301968]


def make_zip(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def release_zip(tmp_path: Path) -> tuple[Path, str]:
    src = small_ml(tmp_path / "src")
    members = {f"ml-1m/{p.name}": p.read_bytes() for p in src.iterdir()}
    archive = (
        make_zip(tmp_path / "cache", members) if (tmp_path / "cache").mkdir() is None else None
    )
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_local_zip_is_verified_and_extracted(tmp_path):
    archive, md5 = release_zip(tmp_path)
    folder = dl.ensure_movielens(archive.parent, url="file:///nonexistent", md5=md5)
    assert folder == archive.parent / "ml-1m"
    assert len(load_movielens(folder).ratings) == 3
    # a second call uses the extracted files without touching the zip
    archive.unlink()
    assert dl.ensure_movielens(archive.parent, md5=md5) == folder


def test_checksum_mismatch(tmp_path):
    archive, _ = release_zip(tmp_path)
    with pytest.raises(
        DataError, match=r"ml-1m.zip: checksum mismatch: md5 is [0-9a-f]{32}, expected 0+"
    ):
        dl.ensure_movielens(archive.parent, md5="0" * 32)
    assert not (archive.parent / "ml-1m").exists()


def test_zip_member_outside_target_is_refused(tmp_path):
    archive = make_zip(tmp_path, {"ml-1m/movies.dat": b"1::A (1995)::Drama\n", "../evil": b"x"})
    target = tmp_path / "out"
    with pytest.raises(DataError, match=r"unsafe member '../evil'"):
        dl.safe_extract(archive, target)
    assert not (tmp_path / "evil").exists() and not target.exists()
    absolute = (
        make_zip(tmp_path / "b", {"/etc/evil": b"x"}) if (tmp_path / "b").mkdir() is None else None
    )
    with pytest.raises(DataError, match="unsafe member"):
        dl.safe_extract(absolute, target)


def test_download_with_progress_and_md5(tmp_path):
    archive, md5 = release_zip(tmp_path)
    dest = tmp_path / "dl" / "ml-1m.zip"
    dl.download(archive.as_uri(), dest, md5)
    assert dest.read_bytes() == archive.read_bytes()
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.download(archive.as_uri(), tmp_path / "dl2" / "ml-1m.zip", "f" * 32)
    assert not any((tmp_path / "dl2").iterdir())  # no partial file left behind


def test_offline_without_local_copy(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        dl.ensure_movielens(tmp_path / "cache")
    text = str(err.value)
    assert "cannot download" in text and str(tmp_path / "cache") in text
    assert "ratings.dat, users.dat and movies.dat" in text


def test_extracted_folder_is_accepted_as_is(tmp_path):
    src = small_ml(tmp_path / "plain")
    assert dl.ensure_movielens(src) == src
    nested = tmp_path / "nested"
    shutil.copytree(src, nested / "ml-1m")
    assert dl.ensure_movielens(nested) == nested / "ml-1m"
