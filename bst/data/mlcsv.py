"""The MovieLens CSV releases as GroupLens ships them: ML-20M, ML-25M, ML-32M, ml-latest
and ml-latest-small.

* ``ratings.csv``: header ``userId,movieId,rating,timestamp``; half-star ratings
  (0.5-5.0), Unix seconds;
* ``movies.csv``: header ``movieId,title,genres``; UTF-8, titles quoted when they hold a
  comma, genres ``|``-separated or ``(no genres listed)``;
* ``links.csv``, ``tags.csv``, ``genome-*.csv``: not used (logged). There is no users
  file, so these releases have no profile features.

The tables come out as for ML-1M (integer ids), so everything after the reader is the same.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bst.data import tabular
from bst.data.movielens import (
    NO_GENRES,
    MovieLens,
    ReadReport,
    _check_unique,
    check_half_stars,
    id_only_users,
    parse_title,
    reconcile,
    to_int,
)
from bst.errors import DataError

log = logging.getLogger(__name__)

RATINGS, MOVIES = "ratings.csv", "movies.csv"
FILES = (RATINGS, MOVIES)
UNUSED = ("links.csv", "tags.csv", "genome-scores.csv", "genome-tags.csv")
RATING_COLUMNS = {
    "userId": "user_id",
    "movieId": "movie_id",
    "rating": "rating",
    "timestamp": "timestamp",
}


def _ints(frame: pd.DataFrame, column: str, path: Path, what: str) -> np.ndarray:
    """:func:`bst.data.movielens.to_int` with line numbers that count the header line."""
    try:
        return to_int(frame, column, path, what)
    except DataError as err:
        raise DataError(err.reason, path, (err.line or 0) + 1) from None


def read_ratings(path: Path) -> pd.DataFrame:
    """``ratings.csv`` → user_id, movie_id (int64), rating (float64), timestamp (int64)."""
    if not path.is_file():
        raise DataError(f"file not found: {path}", path)
    out = None
    try:  # one C pass for a clean file; anything odd is found row by row below
        fast = pd.read_csv(
            path,
            dtype={
                "userId": np.int64,
                "movieId": np.int64,
                "rating": np.float64,
                "timestamp": np.int64,
            },
        )
        if list(fast.columns) == list(RATING_COLUMNS):
            out = fast.rename(columns=RATING_COLUMNS)
    except (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError):
        pass
    if out is None:
        frame = tabular.read_table(path)
        tabular.require_columns(frame, path, {c: c for c in RATING_COLUMNS})
        out = pd.DataFrame(
            {
                "user_id": _ints(frame, "userId", path, "userId"),
                "movie_id": _ints(frame, "movieId", path, "movieId"),
                "rating": tabular.ratings(frame, "rating", path),
                "timestamp": _ints(frame, "timestamp", path, "timestamp"),
            }
        )
    for column in ("user_id", "movie_id", "timestamp"):
        bad = np.flatnonzero(out[column].to_numpy() < 0)
        if bad.size:
            raise DataError(
                f"expected a non-negative {column}, got {out[column].iloc[bad[0]]}",
                path,
                int(bad[0]) + 2,
            )
    seconds = out["timestamp"].to_numpy()
    bad = np.flatnonzero(seconds > tabular.MAX_SECONDS)
    if bad.size:
        raise DataError(
            f"timestamp {seconds[bad[0]]} is past 2100 (Unix seconds expected)",
            path,
            int(bad[0]) + 2,
        )
    try:
        check_half_stars(out["rating"].to_numpy(), path)
    except DataError as err:
        raise DataError(err.reason, path, (err.line or 0) + 1) from None
    log.info("%s: %d ratings", path.name, len(out))
    return out[["user_id", "movie_id", "rating", "timestamp"]]


def read_movies(path: Path) -> pd.DataFrame:
    """``movies.csv`` → movie_id, title, year (Int64), genres (list), raw_title."""
    if not path.is_file():
        raise DataError(f"file not found: {path}", path)
    frame = tabular.read_table(path)
    tabular.require_columns(
        frame, path, {"movieId": "movieId", "title": "title", "genres": "genres"}
    )
    ids = _ints(frame, "movieId", path, "movieId")
    try:
        _check_unique(ids, path, "movieId")
    except DataError as err:
        raise DataError(err.reason, path, (err.line or 0) + 1) from None
    parsed = [parse_title(t) for t in frame["title"]]
    out = pd.DataFrame(
        {
            "movie_id": ids,
            "title": [t or raw.strip() for (t, _), raw in zip(parsed, frame["title"], strict=True)],
            "year": pd.array([y for _, y in parsed], dtype="Int64"),
            "genres": tabular.genre_lists(frame["genres"], empty=(NO_GENRES,)),
            "raw_title": frame["title"],
        }
    )
    log.info("%s: %d movies", path.name, len(out))
    return out


def begin_report(folder: Path, movies: pd.DataFrame, users: int) -> ReadReport:
    """The read report before the ratings are reconciled: counts and the unused files."""
    report = ReadReport(users=users, movies=len(movies))
    report.movies_without_year = int(movies["year"].isna().sum())
    for name in UNUSED:
        if (folder / name).is_file():
            report.notes.append(f"{name}: not used")
            log.info(report.notes[-1])
    return report


def load_mlcsv(folder: str | Path) -> MovieLens:
    """Read ``ratings.csv`` and ``movies.csv`` in ``folder`` and cross-check them."""
    folder = Path(folder)
    movies = read_movies(folder / MOVIES)
    ratings = read_ratings(folder / RATINGS)
    users = id_only_users(np.unique(ratings["user_id"].to_numpy()))
    report = begin_report(folder, movies, len(users))
    ratings = reconcile(ratings, None, movies, report, RATINGS, ("", MOVIES))
    return MovieLens(ratings=ratings, users=users, movies=movies, report=report)
