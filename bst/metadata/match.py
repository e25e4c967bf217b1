"""Matching one catalog to the movies: exact, then fuzzy, one-to-one by best score."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from bst.metadata.catalogs import Catalog
from bst.metadata.normalize import normalize_title, partial_names, sequel_numbers, title_names

log = logging.getLogger("bst.metadata")


MATCH_THRESHOLD = 92.0
"""Lowest fuzzy score accepted: rapidfuzz ``token_sort_ratio`` (0-100) of two
:func:`fuzzy_key` strings, less the penalties below.

Measured by ``benchmarks/metadata_join.py`` on the 500 labeled movies: every right
candidate pair scores 95 or more (a typo in a longer title, ``U.S. Marshalls`` vs
``U.S. Marshals``, scores 96; a match through a partial name 95), while the best wrong
pair that differs in spelling, ``Fausto (1993)`` vs ``Faust (1994)``, scores 90.9. At 92
a one-letter difference passes only in titles of six letters or more (2·6/13 = 92.3).
Wrong pairs scoring higher have the very same name (``Fear`` 1996 vs ``The Fear`` 1995):
no threshold separates those; exact-first, one-to-one assignment does.
"""

YEAR_TOLERANCE = 1
"""Fuzzy candidates must be released within this many years of the ML-1M year: catalogs
often date a film by its festival premiere, ML-1M by its release."""

UNKNOWN_YEAR_PENALTY = 5.0
"""Points taken off a fuzzy score when the catalog row has no usable date: such rows are
scored against movies of every year, so they must beat the threshold by a margin."""

PARTIAL_PENALTY = 5.0
"""Points taken off when a match needs a partial name (:func:`partial_names`), such as
``Star Wars`` for ``Star Wars: Episode IV - A New Hope``: weaker evidence than a whole name."""

NAME_KINDS = ("title", "alternate", "partial")
"""How a name was found: the title; an alternate (parenthesized or a.k.a. title in ML-1M,
``original_title`` in a catalog); a partial name. Used for tie-breaking and penalties."""

METHODS = ("exact", "fuzzy", "none")

SCORER = fuzz.token_sort_ratio
"""rapidfuzz scorer of two :func:`fuzzy_key` strings: tolerant of word order and of small
spelling differences, unlike ``token_set_ratio`` it does not call a title equal to any
title that contains it (``Halloween`` vs ``Halloween II``)."""


def fuzzy_key(key: str) -> str:
    """The form of a key that fuzzy scoring compares: no leading English article, no ``part``
    before a number (``the karate kid part 3`` → ``karate kid 3``).

    Catalogs and ML-1M disagree on both often, and on short titles the few letters they
    add would push the right film below the threshold. Only English articles are
    dropped: ``Les Boys`` and ``The Boys`` are different films.
    """
    tokens = key.split()
    if len(tokens) > 1 and tokens[0] in ("the", "a", "an"):
        tokens = tokens[1:]
    kept = [
        t
        for i, t in enumerate(tokens)
        if not (t == "part" and i + 1 < len(tokens) and tokens[i + 1].isdigit())
    ]
    return " ".join(kept)


def _names_frame(items: list[tuple[int, str, int]], years: pd.Series) -> pd.DataFrame:
    names = pd.DataFrame(items, columns=["item", "key", "kind"]).astype(
        {"item": np.int64, "key": object, "kind": np.int64}
    )
    names = names.drop_duplicates(["item", "key"], keep="first").reset_index(drop=True)
    names["year"] = years.astype("Int64").array[names["item"].to_numpy()]
    names["fkey"] = [fuzzy_key(k) for k in names["key"]]
    return names


def movie_names(movies: pd.DataFrame) -> pd.DataFrame:
    """One row per (movie, distinct key): item (movie position), key, kind, year, fkey."""
    partial = NAME_KINDS.index("partial")
    out: list[tuple[int, str, int]] = []
    for pos, title in enumerate(movies["title"].tolist()):
        names = title_names(str(title))
        for kind, name in names:
            out.append((pos, normalize_title(name), NAME_KINDS.index(kind)))
        for _, name in names:
            out += [(pos, normalize_title(p), partial) for p in partial_names(name)]
    return _names_frame([o for o in out if o[1]], movies["year"])


def _catalog_names(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (catalog row, distinct key) from its title, original title and their parts."""
    partial = NAME_KINDS.index("partial")
    out: list[tuple[int, str, int]] = []
    titles = rows["title"].tolist()
    originals = rows["original_title"].tolist()
    for pos, (title, original) in enumerate(zip(titles, originals, strict=True)):
        names = [title, original] if original else [title]
        out += [(pos, normalize_title(n), min(i, 1)) for i, n in enumerate(names)]
        for name in names:
            out += [(pos, normalize_title(p), partial) for p in partial_names(name)]
    return _names_frame([o for o in out if o[1]], rows["year"])


