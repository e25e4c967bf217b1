"""Catalog CSV files (TMDB-style): what a catalog is, reading it, counting its bad rows."""

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

log = logging.getLogger("bst.metadata")

_DATE_RE = re.compile(r"^\s*(?P<year>\d{4})(?:[-/.]\d{1,2}(?:[-/.]\d{1,2})?)?\s*$")
_DATE_YEAR_LAST_RE = re.compile(r"^\s*\d{1,2}[-/.]\d{1,2}[-/.](?P<year>\d{4})\s*$")


@dataclass(frozen=True)
class CatalogSpec:
    """Where a catalog is and which of its columns hold what.

    Attributes:
        path: str | Path. The CSV file (UTF-8, a header row).
        name: str | None. Label written in the output ``catalog`` column. Defaults to the
            file's stem (``tmdb_5000_movies``).
        id_column: str. Unique id of a row; ``id`` (the TMDB id) in both shared catalogs.
        title_column: str. The title. Defaults to ``title``.
        original_title_column: str | None. A second name (the title in the original
            language), used when the column exists; ``None`` to ignore it.
        date_column: str. Release date (``1995-10-30``, ``10/30/1995``) or a bare year.
        overview_column: str. The plot description carried into the output.
        encoding: str. Text encoding of the file. Defaults to ``utf-8``.
    """

    path: str | Path
    name: str | None = None
    id_column: str = "id"
    title_column: str = "title"
    original_title_column: str | None = "original_title"
    date_column: str = "release_date"
    overview_column: str = "overview"
    encoding: str = "utf-8"

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem

    def with_columns(self, **columns: str) -> CatalogSpec:
        """A copy with some column names changed, keyed ``title=``, ``date=``, ``id=``, ...

        Raises ``ValueError`` naming the unknown key, so a CLI typo is caught early.
        """
        known = {"id", "title", "original_title", "date", "overview"}
        unknown = sorted(set(columns) - known)
        if unknown:
            raise ValueError(
                f"unknown catalog column key(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(known))}. Received: {columns}"
            )
        values = asdict(self)
        for key, column in columns.items():
            if not column and key != "original_title":
                raise ValueError(f"column name for `{key}` is empty. Received: {columns}")
            values[f"{key}_column"] = column or None
        return CatalogSpec(**values)


@dataclass
class CatalogStats:
    """What loading one catalog found: rows read, rows kept and every row set aside."""

    catalog: str
    path: str
    rows_read: int = 0
    rows_kept: int = 0
    truncated_rows: int = 0
    malformed_rows: int = 0
    empty_titles: int = 0
    empty_ids: int = 0
    duplicate_ids: int = 0
    missing_dates: int = 0
    bad_dates: int = 0
    empty_overviews: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(message)
        log.warning(message)


@dataclass
class Catalog:
    """One loaded catalog: its rows (``catalog_id, title, original_title, year, overview``)."""

    spec: CatalogSpec
    rows: pd.DataFrame
    stats: CatalogStats

    @property
    def label(self) -> str:
        return self.spec.label


def parse_years(values: pd.Series) -> tuple[pd.Series, int, int]:
    """Years of release dates or bare years as nullable Int64, plus (missing, unparseable) counts.

    Accepts ``1995-10-30``, ``1995-10``, ``1995`` and ``10/30/1995``; only the year is
    used, so month and day are not checked. Other text (``soon``) or a year outside
    1870-2100 (``0000-00-00``) leaves the year unknown and counts as unparseable.
    """
    text = values.fillna("").astype(str).str.strip()
    missing = text.eq("")
    year = pd.to_numeric(text.str.extract(_DATE_RE)["year"], errors="coerce")
    last = pd.to_numeric(text.str.extract(_DATE_YEAR_LAST_RE)["year"], errors="coerce")
    year = year.fillna(last)
    year = year.where((year >= 1870) & (year <= 2100))
    bad = year.isna() & ~missing
    return year.astype("Int64"), int(missing.sum()), int(bad.sum())


