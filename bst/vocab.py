"""Vocabularies, built from the training split only and saved one token per line.

Index layout everywhere (see :mod:`bst.features`): 0 = padding (the empty
string), 1 = out of vocabulary / unknown, then the file's tokens in order. That
is exactly what ``tf.keras.layers.StringLookup(vocabulary=<file>, mask_token="",
num_oov_indices=1)`` does, so Python-side tables built here agree with the
lookups in ``tf.data`` and in the exported model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bst import features as F

UNKNOWN_TOKEN = "?"  # never in a vocabulary, so it maps to OOV = UNKNOWN
# A lookup needs one token: an empty vocabulary (a feature the data lacks, such as the
# profile of a dataset without users) is looked up through this one, which no value can
# equal (tokens have no newline), so every value still maps to PAD or OOV.
NEVER_TOKEN = "\n"


def lookup_tokens(tokens: list[str]) -> list[str]:
    """``tokens`` as a ``StringLookup`` vocabulary: ``[NEVER_TOKEN]`` when empty."""
    return list(tokens) or [NEVER_TOKEN]


def _by_frequency(values: Iterable[str]) -> list[str]:
    """Distinct values, most frequent first, ties by value: deterministic."""
    return _ranked(pd.Series(list(values), dtype=object).value_counts(sort=False))


def _counts_by_text(counts: pd.Series) -> list[str]:
    """:func:`_by_frequency` from counts of values, the values made text after counting
    (the distinct values, not every row, become strings: 25 M rows at ML-25M)."""
    counts = counts.copy()
    counts.index = counts.index.astype(str)
    return _ranked(counts.groupby(level=0, sort=False).sum())


def _ranked(counts: pd.Series) -> list[str]:
    frame = pd.DataFrame({"token": counts.index.astype(str), "n": counts.to_numpy()})
    frame = frame[(frame["token"] != "") & (frame["token"] != UNKNOWN_TOKEN)]
    return frame.sort_values(["n", "token"], ascending=[False, True], kind="mergesort")[
        "token"
    ].tolist()


def zip_prefix(zip_code: str) -> str:
    z = str(zip_code).strip()
    return z[: F.ZIP_PREFIX_LEN] if z else UNKNOWN_TOKEN


def year_token(year) -> str:
    return UNKNOWN_TOKEN if year is None or pd.isna(year) else str(int(year))


def vocab_file(name: str) -> str:
    """The file of feature ``name``'s vocabulary (a generic profile column: ``<name>.txt``)."""
    return F.VOCAB_FILES.get(name, f"{name}.txt")


def build_vocabularies(
    train: pd.DataFrame,
    movies: pd.DataFrame,
    users: pd.DataFrame,
    profile: tuple[str, ...] = F.PROFILE_FEATURES,
    rule: str = "movielens",
) -> dict[str, list[str]]:
    """Vocabularies from the training events (``train``: user_id, movie_id rows).

    ``rule="plain"`` (a generic users table): one vocabulary per ``profile`` column, its
    values as they are; MovieLens' rule keeps only users with a gender and zip prefixes.
    """
    return vocabularies_from_counts(
        train["movie_id"].value_counts(sort=False),
        train["user_id"].unique(),
        movies,
        users,
        profile,
        rule,
    )


def vocabularies_from_counts(
    movie_counts: pd.Series,
    train_users,
    movies: pd.DataFrame,
    users: pd.DataFrame,
    profile: tuple[str, ...] = F.PROFILE_FEATURES,
    rule: str = "movielens",
) -> dict[str, list[str]]:
    """:func:`build_vocabularies` from what it needs of the training events: each movie's
    number of training events (indexed by movie id, as in ``movies``) and the ids of the
    users with a training event. The prepare step on Beam counts them in its pipeline."""
    # isin over the distinct ids: over 1 M text ids (pandas' Arrow strings) it is a Python loop
    train_movies = movies[movies["movie_id"].isin(movie_counts.index)]
    train_users = users[users["user_id"].isin(train_users)]
    items = {
        F.MOVIE_ID: _counts_by_text(movie_counts),
        F.GENRES: _by_frequency(g for gs in train_movies["genres"] for g in gs),
        F.YEAR: sorted({year_token(y) for y in train_movies["year"]} - {UNKNOWN_TOKEN}, key=int),
    }
    if rule != "movielens":
        return {
            **items,
            **{c: _by_frequency(train_users[c].astype(str).str.strip()) for c in profile},
        }
    train_users = train_users[train_users["gender"].astype(str).str.strip() != ""]  # profile known
    return {
        **items,
        F.GENDER: _by_frequency(train_users["gender"].astype(str)),
        F.AGE: _by_frequency(train_users["age"].astype(str)),
        F.OCCUPATION: _by_frequency(train_users["occupation"].astype(str)),
        F.ZIP: _by_frequency(zip_prefix(z) for z in train_users["zip"]),
    }


def write_vocabularies(folder: str | Path, vocabs: dict[str, list[str]]) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, tokens in vocabs.items():
        for token in tokens:
            if not token or "\n" in token:
                raise ValueError(f"vocabulary {name}: token {token!r} is empty or has a newline")
        path = folder / vocab_file(name)
        path.write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
        paths[name] = path
    return paths


def read_vocabulary(path: str | Path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def load_vocabularies(
    folder: str | Path, profile: tuple[str, ...] = F.PROFILE_FEATURES
) -> dict[str, list[str]]:
    """The item vocabularies and those of the ``profile`` features."""
    folder = Path(folder)
    names = (F.MOVIE_ID, F.GENRES, F.YEAR, *profile)
    return {name: read_vocabulary(folder / vocab_file(name)) for name in names}


def index_of(vocab: list[str]) -> dict[str, int]:
    """token → index, with the reserved slots (``lookup.get(t, OOV)``)."""
    return {t: i + F.NUM_RESERVED for i, t in enumerate(vocab)}


def vocab_size(vocab: list[str]) -> int:
    """Number of indices a lookup over ``vocab`` produces (reserved slots included)."""
    return len(vocab) + F.NUM_RESERVED


def item_tables(
    movies: pd.DataFrame, vocabs: dict[str, list[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per item index: genre indices ``(V, MAX_GENRES)`` and year index ``(V,)``.

    Row 0 (padding) and row 1 (unknown movie) have PAD genres and UNKNOWN year.
    ``movies`` needs movie_id, year and genres (list or '|'-joined string).
    """
    movie_index = index_of(vocabs[F.MOVIE_ID])
    genre_index = index_of(vocabs[F.GENRES])
    year_index = index_of(vocabs[F.YEAR])
    size = vocab_size(vocabs[F.MOVIE_ID])
    genres = np.zeros((size, F.MAX_GENRES), dtype=np.int32)
    years = np.full(size, F.UNKNOWN, dtype=np.int32)
    years[F.PAD] = F.PAD
    for movie_id, year, movie_genres in zip(
        movies["movie_id"], movies["year"], movies["genres"], strict=True
    ):
        row = movie_index.get(str(movie_id))
        if row is None:
            continue  # not in the training vocabulary: looked up as OOV
        if isinstance(movie_genres, str):
            movie_genres = [g for g in movie_genres.split("|") if g]
        ids = [genre_index.get(g, F.OOV) for g in movie_genres][: F.MAX_GENRES]
        genres[row, : len(ids)] = ids
        years[row] = year_index.get(year_token(year), F.OOV)
    return genres, years
