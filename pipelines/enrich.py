"""Join ML-1M movies to catalogs of plot overviews: the enriched table the prepare step reads.

Usage::

    python -m pipelines.enrich --movies data/ml-1m/movies.dat \\
        --catalog ../shared/data/catalogs/movies_metadata.csv \\
        --catalog ../shared/data/catalogs/tmdb_5000_movies.csv \\
        --out prepared/movies_enriched.csv

Writes ``--out`` (one row per ML-1M movie, in movies.dat order: movie_id, title, year,
catalog, catalog_id, catalog_title, catalog_year, overview, score, method) and, beside
it, ``<stem>.report.json`` and ``<stem>.report.md`` (join rates, counts by method, rows
skipped in each catalog, unmatched movies and the lowest-scoring accepted matches).
Catalog columns default to TMDB's names (``id``, ``title``, ``original_title``,
``release_date``, ``overview``); rename them with ``--columns title=name --columns
date=year``. A user mistake (a missing file, a missing column, a catalog that is not
UTF-8) prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bst.errors import DataError, UsageError
from bst.metadata import MATCH_THRESHOLD
from bst.metadata.report import COLUMN_KEYS, enrich, parse_columns, report_paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.enrich",
        description="Join ML-1M movies.dat to movie catalogs (CSV) to add plot overviews.",
    )
    parser.add_argument("--movies", required=True, type=Path, help="ML-1M movies.dat")
    parser.add_argument(
        "--catalog",
        required=True,
        action="append",
        type=Path,
        help="catalog CSV (repeat for several; earlier ones win ties)",
    )
    parser.add_argument("--out", required=True, type=Path, help="enriched CSV to write")
    parser.add_argument(
        "--columns",
        action="append",
        default=[],
        metavar="KEY=COLUMN",
        help=f"catalog column names, KEY one of {', '.join(COLUMN_KEYS)} (applies to every "
        "catalog; repeatable). Defaults: id, title, original_title, release_date, overview",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=MATCH_THRESHOLD,
        help=f"lowest accepted fuzzy score, 0-100 (default {MATCH_THRESHOLD:g})",
    )
    parser.add_argument(
        "--lowest", type=int, default=20, help="lowest-scoring matches to list in the report"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log every step of the join (DEBUG lines)",
    )
    # the former spelling of --debug, still accepted
    parser.add_argument(
        "-v", "--verbose", dest="debug", action="store_true", help=argparse.SUPPRESS
    )
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the join; returns the report as a dict (also written to ``<stem>.report.json``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.threshold <= 100:
        parser.error(f"--threshold must be in (0, 100], got {args.threshold}")
    if args.lowest < 0:
        parser.error(f"--lowest must be 0 or more, got {args.lowest}")
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        result, report = enrich(
            args.movies,
            args.catalog,
            args.out,
            parse_columns(args.columns),
            args.threshold,
            args.lowest,
        )
    except (DataError, UsageError) as err:
        # A user mistake: one line, no traceback.
        print(f"enrich: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    json_path, md_path = report_paths(args.out)
    print(report.summary())
    print(f"wrote {args.out} and {json_path.name}, {md_path.name} ({result['seconds']:.2f} s)")
    return result


if __name__ == "__main__":
    main()
