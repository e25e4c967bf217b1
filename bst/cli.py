"""The command lines' arguments, parsed and checked before TensorFlow is imported.

Each ``python -m bst.<command>`` module calls :func:`early` first thing when run as
a script: ``--help``, a mistyped flag, an unknown ``--set`` key or an impossible value
then answer at once (no 5-second TensorFlow start, no banner after the help). The
same parsers serve ``main(argv)`` when a command is called from Python.

:func:`setup_logging` is the one logging setup of every command: bst's own INFO
lines, and TensorFlow's only when they matter (errors), unless ``--verbose``.
No TensorFlow here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from bst import config as config_lib
from bst.errors import UsageError, cli_errors

DEFAULT_EXPORT = "saved_models/bst"
DEFAULT_K = 10
DEFAULT_HISTORY = 10
EVAL_SPLITS = ("test", "validation")
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown in ``--help`` (but not "default: None" or for flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        if action.option_strings and action.nargs != 0:
            return f"{text} (default: %(default)s)"
        return text


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {prog}",
        description=doc.strip().split("\n")[0],
        formatter_class=HelpFormatter,
    )
    parser._bst_aliases = []
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's own log lines (hidden by default unless they are errors)",
    )
    return parser


def add_alias(parser, old: str, new: str, **kwargs) -> None:
    """``old``, a former spelling of the flag ``new``: still accepted, hidden from
    ``--help``; :func:`parse` moves its value to ``new`` (refusing both at once)."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=f"old_{dest}", default=None, help=argparse.SUPPRESS, **kwargs)
    aliases = getattr(parser, "_bst_aliases", None)
    if aliases is None:  # a mutually exclusive group registers on its parser
        aliases = parser._bst_parent._bst_aliases
    aliases.append((old, new, dest))


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _apply_aliases(parser: argparse.ArgumentParser, args, argv: Sequence[str]) -> None:
    for old, new, dest in parser._bst_aliases:
        value = getattr(args, f"old_{dest}")
        delattr(args, f"old_{dest}")
        if value is None:
            continue
        if _given(argv, new):
            raise UsageError(f"{old} is the former name of {new}: give one of them")
        setattr(args, dest, value)
        setattr(args, f"{dest}_from", old)


def _group(parser: argparse.ArgumentParser, **kwargs):
    group = parser.add_mutually_exclusive_group(**kwargs)
    group._bst_parent = parser
    return group


# --------------------------------------------------------------------------- parsers

FORMAT_HELP = (
    "input format (default: detected from the files in --data-dir): ml1m, ml-10m, ml-100k, "
    "ml-csv (ML-20M/25M/32M/latest; their names work too), sasrec, interactions"
)
DATASET_HELP = (
    "a GroupLens release to use, downloaded (checksum verified) into --data-dir when it is "
    "not there"
)


# The data flags bst.train and pipelines.prepare share (same help, same checks, same
# errors): each sets one data.* field, which --set may set instead (not both).
DATA_FLAGS = {
    "--data-dir": "data.data_dir",
    "--format": "data.format",
    "--dataset": "data.dataset",
    "--side-data-dir": "data.side_data_dir",
    "--catalog": "data.catalogs",
    "--enriched": "data.enriched",
    "--cold-fraction": "data.cold_fraction",
    "--num-shards": "data.num_shards",
    "--runner": "data.runner",
}


