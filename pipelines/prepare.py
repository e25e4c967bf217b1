"""Raw MovieLens files → splits, vocabularies, sequences and TFRecord shards.

    python -m pipelines.prepare --data-dir ../shared/data/ml-1m --out data/prepared/ml1m
    python -m pipelines.prepare --format sasrec --data-dir ../shared/data/ml-1m-sasrec \\
        --side-data-dir ../shared/data/ml-1m --out data/prepared/sasrec
    python -m pipelines.prepare --data-dir ../shared/data/ml-1m \\
        --catalog ../shared/data/catalogs/tmdb_5000_movies.csv --out data/prepared/ml1m-text
    python -m pipelines.prepare --data-dir my-log --set data.user_column=customer \\
        --out data/prepared/mine
    python -m pipelines.prepare --runner beam --data-dir ../shared/data/ml-1m \\
        --out data/prepared/ml1m-beam -- --direct_num_workers=2

``--runner beam`` runs the step as an Apache Beam pipeline (:mod:`bst.data.beam`); what
follows ``--`` are Beam's own pipeline options (``--runner=FlinkRunner ...``; default the
DirectRunner), refused without ``--runner beam`` and when Beam does not know them.

Its data flags are bst.train's (:func:`bst.cli.add_data_flags`: the same help, checks
and errors). A thin driver: the step itself is :func:`bst.data.prepare.prepare` (what it writes:
:mod:`bst.data.prepared`). Arguments are parsed and checked before TensorFlow starts
(``--help`` and mistakes answer at once), and TensorFlow's start-up banners are kept
off the terminal unless ``--verbose``, as in the ``bst`` commands; so
:mod:`bst.data.prepare`, which imports TensorFlow, is imported inside :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import cli
from bst import config as config_lib
from bst.config import default_data_dir
from bst.errors import UsageError, cli_errors


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.prepare",
        description=__doc__.split("\n")[0],
        formatter_class=cli.HelpFormatter,
        epilog="With --runner beam, what follows -- goes to Beam as its pipeline options "
        "(e.g. -- --runner=FlinkRunner --flink_master=host:8081; default the DirectRunner).",
    )
    p.add_argument("--out", required=True, help="output folder")
    cli.add_data_flags(p, "<out>-enriched/")
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
        "--verbose",
        action="store_true",
        help="also show TensorFlow's own log lines (hidden by default unless they are errors)",
    )
    return p


def enriched_dir(out: str | Path) -> Path:
    """Where ``--catalog``'s join is written: ``<out>-enriched/`` beside the prepared
    folder (which the prepare step replaces as a whole)."""
    out = Path(out)
    return out.with_name(out.name + "-enriched")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, checked (one :class:`UsageError` for an impossible value); Beam's
    options (after ``--``) in ``args.beam_args``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = parser().parse_args(argv)
    args.beam_args = beam_args
    updates = config_lib.parse_overrides(args.overrides)
    for key in updates:
        if not key.startswith("data."):
            raise UsageError(f"--set {key}: pipelines.prepare takes only data.* fields")
    updates = cli.data_updates(args, updates)
    args.cfg = cli.checked_data(config_lib.replace(config_lib.ml1m(), updates))
    if beam_args and args.cfg.data.runner != "beam":
        raise UsageError(
            f"Beam pipeline options ({' '.join(beam_args)}) are given after --, but the "
            "runner is in-memory: add --runner beam"
        )
    if args.cfg.data.runner == "beam":
        from bst.data.beam import pipeline_options

        pipeline_options(beam_args)  # the extra installed, every option known: now
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    with cli_errors():
        args = parse(argv)
        cli.setup_logging(args.verbose)
        # imports TensorFlow: after the checks above
        from bst.data.prepare import columns_of, join_catalogs, prepare

        data = args.cfg.data
        data_dir = data.data_dir or default_data_dir()
        if data.runner == "beam":
            from bst.data import beam

            beam_args = list(args.beam_args)
            if not args.verbose and not any("sdk_harness_log_level" in a for a in beam_args):
                beam_args.append("--default_sdk_harness_log_level=WARNING")  # workers' chatter
            manifest = beam.prepare(
                data_dir, args.out, data.format, data.num_shards, data.dataset, beam_args
            )
            return _said(manifest, args.out)
        enriched = data.enriched or None
        if data.catalogs:
            enriched = join_catalogs(args.cfg, data_dir, enriched_dir(args.out))
        manifest = prepare(
            data_dir,
            args.out,
            data.format,
            data.side_data_dir or None,
            data.num_shards,
            enriched,
            data.cold_fraction,
            dataset=data.dataset,
            columns=columns_of(args.cfg),
        )
    return _said(manifest, args.out)


def _said(manifest: dict, out) -> dict:
    c, s = manifest["counts"], manifest["splits"]
    print(
        f"{c['ratings']} ratings, {c['users']} users, {c['movies']} movies → "
        f"train {s['train']['events']}, validation {s['validation']['events']}, "
        f"test {s['test']['events']} events; written to {out}"
    )
    return manifest


if __name__ == "__main__":
    with cli_errors():  # --help and mistakes answer before TensorFlow starts
        early = parse()
    cli.quiet_tensorflow(early.verbose)
    if not early.verbose:
        cli.start_tensorflow_quietly()
    main()
