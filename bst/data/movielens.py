"""Validated readers for the MovieLens-1M ``::`` files.

Each reader returns a DataFrame with stable row order (the file's) and raises
:class:`~bst.errors.DataError` naming the file, the 1-based line number and
what was expected for the first malformed line. Ratings of unknown users or
movies and duplicate (user, movie) pairs are counted in a :class:`ReadReport`,
never dropped silently.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bst.errors import DataError, decode_text

log = logging.getLogger(__name__)

SEP = "::"
_INTERNAL_SEP = "\x1f"  # unit separator: never in MovieLens text, safe for the C parser
_YEAR_RE = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")

NO_GENRES = "(no genres listed)"  # ML-10M and the CSV releases: a movie without genres
RATINGS_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
USERS_COLUMNS = ("user_id", "gender", "age", "occupation", "zip")
MOVIES_COLUMNS = ("movie_id", "raw_title", "genres")
ML1M_FILES = ("ratings.dat", "users.dat", "movies.dat")

_EXAMPLES = {
    "ratings.dat": "UserID::MovieID::Rating::Timestamp",
    "users.dat": "UserID::Gender::Age::Occupation::Zip-code",
    "movies.dat": "MovieID::Title::Genres",
}


@dataclass
class ReadReport:
    """What the readers found: row counts and everything set aside, with reasons."""

    ratings_read: int = 0
    users: int = 0
    movies: int = 0
    ratings: int = 0
    duplicate_pairs: int = 0
    unknown_user_ratings: int = 0
    unknown_movie_ratings: int = 0
    movies_without_year: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    """Decode ``raw``; on failure name the line holding the first bad byte."""
    if encoding == "auto":
        # movies.dat is ISO-8859-1, where every byte decodes; a file someone re-saved as
        # UTF-8 would silently turn into mojibake, so prefer UTF-8 when it is valid.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
        if any(ord(c) > 127 for c in text):
            log.info("%s is UTF-8, not ISO-8859-1; decoding it as UTF-8", path.name)
        return text
    example = _EXAMPLES.get(path.name, "")
    return decode_text(raw, path, encoding, f"plain {encoding} text like '{example}'")


def read_fields(
    path: str | Path, columns: tuple[str, ...], encoding: str, example: str | None = None
) -> pd.DataFrame:
    """Split a ``::`` file into string columns, checking every line has ``len(columns)`` fields."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}", path)
    raw = path.read_bytes()
    example = example or _EXAMPLES.get(path.name, SEP.join(columns))
    if not raw.strip():
        raise DataError(f"file is empty; expected lines like '{example}'", path)
    text = _decode(raw, path, encoding).replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    lines = pd.Series(text.split("\n"), dtype=object)
    counts = lines.str.count(SEP).to_numpy() + 1
    counts[lines.str.len().to_numpy() == 0] = 0
    bad = np.flatnonzero(counts != len(columns))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"expected {len(columns)} fields separated by '{SEP}' ({example}), got {counts[i]}",
            path,
            i + 1,
        )
    if _INTERNAL_SEP in text:
        i = int(np.flatnonzero(lines.str.contains(_INTERNAL_SEP, regex=False).to_numpy())[0])
        raise DataError("unexpected control character \\x1f", path, i + 1)
    frame = pd.read_csv(
        io.StringIO(text.replace(SEP, _INTERNAL_SEP)),
        sep=_INTERNAL_SEP,
        header=None,
        names=list(columns),
        dtype=str,
        quoting=csv.QUOTE_NONE,
        na_filter=False,
        keep_default_na=False,
        engine="c",
    )
    if len(frame) != len(lines):  # pragma: no cover - defensive: the counts above agree
        raise DataError(f"read {len(frame)} rows from {len(lines)} lines", path)
    return frame


# Unix seconds up to 2100-01-01: a wider value is a unit mistake (ms, us) or corruption.
MAX_TIMESTAMP = 4_102_444_800
_MAX_DIGITS = 18  # every 18-digit number fits int64 (max 9.2e18)
_INT_RE = rf"^\s*\d{{1,{_MAX_DIGITS}}}\s*$"


