"""Validated columns of CSV, TSV and Parquet tables: ids, times, ratings, years, genres.

Shared by the readers of the MovieLens CSV releases (:mod:`bst.data.mlcsv`) and of a
generic interactions table (:mod:`bst.data.interactions`). Every check raises a
:class:`~bst.errors.DataError` naming the file, the row (``line N``: the file's line
for CSV/TSV, counting the header as line 1, when no quoted field spans lines; the
1-based data row for Parquet) and what was expected.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bst.errors import DataError, decode_text
from bst.vocab import UNKNOWN_TOKEN

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")

# Unix seconds up to 2100-01-01 (bst.data.movielens.MAX_TIMESTAMP); a larger integer
# timestamp is read as milliseconds when every value fits that reading.
MAX_SECONDS = 4_102_444_800
TIME_UNITS = ("auto", "s", "ms")
# Ratings become categories (bst.data.ratings.rating_levels): at most this many values.
MAX_RATING_LEVELS = 20
_BAD_ID = re.compile(r"[\s\x00-\x1f\x7f]")


def find_table(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.csv``, ``.tsv`` or ``.parquet``; None when none exists, an error
    when more than one does (which one is meant would be a guess)."""
    found = [folder / f"{stem}{s}" for s in TABLE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"{names} are all in {folder}: keep one of them", folder)
    return found[0] if found else None