def film_groups(movie_names: pd.DataFrame, n_movies: int) -> np.ndarray:
    """A group id per movie: movies sharing a whole name and a year are one film listed twice.

    ML-1M lists a few films twice under different titles, e.g. 811 ``Bewegte Mann, Der
    (1994)`` and 860 ``Maybe, Maybe Not (Bewegte Mann, Der) (1994)``; both may take the
    same catalog row. Movies are linked through any shared (key, year), transitively.
    """
    parent = list(range(n_movies))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    whole = movie_names[movie_names["kind"] != NAME_KINDS.index("partial")].dropna(subset=["year"])
    shared = whole[whole.duplicated(["key", "year"], keep=False)]
    for _, items in shared.groupby(["key", "year"], sort=False)["item"]:
        first, *rest = items.tolist()
        for other in rest:
            parent[find(other)] = find(first)
    return np.array([find(i) for i in range(n_movies)], dtype=np.int64)


def _assign(
    pairs: pd.DataFrame, movie_row: np.ndarray, row_group: dict[int, int], groups: np.ndarray
) -> np.ndarray:
    """Greedy one-to-one from the best pair down; fills ``movie_row``; returns accepted positions.

    ``pairs`` must be sorted best first. A row already serving a movie may also serve
    another movie of the same film group (the same film listed twice), nothing else.
    """
    accepted: list[int] = []
    items = pairs["movie"].to_numpy()
    rows = pairs["row"].to_numpy()
    for i, (movie, row) in enumerate(zip(items.tolist(), rows.tolist(), strict=True)):
        if movie_row[movie] >= 0:
            continue
        owner = row_group.get(row)
        if owner is not None and owner != groups[movie]:
            continue
        movie_row[movie] = row
        row_group[row] = int(groups[movie])
        accepted.append(i)
    return np.asarray(accepted, dtype=np.int64)


def _fuzzy_pairs(
    movie_names: pd.DataFrame,
    catalog_names: pd.DataFrame,
    open_movies: np.ndarray,
    open_rows: np.ndarray,
    threshold: float,
) -> pd.DataFrame:
    """Candidate (movie, row, score, gap) pairs scoring ≥ threshold: one ``cdist`` per year.

    Movie names of one year are scored against the names of every open catalog row
    within ``YEAR_TOLERANCE`` years (or of unknown year) in one rapidfuzz matrix; names
    with different sequel numbers score 0; penalties apply; the pair's score is the
    best over both sides' names.
    """
    mnames = movie_names[open_movies[movie_names["item"].to_numpy()]]
    mnames = mnames[mnames["year"].notna()].sort_values(["item", "kind"], kind="stable")
    cnames = catalog_names[open_rows[catalog_names["item"].to_numpy()]]
    cnames = cnames.sort_values(["item", "kind"], kind="stable")
    c_year = cnames["year"].to_numpy(dtype=np.float64, na_value=np.nan)
    c_unknown = np.isnan(c_year)
    c_keys = cnames["fkey"].to_numpy()
    c_items = cnames["item"].to_numpy()
    c_partial = cnames["kind"].to_numpy() == NAME_KINDS.index("partial")
    c_nums = np.array([sequel_numbers(k) for k in c_keys], dtype=object)
    found: list[pd.DataFrame] = []
    for year, block in mnames.groupby("year", sort=True):
        cols = np.flatnonzero((np.abs(c_year - float(year)) <= YEAR_TOLERANCE) | c_unknown)
        if cols.size == 0:
            continue
        m_keys = block["fkey"].to_numpy()
        scores = process.cdist(
            m_keys,
            c_keys[cols],
            scorer=SCORER,
            dtype=np.float32,
            score_cutoff=threshold,
            workers=1,
        )  # (movie names, catalog names)
        m_nums = np.array([sequel_numbers(k) for k in m_keys], dtype=object)
        scores[m_nums[:, None] != c_nums[cols][None, :]] = 0.0  # a sequel is another film
        m_partial = block["kind"].to_numpy() == NAME_KINDS.index("partial")
        penalty = PARTIAL_PENALTY * (m_partial[:, None] | c_partial[cols][None, :])
        penalty += UNKNOWN_YEAR_PENALTY * c_unknown[cols][None, :]
        scores -= penalty.astype(np.float32)
        # Best score per (movie, row): max over each side's names.
        m_items = block["item"].to_numpy()
        m_starts = np.flatnonzero(np.r_[True, m_items[1:] != m_items[:-1]])
        per_movie = np.maximum.reduceat(scores, m_starts, axis=0)  # (movies, catalog names)
        col_items = c_items[cols]
        c_starts = np.flatnonzero(np.r_[True, col_items[1:] != col_items[:-1]])
        per_pair = np.maximum.reduceat(per_movie, c_starts, axis=1)  # (movies, rows)
        mi, ri = np.nonzero(per_pair >= threshold)
        if mi.size == 0:
            continue
        row_years = c_year[cols][c_starts][ri]
        gap = np.where(np.isnan(row_years), YEAR_TOLERANCE + 1, np.abs(row_years - float(year)))
        found.append(
            pd.DataFrame(
                {
                    "movie": m_items[m_starts][mi],
                    "row": col_items[c_starts][ri],
                    "score": per_pair[mi, ri].astype(np.float64).round(2),
                    "gap": gap,
                }
            )
        )
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return pd.DataFrame({"movie": empty, "row": empty, "score": [], "gap": []})
    return pd.concat(found, ignore_index=True)