def to_int(frame: pd.DataFrame, column: str, path: Path, what: str) -> np.ndarray:
    """Column ``column`` as int64, or a DataError naming the first line that is not a
    non-negative integer of at most 18 digits (so it fits int64 exactly: no ``1e30``,
    no ``-3``, no ``2.0``, no 20-digit id)."""
    with np.errstate(all="ignore"):
        fast = pd.to_numeric(frame[column], errors="coerce")
    if fast.dtype == np.int64 and len(fast) and fast.min() >= 0:  # all plain integers
        return fast.to_numpy()
    text = frame[column].astype(str)
    bad = np.flatnonzero(~text.str.match(_INT_RE).to_numpy(dtype=bool))
    if bad.size:
        i = int(bad[0])
        value = text.iloc[i].strip()
        if value.isdigit():
            message = (
                f"expected an integer {what} of at most {_MAX_DIGITS} digits (int64), got "
                f"{value[:30]!r}{'...' if len(value) > 30 else ''} ({len(value)} digits)"
            )
        elif value.startswith("-") and value[1:].isdigit():
            message = f"expected a non-negative integer {what}, got {value[:30]!r}"
        else:
            message = f"expected an integer {what}, got {value[:30]!r}"
        raise DataError(message, path, i + 1)
    return text.str.strip().astype(np.int64).to_numpy()


def check_ids_and_times(frame: pd.DataFrame, path: Path) -> None:
    """Ids ≥ 0 (the parse already guarantees int64) and timestamps in Unix seconds in
    ``0..MAX_TIMESTAMP`` (2100-01-01): anything else names the file, line and value."""
    for column, what in (("user_id", "a UserID"), ("movie_id", "a MovieID")):
        if column in frame:
            _check_range(frame[column].to_numpy(), 0, np.iinfo(np.int64).max, path, what)
    if "timestamp" in frame:
        _check_range(
            frame["timestamp"].to_numpy(),
            0,
            MAX_TIMESTAMP,
            path,
            "a Timestamp (Unix seconds up to 2100-01-01)",
        )


def _check_range(values: np.ndarray, low: int, high: int, path: Path, what: str) -> None:
    bad = np.flatnonzero((values < low) | (values > high))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"expected {what} in {low}..{high}, got {values[i]}", path, i + 1)


def _check_unique(values: np.ndarray, path: Path, what: str) -> None:
    seen = pd.Series(values).duplicated().to_numpy()
    if seen.any():
        i = int(np.flatnonzero(seen)[0])
        raise DataError(f"duplicate {what} {values[i]} (ids must be unique)", path, i + 1)


def _read_ratings_fast(path: Path) -> pd.DataFrame | None:
    """Parse a well-formed ratings file in one C-engine pass; None means "validate slowly".

    The slow path (:func:`read_fields` + :func:`to_int`) finds the first bad line; this
    one only has to be right when the file is clean, which the row count and the
    integer dtypes guarantee.
    """
    if not path.is_file():
        return None
    raw = path.read_bytes()
    if not raw.strip() or not raw.isascii() or b"\r" in raw or _INTERNAL_SEP.encode() in raw:
        return None
    lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    try:
        out = pd.read_csv(
            io.BytesIO(raw.replace(SEP.encode(), _INTERNAL_SEP.encode())),
            sep=_INTERNAL_SEP,
            header=None,
            names=list(RATINGS_COLUMNS),
            engine="c",
            skip_blank_lines=False,
        )
    except (ValueError, OverflowError, pd.errors.ParserError):
        return None
    # Inferred, not forced, dtypes: forcing int64 would cast "1e30" to INT64_MIN. Only
    # plain integers that fit int64 infer as int64; anything else takes the slow path.
    if len(out) != lines or any(out[c].dtype != np.int64 for c in RATINGS_COLUMNS):
        return None
    return out