def load_catalog(spec: CatalogSpec) -> Catalog:
    """Read and validate one catalog CSV; bad rows are skipped and counted, never dropped silently.

    Raises :class:`DataError` for a missing file, a file that is not ``spec.encoding``
    (naming the line of the first bad byte), or a header without the needed columns.
    A last row with no line end is taken as cut short (The Movies Dataset head is cut
    mid-row) and skipped with a count, as are rows with the wrong number of fields,
    empty titles or ids, and repeated ids (the first row with an id is kept).
    """
    path = Path(spec.path)
    if not path.is_file():
        raise DataError(f"catalog file not found: {path}", path)
    raw = path.read_bytes()
    text = decode_text(
        raw, path, spec.encoding, f"a {spec.encoding} CSV (re-save the file as UTF-8)"
    ).lstrip("\ufeff")
    if not text.strip():
        raise DataError("catalog is empty; expected a CSV with a header row", path)
    stats = CatalogStats(catalog=spec.label, path=str(path))

    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader)]
    wanted = {
        "id": spec.id_column,
        "title": spec.title_column,
        "date": spec.date_column,
        "overview": spec.overview_column,
    }
    missing = [f"{key} column '{col}'" for key, col in wanted.items() if col not in header]
    if missing:
        raise DataError(
            f"missing {', '.join(missing)}; the header has {', '.join(header)} "
            "(name the columns with --columns KEY=COLUMN)",
            path,
            1,
        )
    index = {key: header.index(col) for key, col in wanted.items()}
    original = spec.original_title_column
    if original is not None and original in header:
        index["original_title"] = header.index(original)

    records: list[list[str]] = []
    lines: list[int] = []
    bad_lines: list[int] = []
    start = reader.line_num + 1
    try:
        for fields in reader:
            if len(fields) == len(header):
                records.append(fields)
                lines.append(start)
            elif fields:  # blank lines are not rows
                bad_lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:  # a field over csv's size limit, a NUL byte
        raise DataError(f"cannot parse the CSV row starting here: {err}", path, start) from None
    stats.rows_read = len(records) + len(bad_lines)
    if not text.endswith(("\n", "\r")) and (records or bad_lines):
        # The final record has no line end: the file may have been cut inside it.
        if bad_lines and (not lines or bad_lines[-1] > lines[-1]):
            cut = bad_lines.pop()
        else:
            cut = lines.pop()
            records.pop()
        stats.truncated_rows = 1
        stats.note(
            f"{path.name} line {cut}: last row has no line end, so it may be cut short; "
            "skipped (add a final newline if the row is complete)"
        )
    if bad_lines:
        stats.malformed_rows = len(bad_lines)
        shown = ", ".join(str(n) for n in bad_lines[:5])
        stats.note(
            f"{path.name}: skipped {len(bad_lines)} rows without {len(header)} fields "
            f"(line{'s' if len(bad_lines) > 1 else ''} {shown}"
            f"{', ...' if len(bad_lines) > 5 else ''})"
        )

    def column(key: str) -> pd.Series:
        if key not in index:
            return pd.Series([""] * len(records), dtype=object)
        i = index[key]
        return pd.Series([r[i].strip() for r in records], dtype=object)

    rows = pd.DataFrame(
        {
            "catalog_id": column("id"),
            "title": column("title"),
            "original_title": column("original_title"),
            "overview": column("overview"),
            "line": np.asarray(lines, dtype=np.int64),
        }
    )
    rows["year"], stats.missing_dates, stats.bad_dates = parse_years(column("date"))
    keep = np.ones(len(rows), dtype=bool)
    for mask, attr, what in (
        (rows["title"].eq("").to_numpy(), "empty_titles", "an empty title"),
        (rows["catalog_id"].eq("").to_numpy(), "empty_ids", "an empty id"),
    ):
        mask = mask & keep
        setattr(stats, attr, int(mask.sum()))
        if mask.any():
            stats.note(
                f"{path.name}: skipped {int(mask.sum())} rows with {what} "
                f"(first at line {int(rows['line'].to_numpy()[mask][0])})"
            )
        keep &= ~mask
    dupes = rows["catalog_id"].duplicated(keep="first").to_numpy() & keep
    stats.duplicate_ids = int(dupes.sum())
    if dupes.any():
        first = int(rows["line"].to_numpy()[dupes][0])
        stats.note(
            f"{path.name}: skipped {stats.duplicate_ids} rows repeating an earlier "
            f"{spec.id_column} (the first at line {first}, id {rows['catalog_id'].to_numpy()[dupes][0]})"
        )
    keep &= ~dupes
    if stats.missing_dates or stats.bad_dates:
        stats.note(
            f"{path.name}: {stats.missing_dates} empty and {stats.bad_dates} unparseable "
            f"{spec.date_column} values; those rows have an unknown year"
        )
    rows = rows[keep].reset_index(drop=True)
    stats.rows_kept = len(rows)
    stats.empty_overviews = int(rows["overview"].eq("").sum())
    log.info("%s: %d rows kept of %d", path.name, stats.rows_kept, stats.rows_read)
    return Catalog(spec=spec, rows=rows, stats=stats)