def add_data_flags(parser: argparse.ArgumentParser, enriched_where: str) -> None:
    """The data flags of :data:`DATA_FLAGS`; ``enriched_where`` says where ``--catalog``'s
    join (the enriched table and its report) is written."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="raw data folder (default: $BST_DATA_DIR or ~/.cache/bst, where ML-1M is "
        "downloaded when missing)",
    )
    parser.add_argument(
        "--format",
        choices=config_lib.FORMAT_NAMES,
        default=None,
        metavar="FORMAT",
        help=FORMAT_HELP,
    )
    parser.add_argument(
        "--dataset",
        choices=config_lib.DATASET_NAMES,
        default=None,
        metavar="NAME",
        help=f"{DATASET_HELP}: {', '.join(config_lib.DATASET_NAMES)}",
    )
    parser.add_argument(
        "--side-data-dir",
        default=None,
        help="format sasrec: a folder with ML-1M's movies.dat and users.dat (side features)",
    )
    parser.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="CSV",
        help="movie catalog with plot overviews (TMDB columns) to join to the movies by "
        "title, for the overview text feature (repeatable; the joined table and its "
        f"report go to {enriched_where}; default: no text)",
    )
    parser.add_argument(
        "--enriched",
        default=None,
        metavar="CSV",
        help="an enriched movie table from pipelines.enrich (overviews), instead of --catalog",
    )
    parser.add_argument(
        "--cold-fraction",
        type=float,
        default=None,
        help="cold-start protocol: hold this fraction (0..0.5) of the rated movies with an "
        "overview out of training (needs --catalog or --enriched; default 0)",
    )
    low, high = (int(x) for x in config_lib.RANGES["data.num_shards"][:2])
    parser.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help=f"TFRecord shards per split, {low}..{high} (default 4)",
    )
    parser.add_argument(
        "--runner",
        choices=config_lib.CHOICES["data.runner"],
        default=None,
        help="how the prepare step runs: in-memory (pandas, the default) or beam (an Apache "
        "Beam pipeline; pip install -e '.[beam]'; formats ml1m and ml-csv)",
    )


def data_updates(args: argparse.Namespace, updates: dict) -> dict:
    """``updates`` (the ``--set`` fields) with the data flags given merged in; one
    :class:`UsageError` naming the flag for a bad value, a missing file, or a flag and
    ``--set`` setting the same field."""
    for flag, key in DATA_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None or value == []:
            continue
        if key in updates:
            raise UsageError(f"{flag} and --set {key} are both given: give one of them")
        if key in config_lib.RANGES:
            low, high, low_open, high_open = config_lib.RANGES[key]
            inside = (value > low if low_open else value >= low) and (
                value < high if high_open else value <= high
            )
            if not inside:  # NaN is outside too
                interval = config_lib.interval(low, high, low_open, high_open)
                raise UsageError(f"{flag} must be {interval}, got {value}")
        updates[key] = tuple(value) if isinstance(value, list) else value
    for flag in ("--catalog", "--enriched"):  # after the values: no file is read for those
        value = getattr(args, flag[2:]) or []
        for path in value if isinstance(value, list) else [value]:
            if not Path(path).is_file():
                raise UsageError(f"{flag} {path}: file not found")
    return updates


def checked_data(cfg: config_lib.Config) -> config_lib.Config:
    """``cfg`` validated, with the rule a command's data flags add: ``--catalog`` and
    ``--enriched`` not both (a run's saved config then holds both: the catalogs and the
    table joined from them)."""
    if cfg.data.catalogs and cfg.data.enriched:
        raise UsageError(
            "--catalog (data.catalogs) and --enriched (data.enriched) are both given: the "
            "catalogs are joined into a new enriched table; give one of them"
        )
    if cfg.data.runner == "beam":
        d, default = cfg.data, config_lib.DataConfig()
        given = [
            name
            for name, value in (
                ("--catalog", d.catalogs),
                ("--enriched", d.enriched),
                ("--cold-fraction", d.cold_fraction),
                ("--side-data-dir", d.side_data_dir),
            )
            if value
        ]
        given += [
            f"data.{key}"
            for key in (
                "user_column", "item_column", "time_column", "rating_column",
                "title_column", "genres_column", "year_column", "time_unit",
            )
            if getattr(d, key) != getattr(default, key)
        ]  # fmt: skip
        if given:
            raise UsageError(
                f"--runner beam prepares ml1m and ml-csv ratings without overviews: "
                f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --runner in-memory"
            )
    return config_lib.validate(cfg)


def train_parser() -> argparse.ArgumentParser:
    parser = _parser("bst.train", "Train BST, evaluate it on the test split, export it.")
    parser.add_argument("--preset", default="ml1m", choices=sorted(config_lib.PRESETS))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set model.num_blocks=2 (repeatable)",
    )
    add_data_flags(parser, "<run-dir>/enriched")
    parser.add_argument("--run-dir", default=None, help="run folder (default runs/<preset>)")
    parser.add_argument("--tpu", default=None, help="TPU name or address: use TPUStrategy")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard the run folder's backup of a stopped run and train from the start "
        "(default: a stopped run resumes when the config is the same, and is refused when "
        "it is not)",
    )
    export = _group(parser)
    export.add_argument(
        "--model-dir",
        default=None,
        help="SavedModel base folder: the trained model is exported into it as its next "
        f"version (default {DEFAULT_EXPORT}, or <run-dir>/{DEFAULT_EXPORT} for synthetic "
        "data such as the tiny preset, so a demo never replaces the real model)",
    )
    export.add_argument("--no-export", action="store_true", help="do not export the model")
    add_alias(export, "--export-dir", "--model-dir")  # '' = --no-export
    return parser


def evaluate_parser() -> argparse.ArgumentParser:
    parser = _parser("bst.evaluate", "Evaluate a trained run against baselines.")
    parser.add_argument("--run-dir", required=True, help="a finished `python -m bst.train` run")
    parser.add_argument("--split", default="test", choices=EVAL_SPLITS)
    parser.add_argument(
        "--users-per-batch",
        type=int,
        default=None,
        help="users ranked at a time (more: faster, more memory; default: 1024, or fewer so "
        "that a batch holds at most 2^24 scores: 284 at 59 k movies)",
    )
    add_alias(parser, "--batch-size", "--users-per-batch", type=int)
    return parser


def recommend_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "bst.recommend", "Show a user's history next to the model's and the popular picks."
    )
    parser.add_argument("--run-dir", required=True, help="a `python -m bst.train` run folder")
    who = _group(parser, required=True)
    who.add_argument("--user", help="a user id of the run's data (their whole history is used)")
    who.add_argument("--movies", help="a new user: movie ids in time order, e.g. 1193,661,914")
    where = _group(parser)
    where.add_argument(
        "--model-dir",
        help="SavedModel base folder to answer from (its newest version; default: the "
        "run's own weights, in process)",
    )
    add_alias(where, "--model", "--model-dir")
    where.add_argument("--server", help="TF Serving REST base URL, e.g. http://127.0.0.1:8501")
    parser.add_argument(
        "--k",
        type=int,
        default=DEFAULT_K,
        help="recommendations to show (at most the "
        "SavedModel's --top-k with --model-dir or --server)",
    )
    parser.add_argument(
        "--history", type=int, default=DEFAULT_HISTORY, help="recent history events to show"
    )
    return parser


def export_parser() -> argparse.ArgumentParser:
    parser = _parser("bst.export", "Export a trained run as a versioned SavedModel.")
    parser.add_argument("--run-dir", required=True, help="a finished `python -m bst.train` run")
    parser.add_argument(
        "--model-dir",
        default=DEFAULT_EXPORT,
        help="SavedModel base folder (the model is written as its next version)",
    )
    add_alias(parser, "--out", "--model-dir")
    parser.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_K,
        help="recommendations the SavedModel returns per request (the most a client gets)",
    )
    add_alias(parser, "--k", "--top-k", type=int)
    parser.add_argument(
        "--force",
        action="store_true",
        help="write a new version even when the newest one already holds these weights",
    )
    parser.add_argument(
        "--add-movies",
        default=None,
        metavar="CSV",
        help="add the movies of this CSV (movie_id, title, overview[, year, genres]) that the "
        "run's catalog lacks, embedded from their overview, genres and year",
    )
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = _parser("bst.serve", "A development server with TensorFlow Serving's REST API.")
    parser.add_argument(
        "--model-dir",
        default=DEFAULT_EXPORT,
        help="SavedModel base folder (its newest version is served, new ones as they appear)",
    )
    parser.add_argument("--port", type=int, default=8501, help="REST port (TF Serving's is 8501)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the server"
    )
    parser.add_argument("--model-name", default="bst", help="model name in the URLs")
    parser.add_argument("--max-batch", type=int, default=256, help="most rows per request")
    parser.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="largest request body (413 above)"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=2.0, help="seconds between new-version scans"
    )
    parser.add_argument(
        "--no-batching",
        dest="batching",
        action="store_false",
        help="run each request alone (default: merge concurrent requests into one call)",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="threads one TF op may use (TF Serving's --tensorflow_intra_op_parallelism; "
        "0 = TF's choice, one per core)",
    )
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=0,
        help="TF ops run at once (TF Serving's --tensorflow_inter_op_parallelism; 0 = TF's choice)",
    )
    return parser


# --------------------------------------------------------------------------- checks


def _check_train(args: argparse.Namespace) -> None:
    """Build and validate the config now (``args.cfg``) and resolve ``args.export_dir``
    (where the model is exported; '' for none)."""
    cfg = config_lib.preset(args.preset)
    updates = config_lib.parse_overrides(args.overrides)
    cfg = config_lib.replace(cfg, updates)
    for flag in ("--data-dir", "--format", "--dataset", "--side-data-dir"):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value and cfg.data.synthetic:
            raise UsageError(
                f"{flag} {value}: the {args.preset} preset trains on synthetic data "
                "(data.synthetic=true), so it would not be used; add --set "
                "data.synthetic=false to use it"
            )
    in_batch = cfg.model.loss in ("sampled", "auto") and cfg.model.negatives == "in-batch"
    if in_batch and cfg.model.mask_seen:
        if "model.mask_seen" in updates:
            raise UsageError(
                "model.mask_seen=true does not apply to model.negatives=in-batch: those "
                "negatives are the batch's other targets, not the catalog"
            )
        updates["model.mask_seen"] = False  # the default does not apply; the config says so
    updates = data_updates(args, updates)
    args.cfg = checked_data(config_lib.replace(cfg, updates))
    args.run_dir = args.run_dir or f"runs/{args.preset}"
    if getattr(args, "model_dir_from", None) == "--export-dir" and args.model_dir == "":
        args.no_export = True  # the former spelling of --no-export
    if args.no_export:
        args.export_dir = ""
    elif args.model_dir:
        args.export_dir = args.model_dir
    else:
        synthetic = args.cfg.data.synthetic
        args.export_dir = f"{args.run_dir}/{DEFAULT_EXPORT}" if synthetic else DEFAULT_EXPORT


def _check_evaluate(args: argparse.Namespace) -> None:
    if args.users_per_batch is not None and args.users_per_batch < 1:
        flag = getattr(args, "users_per_batch_from", "--users-per-batch")
        raise UsageError(f"{flag} must be >= 1, got {args.users_per_batch}")


def _check_recommend(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise UsageError(f"--k must be >= 1, got {args.k}")
    if args.history < 0:
        raise UsageError(f"--history must be >= 0, got {args.history}")


def _check_export(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        flag = getattr(args, "top_k_from", "--top-k")
        raise UsageError(f"{flag} must be >= 1, got {args.top_k}")
    if args.add_movies is not None and not Path(args.add_movies).is_file():
        raise UsageError(f"--add-movies {args.add_movies}: file not found")


def _check_serve(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535 (0 = any free port), got {args.port}")
    if args.max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.max_body_bytes < 1:
        raise UsageError(f"--max-body-bytes must be >= 1, got {args.max_body_bytes}")
    if not 0 <= args.poll_seconds <= 86400:  # NaN fails too; 0 = never poll
        raise UsageError(f"--poll-seconds must be in 0..86400 (0 = never), got {args.poll_seconds}")
    for name in ("intra_op_threads", "inter_op_threads"):
        if getattr(args, name) < 0:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"{flag} must be >= 0 (0 = TensorFlow's choice), got {getattr(args, name)}"
            )


COMMANDS = {
    "train": (train_parser, _check_train),
    "evaluate": (evaluate_parser, _check_evaluate),
    "recommend": (recommend_parser, _check_recommend),
    "export": (export_parser, _check_export),
    "serve": (serve_parser, _check_serve),
}


def parse(command: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed and checked for ``python -m bst.<command>``; raises
    :class:`UsageError` for a bad value (argparse itself exits 2 on a bad flag)."""
    build, check = COMMANDS[command]
    parser = build()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _apply_aliases(parser, args, argv)
    check(args)
    return args