def read_ratings(path: str | Path) -> pd.DataFrame:
    """``ratings.dat`` → columns user_id, movie_id, rating, timestamp (int64), file order kept."""
    path = Path(path)
    out = _read_ratings_fast(path)
    if out is not None and (out.to_numpy() >= 0).all():
        check_ids_and_times(out, path)
        _check_range(out["rating"].to_numpy(), 1, 5, path, "a rating")
        log.info("%s: %d ratings", path.name, len(out))
        return out
    frame = read_fields(path, RATINGS_COLUMNS, "ascii")
    out = pd.DataFrame(
        {
            "user_id": to_int(frame, "user_id", path, "UserID"),
            "movie_id": to_int(frame, "movie_id", path, "MovieID"),
            "rating": to_int(frame, "rating", path, "Rating"),
            "timestamp": to_int(frame, "timestamp", path, "Timestamp"),
        }
    )
    check_ids_and_times(out, path)
    _check_range(out["rating"].to_numpy(), 1, 5, path, "a rating")
    log.info("%s: %d ratings", path.name, len(out))
    return out


def read_users(path: str | Path) -> pd.DataFrame:
    """``users.dat`` → user_id, gender (M/F), age, occupation, zip (string)."""
    path = Path(path)
    frame = read_fields(path, USERS_COLUMNS, "ascii")
    out = pd.DataFrame(
        {
            "user_id": to_int(frame, "user_id", path, "UserID"),
            "gender": frame["gender"].str.strip(),
            "age": to_int(frame, "age", path, "Age"),
            "occupation": to_int(frame, "occupation", path, "Occupation"),
            "zip": frame["zip"].str.strip(),
        }
    )
    bad = np.flatnonzero(~out["gender"].isin(["M", "F"]).to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataError(f"expected Gender 'M' or 'F', got {out['gender'].iloc[i]!r}", path, i + 1)
    _check_range(out["age"].to_numpy(), 0, 200, path, "an age")
    _check_range(out["occupation"].to_numpy(), 0, 1000, path, "an occupation code")
    _check_unique(out["user_id"].to_numpy(), path, "UserID")
    log.info("%s: %d users", path.name, len(out))
    return out


def parse_title(raw_title: str) -> tuple[str, int | None]:
    """Split ``'Toy Story (1995)'`` into ``('Toy Story', 1995)``; no year gives ``None``.

    Tolerates a missing space before the year, as in
    ``'Associate, The (L'Associe)(1982)'``.
    """
    match = _YEAR_RE.match(raw_title)
    if match is None:
        return raw_title.strip(), None
    return match.group("title").strip(), int(match.group("year"))


def read_movies(path: str | Path, encoding: str = "auto") -> pd.DataFrame:
    """``movies.dat`` (ISO-8859-1) → movie_id, title, year (nullable Int64), genres (list), raw_title."""
    path = Path(path)
    frame = read_fields(path, MOVIES_COLUMNS, encoding)
    ids = to_int(frame, "movie_id", path, "MovieID")
    _check_unique(ids, path, "MovieID")
    parsed = [parse_title(t) for t in frame["raw_title"]]
    empty = [i for i, (title, _) in enumerate(parsed) if not title]
    if empty:
        raise DataError(
            f"expected a title like 'Toy Story (1995)', got {frame['raw_title'].iloc[empty[0]]!r}",
            path,
            empty[0] + 1,
        )
    out = pd.DataFrame(
        {
            "movie_id": ids,
            "title": [p[0] for p in parsed],
            "year": pd.array([p[1] for p in parsed], dtype="Int64"),
            "genres": [[g for g in s.split("|") if g and g != NO_GENRES] for s in frame["genres"]],
            "raw_title": frame["raw_title"],
        }
    )
    log.info("%s: %d movies", path.name, len(out))
    return out


@dataclass
class MovieLens:
    """The tables every reader produces, after validation, plus what the readers reported.

    ``ratings``: user_id, movie_id, rating (0 = unknown), timestamp (Unix seconds, -1 =
    unknown) and optionally ``order_key`` (a finer time for ordering ties of one second);
    ``users``: user_id and the ``profile`` columns ("" = unknown; MovieLens: gender, age,
    occupation, zip, tokenized by ``profile_rule``); ``movies``:
    movie_id, title, year (Int64), genres (list), raw_title. ``provides``: facts a reader
    knows beyond the tables (such as how it read the times), for the manifest.
    """

    ratings: pd.DataFrame
    users: pd.DataFrame
    movies: pd.DataFrame
    report: ReadReport
    provides: dict = field(default_factory=dict)
    # the users table's profile columns and how they become tokens (bst.data.records)
    profile: tuple[str, ...] = ("gender", "age", "occupation", "zip")
    profile_rule: str = "movielens"


def reconcile(
    ratings: pd.DataFrame,
    users: pd.DataFrame | None,
    movies: pd.DataFrame | None,
    report: ReadReport,
    source: str = "ratings.dat",
    tables: tuple[str, str] = ("users.dat", "movies.dat"),
) -> pd.DataFrame:
    """Count duplicates and drop (with a count and a warning) ratings of unknown users/movies."""
    report.ratings_read = len(ratings)
    pairs = ratings.duplicated(subset=["user_id", "movie_id"], keep="first")
    report.duplicate_pairs = int(pairs.sum())
    keep = np.ones(len(ratings), dtype=bool)
    if users is not None:
        unknown = ~ratings["user_id"].isin(users["user_id"]).to_numpy()
        report.unknown_user_ratings = int(unknown.sum())
        keep &= ~unknown
    if movies is not None:
        unknown = ~ratings["movie_id"].isin(movies["movie_id"]).to_numpy()
        report.unknown_movie_ratings = int((unknown & keep).sum())
        keep &= ~unknown
    out = ratings[keep].reset_index(drop=True)
    report.ratings = len(out)
    note_reconciled(report, source, tables)
    return out


def note_reconciled(
    report: ReadReport, source: str, tables: tuple[str, str] = ("users.dat", "movies.dat")
) -> None:
    """The notes and warnings of :func:`reconcile`, from the counts in ``report`` (the
    prepare step on Beam counts them in its pipeline)."""
    if report.duplicate_pairs:
        note = (
            f"{source}: {report.duplicate_pairs} duplicate (user, movie) pairs kept "
            "(each is a separate event in the user's sequence)"
        )
        report.notes.append(note)
        log.warning(note)
    for count, what in (
        (report.unknown_user_ratings, f"users missing from {tables[0]}"),
        (report.unknown_movie_ratings, f"movies missing from {tables[1]}"),
    ):
        if count:
            note = f"{source}: dropped {count} ratings of {what}"
            report.notes.append(note)
            log.warning(note)


def movielens_files_present(folder: str | Path) -> list[str]:
    """Which of the three ``.dat`` names are in ``folder`` or ``folder/ml-1m``."""
    folder = Path(folder)
    return [
        name
        for name in _EXAMPLES
        if (folder / name).is_file() or (folder / "ml-1m" / name).is_file()
    ]


def find_movielens_files(folder: str | Path) -> Path:
    """The folder holding ratings.dat, users.dat and movies.dat (``folder`` or ``folder/ml-1m``).

    A folder holding some of the three but not all is an error naming the missing ones.
    """
    folder = Path(folder)
    for candidate in (folder, folder / "ml-1m"):
        if all((candidate / name).is_file() for name in _EXAMPLES):
            return candidate
    candidate = folder
    if any((folder / "ml-1m" / n).is_file() for n in _EXAMPLES) and not any(
        (folder / n).is_file() for n in _EXAMPLES
    ):
        candidate = folder / "ml-1m"
    missing = [n for n in _EXAMPLES if not (candidate / n).is_file()]
    present = [n for n in _EXAMPLES if (candidate / n).is_file()]
    if present:
        raise DataError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing in {candidate} "
            f"(found {', '.join(present)}); MovieLens-1M needs all of ratings.dat, users.dat "
            "and movies.dat"
        )
    raise DataError(
        f"no MovieLens-1M files in {folder}: missing {', '.join(missing)}. Put ratings.dat, "
        "users.dat and movies.dat there (or ml-1m.zip from https://grouplens.org/datasets/movielens/1m/)",
        folder,
    )


