"""The SASRec/BERT4Rec benchmark file: ``user item`` per line, each user's items in time order.

Published full-ranking ML-1M numbers (SASRec, BERT4Rec, gSASRec, HSTU) are computed
on this exact file, so bst reads it too. It has no timestamps and no ratings: the
file order is the time order, and both features are UNKNOWN for the model. The
optional mapping files (``sas_to_original_items.txt``, ``sas_to_original_users.txt``,
lines ``sasrec_id original_id``) map ids back to MovieLens, so side features
(genres, year, profile) can be joined from ``movies.dat``/``users.dat``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bst.data.movielens import MovieLens, ReadReport, read_movies, read_users, reconcile, to_int
from bst.errors import DataError, decode_text

log = logging.getLogger(__name__)

SASREC_FILE = "ml-1m.txt"
ITEM_MAP = "sas_to_original_items.txt"
USER_MAP = "sas_to_original_users.txt"


def _read_pairs(path: Path, columns: tuple[str, str], example: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"file not found: {path}", path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"file is empty; expected lines like '{example}'", path)
    text = decode_text(raw, path, "ascii", f"lines like '{example}'")
    lines = pd.Series(text.replace("\r\n", "\n").rstrip("\n").split("\n"), dtype=object)
    parts = lines.str.split()
    counts = parts.str.len().to_numpy()
    bad = np.flatnonzero(counts != 2)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"expected 2 fields separated by a space ({example}), got {counts[i]}", path, i + 1
        )
    frame = pd.DataFrame({columns[0]: parts.str[0], columns[1]: parts.str[1]})
    return pd.DataFrame({c: to_int(frame, c, path, c) for c in columns})


def _read_map(path: Path) -> dict[int, int]:
    pairs = _read_pairs(path, ("sasrec_id", "original_id"), "sasrec_id original_id")
    dup = pairs["sasrec_id"].duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"duplicate sasrec_id {pairs['sasrec_id'].iloc[i]}", path, i + 1)
    return dict(zip(pairs["sasrec_id"].tolist(), pairs["original_id"].tolist(), strict=True))


def load_sasrec(folder: str | Path, side_data_dir: str | Path | None = None) -> MovieLens:
    """Read ``folder/ml-1m.txt`` as ratings (timestamp -1 and rating 0 = unknown).

    With the mapping files beside it, ids are mapped back to MovieLens ids; with
    ``side_data_dir`` (a folder with ``movies.dat`` and ``users.dat``) the movie and
    user tables come from there, else minimal tables with only the ids are built.
    """
    folder = Path(folder)
    path = folder / SASREC_FILE
    pairs = _read_pairs(path, ("user_id", "movie_id"), "user item")
    report = ReadReport()
    if (folder / ITEM_MAP).is_file() and (folder / USER_MAP).is_file():
        items = _read_map(folder / ITEM_MAP)
        users = _read_map(folder / USER_MAP)
        for column, mapping, name in (("movie_id", items, ITEM_MAP), ("user_id", users, USER_MAP)):
            mapped = pairs[column].map(mapping)
            missing = mapped.isna().to_numpy()
            if missing.any():
                i = int(np.flatnonzero(missing)[0])
                raise DataError(
                    f"{column} {pairs[column].iloc[i]} has no entry in {name}", path, i + 1
                )
            pairs[column] = mapped.astype(np.int64)
        log.info("%s: mapped ids back to MovieLens ids", path.name)
    elif side_data_dir:
        raise DataError(
            f"side data needs the id-mapping files {ITEM_MAP} and {USER_MAP} beside {path.name}",
            folder,
        )
    ratings = pairs.assign(
        rating=np.zeros(len(pairs), dtype=np.int64), timestamp=np.full(len(pairs), -1, np.int64)
    )
    if side_data_dir:
        side = Path(side_data_dir)
        movies = read_movies(side / "movies.dat")
        user_table = read_users(side / "users.dat")
    else:
        ids = np.unique(ratings["movie_id"].to_numpy())
        movies = pd.DataFrame(
            {
                "movie_id": ids,
                "title": [str(i) for i in ids],
                "year": pd.array([None] * len(ids), dtype="Int64"),
                "genres": [[] for _ in ids],
                "raw_title": [str(i) for i in ids],
            }
        )
        uids = np.unique(ratings["user_id"].to_numpy())
        user_table = pd.DataFrame(
            {"user_id": uids, "gender": "", "age": 0, "occupation": 0, "zip": ""}
        )
    report.users, report.movies = len(user_table), len(movies)
    ratings = reconcile(ratings, user_table, movies, report, source=path.name)
    log.info("%s: %d interactions, %d users", path.name, len(ratings), ratings["user_id"].nunique())
    return MovieLens(ratings=ratings, users=user_table, movies=movies, report=report)