def read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV (comma), TSV (tab) or Parquet file as a DataFrame; text columns as strings,
    nothing turned into NaN. Parquet keeps its column types."""
    if path.suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except ImportError as err:
            raise DataError(f"reading Parquet needs pyarrow ({err})", path) from None
        except Exception as err:  # pyarrow raises its own types for a corrupt file
            raise DataError(f"not a readable Parquet file ({err})", path) from None
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError("file is empty; expected a header line and rows", path)
    text = decode_text(raw, path, encoding, f"{encoding} text")
    import io

    try:
        return pd.read_csv(
            io.StringIO(text),
            sep="\t" if path.suffix == ".tsv" else ",",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            quoting=csv.QUOTE_MINIMAL,
            engine="c",
        )
    except pd.errors.ParserError as err:
        line = re.search(r"line (\d+)", str(err))
        raise DataError(
            f"malformed {path.suffix[1:].upper()} ({err})",
            path,
            int(line.group(1)) if line else None,
        ) from None


def line_of(path: Path, row: int) -> int:
    """The 1-based line of data row ``row`` (0-based): after the header in CSV/TSV."""
    return row + (1 if path.suffix == ".parquet" else 2)


def require_columns(frame: pd.DataFrame, path: Path, columns: dict[str, str]) -> None:
    """``columns`` maps a column name to the config key that names it."""
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        hints = "; ".join(f"set {columns[m]}=<name> if it has another name" for m in missing[:1])
        raise DataError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(columns found: {found}); {hints}",
            path,
        )


def ids(frame: pd.DataFrame, column: str, path: Path, what: str) -> np.ndarray:
    """Column ``column`` as id strings: any text without white space or control
    characters, not empty and not ``?`` (bst's unknown token). Integers stay their
    decimal text; a float column (Parquet) must hold whole numbers."""
    values = frame[column]
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values.to_numpy()) | (values.to_numpy() % 1 != 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"expected {what} (an id), got {values.iloc[i]!r}", path, line_of(path, i)
            )
        values = values.astype(np.int64)
    if values.dtype.kind in "iu":
        return values.astype(str).to_numpy(dtype=object)
    if values.dtype.kind not in "OU" and str(values.dtype) not in ("string", "str"):
        raise DataError(
            f"column {column!r} has type {values.dtype}; expected {what} as text or integers",
            path,
        )
    text = values.astype(str).str.strip()
    missing = values.isna().to_numpy() | text.eq("").to_numpy() | text.eq(UNKNOWN_TOKEN).to_numpy()
    bad = missing | text.str.contains(_BAD_ID).to_numpy(dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        got = values.iloc[i]
        why = "is empty" if missing[i] and str(got).strip() != UNKNOWN_TOKEN else "is not usable"
        raise DataError(
            f"{what} {got!r} {why}: ids must be non-empty text without spaces, tabs or "
            f"control characters, and not {UNKNOWN_TOKEN!r}",
            path,
            line_of(path, i),
        )
    return text.to_numpy(dtype=object)


def times(
    frame: pd.DataFrame, column: str, path: Path, unit: str = "auto"
) -> tuple[np.ndarray, np.ndarray, str]:
    """Column ``column`` as ``(seconds int64, order key int64, unit read)``.

    Accepts integer seconds or milliseconds since 1970 (``unit`` ``s``/``ms``, or
    ``auto``: milliseconds when some value is past 2100-01-01 in seconds), ISO-8601
    text (``2000-12-31T22:12:40Z``, ``2000-12-31 22:12:40+01:00``; no zone = UTC) and a
    Parquet timestamp column. The order key keeps the finest precision the column has
    (milliseconds, nanoseconds), so events within one second keep their true order.
    """
    values = frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(f"timestamp {column!r} is missing", path, line_of(path, i))
        stamps = values.dt.tz_convert("UTC") if values.dt.tz is not None else values
        nanos = stamps.astype("datetime64[ns]").astype(np.int64).to_numpy()
        return _seconds(nanos // 10**9, path), nanos, "datetime"
    if values.dtype.kind in "iu":
        numbers = values.to_numpy(dtype=np.int64)
    else:
        text = values.astype(str).str.strip()
        if text.str.fullmatch(r"\d{1,18}").all():
            numbers = text.astype(np.int64).to_numpy()
        elif text.str.match(r"^\d{4}-\d\d-\d\d").all():
            return _iso_times(text, path)
        else:
            good = text.str.fullmatch(r"\d{1,18}") | text.str.match(r"^\d{4}-\d\d-\d\d")
            i = int(np.flatnonzero(~good.to_numpy(dtype=bool))[0])
            raise DataError(
                f"expected a timestamp (integer seconds or milliseconds since 1970, or "
                f"ISO-8601 text like 2000-12-31T22:12:40Z), got {text.iloc[i]!r}",
                path,
                line_of(path, i),
            )
    if unit == "auto":
        unit = "ms" if len(numbers) and numbers.max() > MAX_SECONDS else "s"
    seconds = numbers // 1000 if unit == "ms" else numbers
    return _seconds(seconds, path), numbers, unit


def _iso_times(text: pd.Series, path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().any():
        i = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataError(
            f"expected an ISO-8601 timestamp like 2000-12-31T22:12:40Z, got {text.iloc[i]!r}",
            path,
            line_of(path, i),
        )
    nanos = parsed.astype("datetime64[ns, UTC]").astype(np.int64).to_numpy()
    return _seconds(nanos // 10**9, path), nanos, "iso-8601"


def _seconds(seconds: np.ndarray, path: Path) -> np.ndarray:
    bad = np.flatnonzero((seconds < 0) | (seconds > MAX_SECONDS))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"timestamp {seconds[i]} s is outside 1970..2100 (milliseconds? set "
            "data.time_unit=ms; microseconds are not read)",
            path,
            line_of(path, i),
        )
    return seconds.astype(np.int64)


def ratings(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Column ``column`` as finite float64 numbers (``4``, ``3.5``), or the row that is not."""
    values = frame[column]
    if values.dtype.kind in "iuf":
        numbers = values.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numbers)
    else:
        text = values.astype(str).str.strip()
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numbers)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"expected a rating (a number such as 4 or 3.5), got {values.iloc[i]!r}",
            path,
            line_of(path, i),
        )
    return numbers


def years(frame: pd.DataFrame, column: str, path: Path) -> pd.array:
    """Column ``column`` as nullable Int64 years; empty = unknown; anything else a
    four-digit year or an error."""
    text = frame[column].astype(str).str.strip().replace({"nan": "", "<NA>": "", "None": ""})
    text = text.str.replace(r"\.0$", "", regex=True)
    bad = text.ne("") & ~text.str.fullmatch(r"\d{4}")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy(dtype=bool))[0])
        raise DataError(
            f"expected a four-digit year or nothing, got {frame[column].iloc[i]!r}",
            path,
            line_of(path, i),
        )
    return pd.array([int(t) if t else None for t in text], dtype="Int64")


def genre_lists(values: pd.Series, empty: tuple[str, ...] = ()) -> list[list[str]]:
    """``"Action|Comedy"`` → ``["Action", "Comedy"]``; the tokens in ``empty`` (such as
    MovieLens's ``(no genres listed)``) mean no genre."""
    out = []
    for value in values.astype(str):
        out.append([g.strip() for g in value.split("|") if g.strip() and g.strip() not in empty])
    return out
