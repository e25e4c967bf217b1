"""MovieLens 100K as GroupLens ships it: ``u.data``, ``u.item``, ``u.user`` (and ``u.genre``).

* ``u.data``: ``user id \\t item id \\t rating \\t timestamp`` (ratings 1-5, Unix seconds);
* ``u.item``: ``movie id | title | release date | video release date | IMDb URL |``
  then one 0/1 flag per genre, in ``u.genre``'s order (ISO-8859-1);
* ``u.user``: ``user id | age | gender | occupation | zip code``: the four profile fields.

Tables come out as :mod:`bst.data.movielens` makes them for ML-1M (integer ids, the
year from the title or else the release date), so everything after the reader is
the same. Errors name the file and line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bst.data.movielens import (
    MovieLens,
    ReadReport,
    _check_range,
    _check_unique,
    _decode,
    check_ids_and_times,
    parse_title,
    reconcile,
    to_int,
)
from bst.errors import DataError

log = logging.getLogger(__name__)

RATINGS, MOVIES, USERS, GENRE_FILE = "u.data", "u.item", "u.user", "u.genre"
FILES = (RATINGS, MOVIES, USERS)
# u.genre of the release, for a folder without it
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def _split(path: Path, sep: str, columns: int | None, example: str, min_columns: int = 0):
    """Lines of ``path`` split on ``sep`` into string columns, each line checked."""
    if not path.is_file():
        raise DataError(f"file not found: {path}", path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"file is empty; expected lines like '{example}'", path)
    text = _decode(raw, path, "auto").replace("\r\n", "\n").rstrip("\n")
    rows = [line.split(sep) for line in text.split("\n")]
    for i, row in enumerate(rows):
        if (columns is not None and len(row) != columns) or len(row) < min_columns:
            want = columns if columns is not None else f"at least {min_columns}"
            raise DataError(
                f"expected {want} fields separated by {sep!r} ({example}), got {len(row)}",
                path,
                i + 1,
            )
    width = columns or max(len(r) for r in rows)
    return pd.DataFrame([r + [""] * (width - len(r)) for r in rows], dtype=str)


def read_ratings(path: Path) -> pd.DataFrame:
    """``u.data`` → user_id, movie_id, rating, timestamp (int64), file order kept."""
    frame = _split(path, "\t", 4, "user id\\titem id\\trating\\ttimestamp")
    frame.columns = ["user_id", "movie_id", "rating", "timestamp"]
    out = pd.DataFrame({c: to_int(frame, c, path, c) for c in frame.columns})
    check_ids_and_times(out, path)
    _check_range(out["rating"].to_numpy(), 1, 5, path, "a rating")
    log.info("%s: %d ratings", path.name, len(out))
    return out


def read_genres(folder: Path) -> tuple[str, ...]:
    path = folder / GENRE_FILE
    if not path.is_file():
        return GENRES
    frame = _split(path, "|", 2, "name|index")
    frame = frame[frame[0].str.strip() != ""]
    order = to_int(frame.reset_index(drop=True), 1, path, "genre index")
    return tuple(frame[0].str.strip().to_numpy()[np.argsort(order, kind="stable")])


def read_movies(path: Path, genres: tuple[str, ...] = GENRES) -> pd.DataFrame:
    """``u.item`` → movie_id, title, year (Int64), genres (list), raw_title."""
    frame = _split(path, "|", 5 + len(genres), "movie id|title|release date|...|genre flags")
    ids = to_int(frame, 0, path, "movie id")
    _check_unique(ids, path, "movie id")
    flags = frame.iloc[:, 5:].to_numpy()
    bad = np.argwhere(~np.isin(flags, ["0", "1"]))
    if len(bad):
        i, j = bad[0]
        raise DataError(
            f"genre flag {genres[j]!r}: expected 0 or 1, got {flags[i, j]!r}", path, i + 1
        )
    titles, years = [], []
    for raw, date in zip(frame[1], frame[2], strict=True):
        title, year = parse_title(raw)
        if year is None and date.strip()[-4:].isdigit():  # release date like 01-Jan-1995
            year = int(date.strip()[-4:])
        titles.append(title or raw.strip())
        years.append(year)
    out = pd.DataFrame(
        {
            "movie_id": ids,
            "title": titles,
            "year": pd.array(years, dtype="Int64"),
            "genres": [[genres[j] for j in np.flatnonzero(row == "1")] for row in flags],
            "raw_title": frame[1],
        }
    )
    log.info("%s: %d movies", path.name, len(out))
    return out


def read_users(path: Path) -> pd.DataFrame:
    """``u.user`` → user_id, gender (M/F), age, occupation (text), zip (string)."""
    frame = _split(path, "|", 5, "user id|age|gender|occupation|zip code")
    out = pd.DataFrame(
        {
            "user_id": to_int(frame, 0, path, "user id"),
            "gender": frame[2].str.strip(),
            "age": to_int(frame, 1, path, "age"),
            "occupation": frame[3].str.strip(),
            "zip": frame[4].str.strip(),
        }
    )
    bad = np.flatnonzero(~out["gender"].isin(["M", "F"]).to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataError(f"expected gender 'M' or 'F', got {out['gender'].iloc[i]!r}", path, i + 1)
    _check_unique(out["user_id"].to_numpy(), path, "user id")
    log.info("%s: %d users", path.name, len(out))
    return out


def load_ml100k(folder: str | Path) -> MovieLens:
    """Read and cross-check ``u.data``, ``u.item`` and ``u.user`` in ``folder``."""
    folder = Path(folder)
    movies = read_movies(folder / MOVIES, read_genres(folder))
    users = read_users(folder / USERS)
    ratings = read_ratings(folder / RATINGS)
    report = ReadReport(users=len(users), movies=len(movies))
    report.movies_without_year = int(movies["year"].isna().sum())
    return MovieLens(
        ratings=reconcile(ratings, users, movies, report, RATINGS, (USERS, MOVIES)),
        users=users,
        movies=movies,
        report=report,
    )
