"""Joining several catalogs to the movies, and the join report (rates, counts, samples)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bst.data.movielens import read_movies
from bst.errors import DataError, UsageError
from bst.metadata.catalogs import Catalog, CatalogSpec, load_catalog
from bst.metadata.match import MATCH_THRESHOLD, METHODS, match_catalog, movie_names

log = logging.getLogger("bst.metadata")


@dataclass
class JoinReport:
    """What a join did, for a person to check: rates, counts and the doubtful cases.

    Attributes:
        movies: ML-1M movies joined.
        threshold: the fuzzy threshold used.
        naive_matched: movies whose raw title (year removed) and year equal a catalog row's
            title and year, the join one would write first.
        matched: movies matched by this join; ``by_method`` splits them.
        by_method: counts of ``exact``, ``fuzzy`` and ``none``.
        by_catalog: matched movies per catalog (the catalog each movie's match came from).
        catalogs: per-catalog load statistics (:class:`CatalogStats` as dicts).
        unmatched: movies left without a match (``movie_id``, ``title``).
        lowest_accepted: the lowest-scoring accepted fuzzy matches, lowest first.
        notes: every warning raised while loading or matching.
    """

    movies: int = 0
    threshold: float = MATCH_THRESHOLD
    naive_matched: int = 0
    matched: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    by_catalog: dict[str, int] = field(default_factory=dict)
    catalogs: list[dict] = field(default_factory=list)
    unmatched: list[dict] = field(default_factory=list)
    lowest_accepted: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def naive_rate(self) -> float:
        return self.naive_matched / self.movies if self.movies else 0.0

    @property
    def join_rate(self) -> float:
        return self.matched / self.movies if self.movies else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["naive_rate"] = round(self.naive_rate, 4)
        out["join_rate"] = round(self.join_rate, 4)
        return out

    def summary(self) -> str:
        """A few lines for the terminal."""
        methods = ", ".join(f"{m} {self.by_method.get(m, 0)}" for m in METHODS)
        catalogs = ", ".join(f"{k} {v}" for k, v in self.by_catalog.items())
        return "\n".join(
            [
                f"movies: {self.movies}",
                f"naive join (raw title + year): {self.naive_matched} ({self.naive_rate:.1%})",
                f"fuzzy join: {self.matched} ({self.join_rate:.1%}); {methods}",
                f"matches by catalog (the catalog of each movie's best match): "
                f"{catalogs or 'none'}",
                f"fuzzy threshold: {self.threshold:g}; unmatched: {len(self.unmatched)}; "
                f"lowest accepted score: "
                + (f"{self.lowest_accepted[0]['score']:.1f}" if self.lowest_accepted else "-"),
            ]
        )

    def to_markdown(self) -> str:
        """The full report for a person: summary, skipped rows, doubtful matches, misses."""
        lines = ["# Metadata join report", "", "```", self.summary(), "```", "", "## Catalogs", ""]
        lines += ["| catalog | rows read | kept | skipped / notes |", "| --- | --- | --- | --- |"]
        for stats in self.catalogs:
            skipped = {
                k: v
                for k, v in stats.items()
                if k
                in (
                    "truncated_rows",
                    "malformed_rows",
                    "empty_titles",
                    "empty_ids",
                    "duplicate_ids",
                    "missing_dates",
                    "bad_dates",
                )
                and v
            }
            text = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "-"
            lines.append(
                f"| {stats['catalog']} | {stats['rows_read']} | {stats['rows_kept']} | {text} |"
            )
        lines += ["", "## Lowest-scoring accepted matches (check these)", ""]
        lines += ["| score | movie | catalog title | catalog |", "| --- | --- | --- | --- |"]
        for m in self.lowest_accepted:
            lines.append(
                f"| {m['score']:.1f} | {m['movie_id']} {_md(m['title'])} | "
                f"{_md(m['catalog_title'])} ({m['catalog_year'] or '?'}) | {m['catalog']} {m['catalog_id']} |"
            )
        lines += ["", f"## Unmatched movies ({len(self.unmatched)})", ""]
        lines += [f"- {m['movie_id']} {_md(m['title'])}" for m in self.unmatched]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {_md(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|")


OUTPUT_COLUMNS = (
    "movie_id",
    "title",
    "year",
    "catalog",
    "catalog_id",
    "catalog_title",
    "catalog_year",
    "overview",
    "score",
    "method",
)


def _check_movies(movies: pd.DataFrame) -> None:
    needed = ("movie_id", "title", "year")
    missing = [c for c in needed if c not in movies.columns]
    if missing:
        raise ValueError(
            f"movies need columns {', '.join(needed)} (from bst.data.movielens.read_movies); "
            f"missing {', '.join(missing)}. Received columns: {list(movies.columns)}"
        )


def naive_matches(movies: pd.DataFrame, catalogs: Sequence[Catalog]) -> np.ndarray:
    """Whether each movie's title (year removed, as written) and year equal a catalog row's."""
    keys = pd.DataFrame({"title": movies["title"].astype(str), "year": movies["year"]})
    keys["pos"] = np.arange(len(keys))
    hit = np.zeros(len(movies), dtype=bool)
    for catalog in catalogs:
        rows = catalog.rows[["title", "year"]].dropna(subset=["year"]).drop_duplicates()
        merged = keys.dropna(subset=["year"]).merge(rows, on=["title", "year"])
        hit[merged["pos"].to_numpy()] = True
    return hit


def join_catalogs(
    movies: pd.DataFrame,
    catalogs: Sequence[Catalog],
    threshold: float = MATCH_THRESHOLD,
    lowest: int = 20,
) -> tuple[pd.DataFrame, JoinReport]:
    """Join ML-1M movies to one or more loaded catalogs; one output row per movie, in order.

    Each catalog is matched on its own (exact, then fuzzy, one-to-one). A movie matched
    in several catalogs keeps the match with the highest score; ties go to an exact
    match over a fuzzy one, then to a row with a non-empty overview, then to the catalog
    listed first. The output's ``catalog`` column says which catalog the row came from.
    A movie without a year stays unmatched: two films of one title could not be told
    apart.

    Args:
        movies: DataFrame with ``movie_id``, ``title`` (year removed) and ``year``, as
            returned by :func:`bst.data.movielens.read_movies`.
        catalogs: catalogs from :func:`load_catalog`, in order of preference for ties.
        threshold: float. Lowest accepted fuzzy score. Defaults to ``MATCH_THRESHOLD``.
        lowest: int. How many of the lowest-scoring accepted matches the report lists.

    Returns:
        ``(enriched, report)``: ``enriched`` has the columns of ``OUTPUT_COLUMNS``
        (``catalog``/``catalog_id``/``overview`` empty and ``score`` NaN when unmatched).
    """
    _check_movies(movies)
    if not 0 < threshold <= 100:
        raise ValueError(f"`threshold` must be in (0, 100]. Received: threshold={threshold}")
    labels = [c.label for c in catalogs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"catalog names must differ. Received: {labels}")
    movies = movies.reset_index(drop=True)
    n = len(movies)
    names = movie_names(movies)
    report = JoinReport(movies=n, threshold=threshold)
    empty_names = n - names["item"].nunique()
    if empty_names:
        report.notes.append(f"{empty_names} movie(s) without a usable title; left unmatched")

    best = pd.DataFrame(
        {
            "catalog": np.full(n, -1),
            "row": np.full(n, -1),
            "score": np.full(n, -np.inf),
            "exact": np.zeros(n, dtype=bool),
            "has_overview": np.zeros(n, dtype=bool),
        }
    )
    for c, catalog in enumerate(catalogs):
        report.catalogs.append(asdict(catalog.stats))
        report.notes.extend(catalog.stats.notes)
        found = match_catalog(movies, catalog, threshold, movie_names=names)
        matched = found["row"].to_numpy() >= 0
        rows = found["row"].to_numpy()[matched]
        overview = catalog.rows["overview"].to_numpy()[rows] != ""
        candidate = (
            found["score"].to_numpy()[matched],
            (found["method"].to_numpy() == "exact")[matched],
            overview,
        )
        current = (
            best["score"].to_numpy()[matched],
            best["exact"].to_numpy()[matched],
            best["has_overview"].to_numpy()[matched],
        )
        # Strictly better only: an equal match from an earlier catalog stays.
        better = (candidate[0] > current[0]) | (
            (candidate[0] == current[0])
            & (
                (candidate[1] & ~current[1])
                | ((candidate[1] == current[1]) & candidate[2] & ~current[2])
            )
        )
        where = np.flatnonzero(matched)[better]
        best.loc[where, "catalog"] = c
        best.loc[where, "row"] = rows[better]
        best.loc[where, "score"] = candidate[0][better]
        best.loc[where, "exact"] = candidate[1][better]
        best.loc[where, "has_overview"] = candidate[2][better]
        log.info(
            "%s: %d movies have a match in this catalog (before the best match across "
            "catalogs is chosen; %d of them are kept from it so far)",
            catalog.label,
            int(matched.sum()),
            int((best["catalog"] == c).sum()),
        )

    enriched = _enriched_frame(movies, catalogs, best)
    report.naive_matched = int(naive_matches(movies, catalogs).sum())
    counts = enriched["method"].value_counts()
    report.by_method = {m: int(counts.get(m, 0)) for m in METHODS}
    report.matched = report.by_method["exact"] + report.by_method["fuzzy"]
    catalog_counts = enriched["catalog"][enriched["method"] != "none"].value_counts()
    report.by_catalog = {label: int(catalog_counts.get(label, 0)) for label in labels}
    unmatched = enriched[enriched["method"] == "none"]
    report.unmatched = [
        {"movie_id": int(i), "title": t}
        for i, t in zip(
            unmatched["movie_id"], _display_titles(movies)[unmatched.index], strict=True
        )
    ]
    fuzzy = enriched[enriched["method"] == "fuzzy"].sort_values(["score", "movie_id"]).head(lowest)
    report.lowest_accepted = [
        {
            "score": round(float(r.score), 1),
            "movie_id": int(r.movie_id),
            "title": _display_titles(movies)[i],
            "catalog": r.catalog,
            "catalog_id": r.catalog_id,
            "catalog_title": r.catalog_title,
            "catalog_year": "" if pd.isna(r.catalog_year) else int(r.catalog_year),
        }
        for i, r in zip(fuzzy.index, fuzzy.itertuples(index=False), strict=True)
    ]
    return enriched, report


def _display_titles(movies: pd.DataFrame) -> np.ndarray:
    if "raw_title" in movies.columns:
        return movies["raw_title"].astype(str).to_numpy()
    years = movies["year"].astype("string").fillna("?")
    return (movies["title"].astype(str) + " (" + years + ")").to_numpy()


def _enriched_frame(
    movies: pd.DataFrame, catalogs: Sequence[Catalog], best: pd.DataFrame
) -> pd.DataFrame:
    n = len(movies)
    out = {
        "catalog": np.full(n, "", dtype=object),
        "catalog_id": np.full(n, "", dtype=object),
        "catalog_title": np.full(n, "", dtype=object),
        "catalog_year": pd.array([pd.NA] * n, dtype="Int64"),
        "overview": np.full(n, "", dtype=object),
    }
    for c, catalog in enumerate(catalogs):
        mine = np.flatnonzero(best["catalog"].to_numpy() == c)
        rows = catalog.rows.iloc[best["row"].to_numpy()[mine]]
        out["catalog"][mine] = catalog.label
        out["catalog_id"][mine] = rows["catalog_id"].to_numpy()
        out["catalog_title"][mine] = rows["title"].to_numpy()
        out["catalog_year"][mine] = rows["year"].to_numpy()
        out["overview"][mine] = rows["overview"].to_numpy()
    matched = best["catalog"].to_numpy() >= 0
    exact = best["exact"].to_numpy()
    enriched = pd.DataFrame(
        {
            "movie_id": movies["movie_id"].to_numpy(),
            "title": _display_titles(movies),
            "year": movies["year"].astype("Int64").to_numpy(),
            **out,
            "score": np.where(matched, best["score"].to_numpy(), np.nan).round(1),
            "method": np.where(matched, np.where(exact, "exact", "fuzzy"), "none"),
        }
    )
    return enriched[list(OUTPUT_COLUMNS)]


def load_catalogs(specs: Iterable[CatalogSpec]) -> list[Catalog]:
    """:func:`load_catalog` for each spec, in order."""
    return [load_catalog(spec) for spec in specs]


COLUMN_KEYS = ("id", "title", "original_title", "date", "overview")


def parse_columns(items: Sequence[str]) -> dict[str, str]:
    """``['title=name', 'date=year']`` → ``{'title': 'name', 'date': 'year'}``."""
    columns: dict[str, str] = {}
    for item in items:
        key, sep, column = item.partition("=")
        key = key.strip()
        if not sep or key not in COLUMN_KEYS:
            raise UsageError(
                f"--columns expects KEY=COLUMN with KEY one of {', '.join(COLUMN_KEYS)}; "
                f"got {item!r}"
            )
        columns[key] = column.strip()
    return columns


def catalog_specs(paths: Sequence[Path], columns: dict[str, str]) -> list[CatalogSpec]:
    """One spec per path, named by file stem (``_2``, ``_3`` added when stems repeat)."""
    specs: list[CatalogSpec] = []
    seen: dict[str, int] = {}
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        specs.append(CatalogSpec(Path(path), name=name).with_columns(**columns))
    return specs


def report_paths(out: Path) -> tuple[Path, Path]:
    """``x/movies_enriched.csv`` → ``x/movies_enriched.report.json``, ``...report.md``."""
    return out.with_name(f"{out.stem}.report.json"), out.with_name(f"{out.stem}.report.md")


def enrich(
    movies_path: Path,
    catalog_paths: Sequence[Path],
    out: Path,
    columns: dict[str, str] | None = None,
    threshold: float = MATCH_THRESHOLD,
    lowest: int = 20,
) -> tuple[dict, JoinReport]:
    """Join ``movies.dat`` to the catalogs and write ``out`` plus its two reports.

    Returns the report as a dict (also written to ``<stem>.report.json``) and the
    :class:`JoinReport` itself.
    """
    specs = catalog_specs(catalog_paths, columns or {})
    start = time.perf_counter()
    movies = read_movies(movies_path)
    catalogs = load_catalogs(specs)
    log.info("matching %d movies against %d catalog(s)", len(movies), len(catalogs))
    enriched, report = join_catalogs(movies, catalogs, threshold, lowest)
    seconds = time.perf_counter() - start
    json_path, md_path = report_paths(out)
    result = report.to_dict()
    result.update({"movies_path": str(movies_path), "out": str(out), "seconds": round(seconds, 3)})
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        enriched.to_csv(out, index=False, float_format="%.1f", lineterminator="\n")
        json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")
        md_path.write_text(report.to_markdown(), "utf-8")
    except OSError as err:
        raise DataError(f"cannot write {err.filename or out}: {err.strerror}") from None
    return result, report
