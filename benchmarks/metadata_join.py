"""Precision, recall and speed of the ML-1M → catalog metadata join.

Joins all 3,883 ML-1M movies to both shared catalogs (The Movies Dataset head and
TMDB 5000), timing the load and the match, and only then reads
``catalogs/labels_sample.csv`` (MovieLens' own tmdb ids for 500 movies) to score the
result. The matcher never sees the labels. Both catalogs' ``id`` column is the TMDB
id, so a match is correct when its ``catalog_id`` equals the label's ``tmdbId``.

* recall: correct matches / labeled movies whose tmdb id is in at least one catalog;
* precision: correct matches / matched labeled movies (all 500: a match for a movie
  that no catalog holds is wrong by definition).

Usage::

    python benchmarks/metadata_join.py [--data-dir DIR] [--show-errors]

``DIR`` (default ``$BST_DATA_DIR``, else ``<repo>/../shared/data``) holds ``ml-1m/`` and
``catalogs/``. Targets: precision ≥ 0.995, recall ≥ 0.97, join ≤ 5 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bst import machine
from bst.data.movielens import read_movies  # noqa: E402
from bst.metadata import CatalogSpec, join_catalogs, load_catalogs  # noqa: E402

CATALOG_FILES = ("movies_metadata.csv", "tmdb_5000_movies.csv")


def default_data_dir() -> Path:
    env = os.environ.get("BST_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def score(enriched: pd.DataFrame, labels: pd.DataFrame, catalog_ids: set[str]) -> dict:
    """Precision and recall of ``enriched`` against ``labels`` (movieId, tmdbId)."""
    labels = labels.dropna(subset=["tmdbId"]).copy()
    labels["tmdb"] = labels["tmdbId"].astype("int64").astype(str)
    merged = labels.merge(enriched, left_on="movieId", right_on="movie_id", how="left")
    merged["catalog_id"] = merged["catalog_id"].fillna("").astype(str)
    in_catalog = merged["tmdb"].isin(catalog_ids)
    matched = merged["method"].isin(["exact", "fuzzy"])
    correct = matched & (merged["catalog_id"] == merged["tmdb"])
    n_matched = int(matched.sum())
    return {
        "sample": len(merged),
        "in_catalogs": int(in_catalog.sum()),
        "matched": n_matched,
        "correct": int(correct.sum()),
        "wrong": int((matched & ~correct).sum()),
        "missed": int((in_catalog & ~correct & ~matched).sum()),
        "precision": float(correct.sum() / n_matched) if n_matched else 0.0,
        "recall": float(correct.sum() / in_catalog.sum()) if in_catalog.any() else 0.0,
        "errors": merged[(matched & ~correct) | (in_catalog & ~matched)],
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--show-errors", action="store_true", help="list wrong and missed movies")
    args = parser.parse_args(argv)
    print(machine.first_line(), flush=True)  # where these figures are measured
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    data = args.data_dir or default_data_dir()
    movies_path = data / "ml-1m" / "movies.dat"
    specs = [CatalogSpec(data / "catalogs" / name) for name in CATALOG_FILES]

    start = time.perf_counter()
    movies = read_movies(movies_path)
    catalogs = load_catalogs(specs)
    loaded = time.perf_counter()
    enriched, report = join_catalogs(movies, catalogs)
    done = time.perf_counter()

    labels = pd.read_csv(data / "catalogs" / "labels_sample.csv")  # only after the join
    catalog_ids = set().union(*(set(c.rows["catalog_id"]) for c in catalogs))
    figures = score(enriched, labels, catalog_ids)
    errors = figures.pop("errors")
    figures.update(
        {
            "movies": report.movies,
            "naive_rate": round(report.naive_rate, 4),
            "join_rate": round(report.join_rate, 4),
            "by_method": report.by_method,
            "load_s": round(loaded - start, 3),
            "match_s": round(done - loaded, 3),
            "total_s": round(done - start, 3),
        }
    )
    print(f"movies {report.movies}, catalogs {', '.join(c.label for c in catalogs)}")
    print(
        f"naive join rate {report.naive_rate:.1%} ({report.naive_matched}), "
        f"fuzzy join rate {report.join_rate:.1%} ({report.matched}): "
        + ", ".join(f"{k} {v}" for k, v in report.by_method.items())
    )
    print(
        f"labeled sample {figures['sample']}, in catalogs {figures['in_catalogs']}: "
        f"matched {figures['matched']}, correct {figures['correct']}, wrong {figures['wrong']}, "
        f"missed {figures['missed']}"
    )
    print(f"precision {figures['precision']:.4f} (target >= 0.995)")
    print(f"recall    {figures['recall']:.4f} (target >= 0.97)")
    print(
        f"time      {figures['total_s']:.2f} s (read {figures['load_s']:.2f} s + "
        f"match {figures['match_s']:.2f} s; target <= 5 s)"
    )
    if args.show_errors and len(errors):
        cols = [
            "movieId",
            "title_x",
            "tmdb",
            "catalog_id",
            "catalog_title",
            "catalog_year",
            "score",
        ]
        print(errors[cols].to_string(index=False))
    return figures


if __name__ == "__main__":
    main()
