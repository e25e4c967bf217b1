"""A generic interactions table: anyone's log, with string ids and any timestamps.

In ``--data-dir``:

* ``interactions.{csv,tsv,parquet}`` (required): one row per event with a user id, an
  item id, a time and optionally a rating; rows in any order;
* ``items.{csv,tsv,parquet}`` (optional): the item id plus any of a title, ``|``-separated
  genres and a year;
* ``users.{csv,tsv,parquet}`` (optional): the user id plus categorical columns, each a
  profile feature of its own (named as the column).

Column names come from :class:`Columns` (``--set data.user_column=customer`` ...). Ids
are text (``tt0114709``, a UUID, an e-mail hash) from the file to the servable. Each
user's events are ordered by time; equal times keep the file's row order.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bst.data import tabular
from bst.data.movielens import MovieLens, ReadReport, id_only_movies, reconcile
from bst.errors import DataError

log = logging.getLogger(__name__)

INTERACTIONS, ITEMS, USERS = "interactions", "items", "users"


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


def _side_table(path: Path, column: str, key: str, what: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A side table and its id column (``key`` names it), each id once."""
    frame = tabular.read_table(path)
    tabular.require_columns(frame, path, {column: key})
    ids = tabular.ids(frame, column, path, what)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"duplicate {what} {ids[i]!r}", path, tabular.line_of(path, i))
    return frame, ids


def read_items(path: Path, cols: Columns, report: ReadReport) -> tuple[pd.DataFrame, list[str]]:
    """The items table → movie_id, title, year, genres, raw_title; also which it provided."""
    frame, ids = _side_table(path, cols.item, "data.item_column", "item id")
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


# Names a profile column cannot take: they are bst's own feature and field names.
RESERVED = frozenset(
    {"user_id", "movie_id", "genres", "year", "time_gap", "rating", "timestamp", "history",
     "candidates", "text", "target_movie_id", "target_timestamp", "target_rating",
     "next_movie", "next_rating"}
)  # fmt: skip
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def read_users(path: Path, cols: Columns, report: ReadReport) -> tuple[pd.DataFrame, list[str]]:
    """The users table → user_id and its other columns, each a categorical profile feature
    with its own vocabulary ("" = unknown)."""
    frame, ids = _side_table(path, cols.user, "data.user_column", "user id")
    provided = [str(c) for c in frame.columns if c != cols.user]
    if not provided:
        raise DataError(f"has only the {cols.user!r} column: no profile to read", path)
    for name in provided:
        if not _NAME.match(name) or name in RESERVED:
            raise DataError(
                f"column {name!r} cannot name a profile feature: use letters, digits and _ "
                f"(starting with a letter), and none of {', '.join(sorted(RESERVED))}",
                path,
            )
    out = pd.DataFrame({"user_id": ids})
    for c in provided:
        text = frame[c].astype(str).str.strip()
        out[c] = text.where(frame[c].notna(), "")
    log.info("%s: %d users (profile: %s)", path.name, len(out), ", ".join(provided))
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
        users = pd.DataFrame({"user_id": np.sort(events["user_id"].unique())})
    report.users, report.movies = len(users), len(movies)
    report.movies_without_year = int(movies["year"].isna().sum())
    provides = {"item_columns": item_info, "time_unit": info["time_unit"]}
    return MovieLens(
        ratings=events,
        users=users,
        movies=movies,
        report=report,
        provides=provides,
        profile=tuple(user_info),
        profile_rule="plain",
    )
