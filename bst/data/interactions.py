"""A generic interactions table: anyone's log, with string ids and any timestamps.

In ``--data-dir``:

* ``interactions.{csv,tsv,parquet}`` (required): one row per event with a user id, an
  item id, a time and optionally a rating; rows in any order;
* ``items.{csv,tsv,parquet}`` (optional): the item id plus any of a title, ``|``-separated
  genres and a year;
* ``users.{csv,tsv,parquet}`` (optional): the user id plus the profile columns
  ``gender``, ``age``, ``occupation``, ``zip`` (any it has).

Column names come from :class:`Columns` (``--set data.user_column=customer`` ...). Ids
are text (``tt0114709``, a UUID, an e-mail hash) from the file to the servable. Each
user's events are ordered by time; equal times keep the file's row order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bst.data import tabular
from bst.data.movielens import MovieLens, ReadReport, id_only_movies, id_only_users, reconcile
from bst.errors import DataError

log = logging.getLogger(__name__)

INTERACTIONS, ITEMS, USERS = "interactions", "items", "users"
PROFILE_COLUMNS = ("gender", "age", "occupation", "zip")


@dataclass(frozen=True)
class Columns:
    """Column names of the generic tables (``data.*_column``; see :class:`bst.config.DataConfig`)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    rating: str = "rating"
    title: str = "title"
    genres: str = "genres"
    year: str = "year"
    time_unit: str = "auto"


def _note(report: ReadReport, note: str) -> None:
    report.notes.append(note)
    log.info(note)


def files(folder: Path) -> dict[str, Path]:
    """The tables present in ``folder`` (``interactions`` always when the format matches)."""
    found = {stem: tabular.find_table(folder, stem) for stem in (INTERACTIONS, ITEMS, USERS)}
    return {stem: path for stem, path in found.items() if path is not None}


def read_events(path: Path, cols: Columns, report: ReadReport) -> tuple[pd.DataFrame, dict]:
    """The interactions table → user_id, movie_id (str), rating, timestamp (s), order_key."""
    frame = tabular.read_table(path)
    if frame.empty:
        raise DataError("has a header but no rows", path)
    needed = {
        cols.user: "data.user_column",
        cols.item: "data.item_column",
        cols.time: "data.time_column",
    }
    if cols.rating and cols.rating != Columns.rating:
        needed[cols.rating] = "data.rating_column"
    tabular.require_columns(frame, path, needed)
    seconds, order_key, unit = tabular.times(frame, cols.time, path, cols.time_unit)
    has_rating = bool(cols.rating) and cols.rating in frame.columns
    events = pd.DataFrame(
        {
            "user_id": tabular.ids(frame, cols.user, path, "user id"),
            "movie_id": tabular.ids(frame, cols.item, path, "item id"),
            "rating": tabular.ratings(frame, cols.rating, path) if has_rating else 0,
            "timestamp": seconds,
            "order_key": order_key,
        }
    )
    used = [cols.user, cols.item, cols.time] + ([cols.rating] if has_rating else [])
    unused = [str(c) for c in frame.columns if c not in used]
    if unused:
        _note(report, f"{path.name}: columns not used: {', '.join(unused)}")
    if not has_rating:
        _note(report, f"{path.name}: no {cols.rating or 'rating'} column: no ratings")
    log.info("%s: %d events (time read as %s)", path.name, len(events), unit)
    return events, {"time_unit": unit, "ratings": has_rating}


def read_items(path: Path, cols: Columns, report: ReadReport) -> tuple[pd.DataFrame, list[str]]:
    """The items table → movie_id, title, year, genres, raw_title; also which it provided."""
    frame = tabular.read_table(path)
    tabular.require_columns(frame, path, {cols.item: "data.item_column"})
    ids = tabular.ids(frame, cols.item, path, "item id")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"duplicate item id {ids[i]!r}", path, tabular.line_of(path, i))
    provided = [c for c in (cols.title, cols.genres, cols.year) if c in frame.columns]
    titles = frame[cols.title].astype(str).str.strip() if cols.title in frame.columns else None
    out = pd.DataFrame(
        {
            "movie_id": ids,
            "title": titles.where(titles.ne(""), pd.Series(ids)) if titles is not None else ids,
            "year": tabular.years(frame, cols.year, path)
            if cols.year in frame.columns
            else pd.array([None] * len(ids), dtype="Int64"),
            "genres": tabular.genre_lists(frame[cols.genres])
            if cols.genres in frame.columns
            else [[] for _ in ids],
        }
    )
    out["raw_title"] = out["title"]
    unused = [str(c) for c in frame.columns if c not in (cols.item, *provided)]
    if unused:
        _note(report, f"{path.name}: columns not used: {', '.join(unused)}")
    log.info("%s: %d items (%s)", path.name, len(out), ", ".join(provided) or "ids only")
    return out, provided


def read_users(path: Path, cols: Columns, report: ReadReport) -> tuple[pd.DataFrame, list[str]]:
    """The users table → user_id and the profile columns it has ("" where it has none)."""
    frame = tabular.read_table(path)
    tabular.require_columns(frame, path, {cols.user: "data.user_column"})
    ids = tabular.ids(frame, cols.user, path, "user id")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"duplicate user id {ids[i]!r}", path, tabular.line_of(path, i))
    provided = [c for c in PROFILE_COLUMNS if c in frame.columns]
    if not provided:
        raise DataError(
            f"has no profile column (expected some of {', '.join(PROFILE_COLUMNS)}; "
            f"columns found: {', '.join(map(str, frame.columns))})",
            path,
        )
    out = pd.DataFrame({"user_id": ids})
    for c in PROFILE_COLUMNS:
        out[c] = frame[c].astype(str).str.strip().replace({"nan": ""}) if c in frame.columns else ""
    unused = [str(c) for c in frame.columns if c not in (cols.user, *provided)]
    if unused:
        _note(report, f"{path.name}: columns not used: {', '.join(unused)}")
    log.info("%s: %d users (%s)", path.name, len(out), ", ".join(provided))
    return out, provided


def load_interactions(folder: str | Path, cols: Columns | None = None) -> MovieLens:
    """Read the generic tables in ``folder`` into the tables every format produces."""
    folder, cols = Path(folder), cols or Columns()
    found = files(folder)
    if INTERACTIONS not in found:
        raise DataError(f"no interactions.csv, .tsv or .parquet in {folder}", folder)
    report = ReadReport()
    events, info = read_events(found[INTERACTIONS], cols, report)
    movies, item_info = read_items(found[ITEMS], cols, report) if ITEMS in found else (None, [])
    users, user_info = read_users(found[USERS], cols, report) if USERS in found else (None, [])
    events = reconcile(
        events,
        users,
        movies,
        report,
        found[INTERACTIONS].name,
        (
            found[USERS].name if users is not None else "",
            found[ITEMS].name if movies is not None else "",
        ),
    )
    if events.empty:
        raise DataError(
            "no events left after dropping those of unknown users or items", found[INTERACTIONS]
        )
    if movies is None:
        movies = id_only_movies(np.sort(events["movie_id"].unique()))
    if users is None:
        users = id_only_users(np.sort(events["user_id"].unique()))
    report.users, report.movies = len(users), len(movies)
    report.movies_without_year = int(movies["year"].isna().sum())
    provides = {
        "ratings": info["ratings"],
        "item_columns": item_info,
        "profile_columns": user_info,
        "time_unit": info["time_unit"],
    }
    return MovieLens(ratings=events, users=users, movies=movies, report=report, provides=provides)