def read_side_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, ReadReport]:
    """``users.dat`` and ``movies.dat`` in ``folder``, and the report begun on them."""
    movies = read_movies(folder / "movies.dat")
    users = read_users(folder / "users.dat")
    report = ReadReport(users=len(users), movies=len(movies))
    report.movies_without_year = int(movies["year"].isna().sum())
    if report.movies_without_year:
        note = f"movies.dat: {report.movies_without_year} titles have no '(year)'; year unknown"
        report.notes.append(note)
        log.warning(note)
    return users, movies, report


def load_movielens(folder: str | Path) -> MovieLens:
    """Read and cross-check the three files in ``folder`` (or ``folder/ml-1m``)."""
    folder = find_movielens_files(folder)
    users, movies, report = read_side_tables(folder)
    ratings = read_ratings(folder / "ratings.dat")
    ratings = reconcile(ratings, users, movies, report)
    log.info(
        "MovieLens: %d ratings, %d users, %d movies (%d rated)",
        report.ratings,
        report.users,
        report.movies,
        ratings["movie_id"].nunique(),
    )
    return MovieLens(ratings=ratings, users=users, movies=movies, report=report)


def id_only_movies(ids: np.ndarray) -> pd.DataFrame:
    """A movie table for data without one: each id is its own title; no year, no genres."""
    ids = pd.unique(np.asarray(ids))
    return pd.DataFrame(
        {
            "movie_id": ids,
            "title": [str(i) for i in ids],
            "year": pd.array([None] * len(ids), dtype="Int64"),
            "genres": [[] for _ in ids],
            "raw_title": [str(i) for i in ids],
        }
    )


