"""Raw MovieLens files → splits, vocabularies, sequences and TFRecord shards.

    python -m pipelines.prepare --data-dir ../shared/data/ml-1m --out data/prepared/ml1m
    python -m pipelines.prepare --format sasrec --data-dir ../shared/data/ml-1m-sasrec \\
        --side-data-dir ../shared/data/ml-1m --out data/prepared/sasrec
    python -m pipelines.prepare --data-dir my-log --set data.user_column=customer \\
        --out data/prepared/mine

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
from bst import config as config_lib
from bst.config import RANGES, default_data_dir
from bst.errors import UsageError, cli_errors

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
    cli.add_data_source_flags(p)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a data.* config field, as in bst.train, e.g. --set data.user_column=customer "
        "(repeatable)",
    )
    p.add_argument(
        "--side-data-dir", default=None, help="sasrec: folder with movies.dat and users.dat"
    )
    p.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help=f"TFRecord shards per split, 1..{MAX_SHARDS} (default 4)",
    )
    p.add_argument("--enriched", default=None, help="CSV from pipelines.enrich (overviews)")
    p.add_argument(
        "--cold-fraction",
        type=float,
        default=None,
        help="cold-start protocol: hold this fraction (0..0.5) of the rated movies with an "
        "overview out of training (needs --enriched)",
    )
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines too")
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, checked (one :class:`UsageError` for an impossible value)."""
    args = parser().parse_args(argv)
    if args.num_shards is not None and not 1 <= args.num_shards <= MAX_SHARDS:
        raise UsageError(f"--num-shards must be in 1..{MAX_SHARDS}, got {args.num_shards}")
    if args.cold_fraction is not None and not 0.0 <= args.cold_fraction <= 0.5:  # NaN fails
        raise UsageError(f"--cold-fraction must be in [0, 0.5], got {args.cold_fraction}")
    updates = config_lib.parse_overrides(args.overrides)
    for key in updates:
        if not key.startswith("data."):
            raise UsageError(f"--set {key}: pipelines.prepare takes only data.* fields")
    flags = {
        "data.data_dir": ("--data-dir", args.data_dir),
        "data.format": ("--format", args.format),
        "data.dataset": ("--dataset", args.dataset),
        "data.side_data_dir": ("--side-data-dir", args.side_data_dir),
        "data.num_shards": ("--num-shards", args.num_shards),
        "data.enriched": ("--enriched", args.enriched),
        "data.cold_fraction": ("--cold-fraction", args.cold_fraction),
    }
    for key, (flag, value) in flags.items():
        if value is None:
            continue
        if key in updates:
            raise UsageError(f"{flag} and --set {key} are both given: give one of them")
        updates[key] = value
    cfg = config_lib.replace(config_lib.ml1m(), updates)
    if cfg.data.cold_fraction and not cfg.data.enriched:
        raise UsageError("--cold-fraction holds out movies that have an overview: give --enriched")
    args.cfg = config_lib.validate(cfg)
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    with cli_errors():
        args = parse(argv)
        cli.setup_logging(args.verbose)
        # imports TensorFlow: after the checks above
        from bst.data.prepare import columns_of, prepare

        data = args.cfg.data
        manifest = prepare(
            data.data_dir or default_data_dir(),
            args.out,
            data.format,
            data.side_data_dir or None,
            data.num_shards,
            data.enriched or None,
            data.cold_fraction,
            dataset=data.dataset,
            columns=columns_of(args.cfg),
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