def match_catalog(
    movies: pd.DataFrame,
    catalog: Catalog,
    threshold: float = MATCH_THRESHOLD,
    movie_names: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Match every movie to at most one row of ``catalog``: exact first, then fuzzy.

    Assignment is greedy from the best pair down. Exact pairs whose movie and row have
    no rival are settled at once. Where several movies want the same row, the pairs are
    taken in order of evidence (title-to-title before alternate names) and, before that,
    of how few other candidates the movie has, so a movie with nowhere else to go is
    served first (``Boys, Les (1997)`` takes ``Les Boys``, ``Boys, The (1997)`` then
    finds the Australian ``The Boys`` of 1998). Fuzzy pairs follow, best score first,
    then the smaller year gap.

    Returns one row per movie (in ``movies`` order) with ``row`` (position in
    ``catalog.rows`` or -1), ``score`` (100 for exact, NaN when unmatched) and
    ``method`` (``exact``, ``fuzzy`` or ``none``).
    """
    if movie_names is None:
        movie_names = movie_names(movies)
    n = len(movies)
    groups = film_groups(movie_names, n)
    catalog_names = _catalog_names(catalog.rows)
    movie_row = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.nan)
    method = np.full(n, "none", dtype=object)
    row_group: dict[int, int] = {}

    partial = NAME_KINDS.index("partial")
    whole_m = movie_names[movie_names["kind"] != partial].dropna(subset=["year"])
    whole_c = catalog_names[catalog_names["kind"] != partial].dropna(subset=["year"])
    exact = whole_m.merge(whole_c, on=["key", "year"], suffixes=("_m", "_c"))
    exact = exact.rename(columns={"item_m": "movie", "item_c": "row"})
    exact["rank"] = exact["kind_m"] + exact["kind_c"]
    exact = exact.sort_values(["movie", "row", "rank"], kind="stable")
    exact = exact.drop_duplicates(["movie", "row"])[["movie", "row", "rank"]]
    exact["group"] = groups[exact["movie"].to_numpy()]
    rows_per_movie = exact.groupby("movie")["row"].transform("size")
    groups_per_row = exact.groupby("row")["group"].transform("nunique")
    settled = (rows_per_movie == 1) & (groups_per_row == 1)

    # Fuzzy candidates for every movie not settled, against rows no settled movie takes.
    open_rows = np.ones(len(catalog.rows), dtype=bool)
    open_rows[exact["row"].to_numpy()[settled.to_numpy()]] = False
    open_movies = np.ones(n, dtype=bool)
    open_movies[exact["movie"].to_numpy()[settled.to_numpy()]] = False
    fuzzy = _fuzzy_pairs(movie_names, catalog_names, open_movies, open_rows, threshold)
    candidates = pd.concat([exact[["movie", "row"]], fuzzy[["movie", "row"]]])
    degree = candidates.drop_duplicates().groupby("movie").size()
    exact["degree"] = degree.reindex(exact["movie"]).fillna(1).to_numpy()
    fuzzy["degree"] = degree.reindex(fuzzy["movie"]).fillna(1).to_numpy()

    exact = exact.sort_values(["degree", "rank", "movie", "row"], kind="stable")
    taken = _assign(exact, movie_row, row_group, groups)
    hit = exact["movie"].to_numpy()[taken]
    score[hit] = 100.0
    method[hit] = "exact"

    fuzzy = fuzzy.sort_values(
        ["score", "gap", "degree", "movie", "row"],
        ascending=[False, True, True, True, True],
        kind="stable",
    )
    taken = _assign(fuzzy, movie_row, row_group, groups)
    hit = fuzzy["movie"].to_numpy()[taken]
    score[hit] = fuzzy["score"].to_numpy()[taken]
    method[hit] = "fuzzy"
    return pd.DataFrame({"row": movie_row, "score": score, "method": method})