def early(command: str) -> None:
    """When a command runs as a script: parse and check ``sys.argv`` before the caller
    imports TensorFlow, so ``--help`` and mistakes answer at once; quiet TensorFlow's
    start-up lines unless ``--verbose``."""
    with cli_errors():
        args = parse(command, sys.argv[1:])
    quiet_tensorflow(args.verbose)
    if not args.verbose:
        # Running an op fixes TensorFlow's runtime, which multi-worker and TPU strategies
        # must configure first: there, only the import is quieted.
        distributed = bool(os.environ.get("TF_CONFIG") or getattr(args, "tpu", None))
        start_tensorflow_quietly(run_ops=not distributed)


# --------------------------------------------------------------------------- logging


def quiet_tensorflow(verbose: bool = False) -> None:
    """Before TensorFlow starts: keep its C++ INFO and WARNING lines (oneDNN and CUDA
    banners) off the terminal unless ``verbose`` (a higher level already set is kept)."""
    if not verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = max(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"), "2")


# What TensorFlow's C++ side prints while it starts, whatever TF_CPP_MIN_LOG_LEVEL says
# (its absl logging writes these before it reads the setting): banners, not problems.
STARTUP_NOISE = re.compile(
    r"oneDNN custom operations are on|Could not find cuda drivers|failed call to cuInit"
    r"|All log messages before absl::InitializeLog|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|This TensorFlow binary is optimized|To enable the following instructions"
    r"|computation placer already registered|TF-TRT Warning|oneDNN supports DT_INT32 only"
)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = STARTUP_NOISE) -> Iterator[None]:
    """File descriptor 2 (C++ and Python alike) goes to a temporary file while inside;
    on the way out every line that is not ``noise`` is written to the real stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not noise.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_tensorflow_quietly(run_ops: bool = True) -> None:
    """Import TensorFlow and look for devices with its start-up banners filtered out (the
    oneDNN and CUDA lines, ``failed call to cuInit`` on a machine without a GPU); any other
    line it prints still shows."""
    with filtered_stderr():
        import tensorflow as tf

        if not run_ops:
            return
        tf.config.list_physical_devices()
        # The first int32 transpose prints oneDNN's "DT_INT32 only on platforms with
        # AVX-512 ... falling back to Eigen" (a notice, once per process): run it here.
        tf.transpose(tf.zeros((1, 2, 2), tf.int32), (0, 2, 1))


def setup_logging(verbose: bool = False) -> None:
    """bst's INFO lines on stderr; TensorFlow's and absl's only as errors unless ``verbose``
    (absl's per-epoch "Sharding callback duration", the export's input-name warnings, the
    duplicated "Assets written" lines)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for name in ("absl", "tensorflow", "h5py"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO if verbose else logging.ERROR)
        logger.propagate = True
        for handler in list(logger.handlers):  # TF's own handler doubles every line
            logger.removeHandler(handler)
