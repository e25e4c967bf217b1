"""Raw MovieLens files → splits, vocabularies, sequences and TFRecord shards.

    python -m pipelines.prepare --data-dir ../shared/data/ml-1m --out data/prepared/ml1m
    python -m pipelines.prepare --format sasrec --data-dir ../shared/data/ml-1m-sasrec \\
        --side-data-dir ../shared/data/ml-1m --out data/prepared/sasrec

A thin driver: the step itself is :func:`bst.data.prepare.prepare` (what it writes:
:mod:`bst.data.prepared`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst.config import default_data_dir
from bst.data.prepare import FORMATS, prepare
from bst.errors import cli_errors


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.prepare", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the raw files (default: $BST_DATA_DIR or ~/.cache/bst, where ML-1M "
        "is downloaded if missing)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=FORMATS, default="ml1m")
    parser.add_argument(
        "--side-data-dir", default=None, help="sasrec: folder with movies.dat and users.dat"
    )
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--enriched", default=None, help="CSV from pipelines.enrich (overviews)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with cli_errors():
        manifest = prepare(
            args.data_dir or default_data_dir(),
            args.out,
            args.format,
            args.side_data_dir,
            args.num_shards,
            args.enriched,
        )
    c, s = manifest["counts"], manifest["splits"]
    print(
        f"{c['ratings']} ratings, {c['users']} users, {c['movies']} movies → "
        f"train {s['train']['events']}, validation {s['validation']['events']}, "
        f"test {s['test']['events']} events; written to {args.out}"
    )
    return manifest


if __name__ == "__main__":
    main()