def id_only_users(ids: np.ndarray) -> pd.DataFrame:
    """A user table for data without one: no profile (gender "" = unknown profile)."""
    ids = pd.unique(np.asarray(ids))
    return pd.DataFrame({"user_id": ids, "gender": "", "age": "", "occupation": "", "zip": ""})


HALF_STARS = np.arange(1, 11) / 2  # 0.5, 1.0, ..., 5.0


def check_half_stars(ratings: np.ndarray, path: Path) -> None:
    """Ratings of the half-star releases (ML-10M and later): 0.5 to 5.0 in steps of 0.5."""
    bad = np.flatnonzero(~np.isin(ratings, HALF_STARS))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"expected a rating from 0.5 to 5 in half stars, got {ratings[i]:g}", path, i + 1
        )


def read_half_star_ratings(path: str | Path) -> pd.DataFrame:
    """ML-10M's ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``, ratings in half stars)."""
    path = Path(path)
    frame = read_fields(path, RATINGS_COLUMNS, "ascii")
    stars = pd.to_numeric(frame["rating"].str.strip(), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(stars))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"expected a rating such as 4 or 3.5, got {frame['rating'].iloc[i]!r}", path, i + 1
        )
    out = pd.DataFrame(
        {
            "user_id": to_int(frame, "user_id", path, "UserID"),
            "movie_id": to_int(frame, "movie_id", path, "MovieID"),
            "rating": stars,
            "timestamp": to_int(frame, "timestamp", path, "Timestamp"),
        }
    )
    check_ids_and_times(out, path)
    check_half_stars(out["rating"].to_numpy(), path)
    log.info("%s: %d ratings", path.name, len(out))
    return out


ML10M_FILES = ("ratings.dat", "movies.dat")


def load_ml10m(folder: str | Path) -> MovieLens:
    """ML-10M: ``ratings.dat`` (half stars) and ``movies.dat``; it has no users file, so
    no profile. ``tags.dat`` is not used (logged)."""
    folder = Path(folder)
    movies = read_movies(folder / "movies.dat")
    ratings = read_half_star_ratings(folder / "ratings.dat")
    users = id_only_users(np.unique(ratings["user_id"].to_numpy()))
    report = ReadReport(users=len(users), movies=len(movies))
    report.movies_without_year = int(movies["year"].isna().sum())
    if (folder / "tags.dat").is_file():
        report.notes.append("tags.dat: not used (bst models ratings, not tags)")
        log.info(report.notes[-1])
    ratings = reconcile(ratings, None, movies, report)
    return MovieLens(ratings=ratings, users=users, movies=movies, report=report)
