"""Raw MovieLens files → splits, vocabularies, sequences and TFRecord shards.

    python -m pipelines.prepare --data-dir ../shared/data/ml-1m --out data/prepared/ml1m
    python -m pipelines.prepare --format sasrec --data-dir ../shared/data/ml-1m-sasrec \\
        --side-data-dir ../shared/data/ml-1m --out data/prepared/sasrec

A thin driver: the step itself is :func:`bst.data.prepare.prepare` (what it writes:
:mod:`bst.data.prepared`). Arguments are parsed and checked before TensorFlow starts
(``--help`` and mistakes answer at once), and TensorFlow's start-up banners are kept
off the terminal unless ``--verbose``, as in the ``bst`` commands; so
:mod:`bst.data.prepare`, which imports TensorFlow, is imported inside :func:`main`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import cli
from bst.config import CHOICES, RANGES, default_data_dir
from bst.errors import UsageError, cli_errors

FORMATS = CHOICES["data.format"]
MAX_SHARDS = int(RANGES["data.num_shards"][1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.prepare",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the raw files (default: $BST_DATA_DIR or ~/.cache/bst, where ML-1M "
        "is downloaded if missing)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=FORMATS, default="ml1m")
    p.add_argument(
        "--side-data-dir", default=None, help="sasrec: folder with movies.dat and users.dat"
    )
    p.add_argument(
        "--num-shards", type=int, default=4, help=f"TFRecord shards per split, 1..{MAX_SHARDS}"
    )
    p.add_argument("--enriched", default=None, help="CSV from pipelines.enrich (overviews)")
    p.add_argument(
        "--cold-fraction",
        type=float,
        default=0.0,
        help="cold-start protocol: hold this fraction (0..0.5) of the rated movies with an "
        "overview out of training (needs --enriched)",
    )
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines too")
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, checked (one :class:`UsageError` for an impossible value)."""
    args = parser().parse_args(argv)
    if not 1 <= args.num_shards <= MAX_SHARDS:
        raise UsageError(f"--num-shards must be in 1..{MAX_SHARDS}, got {args.num_shards}")
    if not 0.0 <= args.cold_fraction <= 0.5:  # NaN fails too
        raise UsageError(f"--cold-fraction must be in [0, 0.5], got {args.cold_fraction}")
    if args.cold_fraction and not args.enriched:
        raise UsageError("--cold-fraction holds out movies that have an overview: give --enriched")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    with cli_errors():
        args = parse(argv)
        cli.setup_logging(args.verbose)
        from bst.data.prepare import prepare  # imports TensorFlow: after the checks above

        manifest = prepare(
            args.data_dir or default_data_dir(),
            args.out,
            args.format,
            args.side_data_dir,
            args.num_shards,
            args.enriched,
            args.cold_fraction,
        )
    c, s = manifest["counts"], manifest["splits"]
    print(
        f"{c['ratings']} ratings, {c['users']} users, {c['movies']} movies → "
        f"train {s['train']['events']}, validation {s['validation']['events']}, "
        f"test {s['test']['events']} events; written to {args.out}"
    )
    return manifest


if __name__ == "__main__":
    with cli_errors():  # --help and mistakes answer before TensorFlow starts
        early = parse()
    cli.quiet_tensorflow(early.verbose)
    if not early.verbose:
        cli.start_tensorflow_quietly()
    main()
