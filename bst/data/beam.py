"""The prepare step as an Apache Beam pipeline: ``python -m pipelines.prepare --runner beam``.

The same step as :func:`bst.data.prepare.prepare` (validation, the split by time per
user, vocabularies from the training split only, the side tables, TFRecord shards,
``sequences.tsv`` and the manifest), for a ratings file larger than one machine's
memory. It reuses the library's rules rather than copying them:

* the ratings file is read in byte ranges by the workers; each piece of whole lines is
  parsed and checked by the in-memory reader of its format
  (:func:`bst.data.movielens.read_ratings`, :func:`bst.data.mlcsv.read_ratings`), so a
  malformed line gives the same error, with its line number, as the in-memory path;
* the side tables (``movies.dat``/``users.dat``, ``movies.csv``) are small and read on
  the driver by the same readers; ratings of unknown users and movies are counted and
  dropped, duplicates counted, as :func:`bst.data.movielens.reconcile` does;
* each user's events are ordered by time, ties in file order (the byte offset of the
  line), and split by :func:`bst.data.split.split_sizes`; ratings become levels on
  :func:`bst.data.ratings.rating_scale`; records are :func:`bst.data.records.serialize`;
  the vocabularies are :func:`bst.vocab.vocabularies_from_counts` of counts the pipeline
  computes.

What differs from the in-memory path: the order of the records within and across the
shards of a split and the order of the rows of ``sequences.tsv`` (Beam writes them in
the order its workers finish), so the files are not byte-identical; their contents are
(``tests/test_beam.py``). The vocabularies, ``movies.tsv``, ``users.tsv`` and the
manifest's counts are identical.

Formats: ``ml1m`` and ``ml-csv`` (the 20M/25M/32M releases); the others are read in
memory. Paths go through Beam's filesystems: a ``gs://`` or ``s3://`` ``--data-dir``
or ``--out`` needs Beam's extra for it (``apache-beam[gcp]``, ``[aws]``) and an
explicit ``--format``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bst import features as F
from bst.data import beam_steps as steps
from bst.data import formats, mlcsv
from bst.data import movielens as ml
from bst.data.prepared import (
    MANIFEST,
    MANIFEST_VERSION,
    SEQUENCES_FILE,
    TFRECORDS_DIR,
    VOCAB_DIR,
    sequence_header,
)
from bst.data.split import SPLITS, TEST, TRAIN, VALIDATION
from bst.errors import DataError, UsageError, writable_dir

log = logging.getLogger("bst.prepare")

BEAM_FORMATS = ("ml1m", "ml-csv")
EXTRA = "pip install -e '.[beam]'"
RANGE_BYTES = 16 << 20  # the ratings file is read in ranges of this many bytes (each
# parsed in pieces of bst.data.beam_steps.PIECE_BYTES)
PROBE_BYTES = 64 << 10  # the driver checks the file's start before starting the pipeline


def require_beam():
    """``apache_beam``, or one clear error naming the extra."""
    quiet = _ImportNoise()  # Beam's import warns about cloud clients bst does not use
    logging.getLogger().addFilter(quiet)
    try:
        import apache_beam
    except ImportError:
        raise UsageError(
            f"--runner beam needs Apache Beam, an optional extra: {EXTRA} "
            "(or leave --runner at in-memory, the default)"
        ) from None
    finally:
        logging.getLogger().removeFilter(quiet)
    return apache_beam


class _ImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "apache_beam" not in record.pathname


def is_remote(path: str | Path) -> bool:
    return "://" in str(path)


def _side(fmt: str, folder: str, local: Path) -> tuple:
    """The side tables, read on the driver by the in-memory readers: (users or None,
    movies, report, profile names, rule, input files)."""
    from apache_beam.io.filesystems import FileSystems

    from bst.data import records

    names = ("users.dat", "movies.dat") if fmt == "ml1m" else (mlcsv.MOVIES,)
    inputs = {}
    for name in names:
        src = FileSystems.join(folder, name)
        if not FileSystems.exists(src):
            raise DataError(f"file not found: {src}", src)
        dst = local / name
        with FileSystems.open(src, mime_type="application/octet-stream") as f:
            dst.write_bytes(f.read())
        inputs[name] = dst
    if fmt == "ml1m":
        users, movies, report = ml.read_side_tables(local)
        return users, movies, report, records.PROFILE_INPUT_COLUMNS, records.MOVIELENS_RULE, inputs
    movies = mlcsv.read_movies(local / mlcsv.MOVIES)
    for name in mlcsv.UNUSED:  # what the in-memory reader notes as not used
        if FileSystems.exists(FileSystems.join(folder, name)):
            (local / name).touch()
    return None, movies, None, records.PROFILE_INPUT_COLUMNS, records.MOVIELENS_RULE, inputs


def _ranges(size: int, start: int) -> list[tuple[int, int]]:
    return [(a, min(a + RANGE_BYTES, size)) for a in range(start, size, RANGE_BYTES)] or [
        (start, start)
    ]


def _line_number(path: str, offset: int) -> int:
    """The 1-based line number of the line starting at byte ``offset``."""
    from apache_beam.io.filesystems import FileSystems

    lines, at = 1, 0
    with FileSystems.open(path, mime_type="application/octet-stream") as f:
        while at < offset:
            block = f.read(min(1 << 20, offset - at))
            if not block:
                break
            lines += block.count(b"\n")
            at += len(block)
    return lines


def _resolve(data_dir: str, fmt: str, dataset: str) -> tuple[str, str]:
    """(format, folder): detected and checked as in memory for a local folder; a remote
    one needs its format named."""
    fmt = formats.canonical(fmt)
    if is_remote(data_dir):
        if dataset:
            raise UsageError("--dataset downloads into a local folder: give a local --data-dir")
        if fmt not in BEAM_FORMATS:
            raise UsageError(
                f"a remote --data-dir needs --format ({', '.join(BEAM_FORMATS)}): "
                "there is no format detection over Beam's filesystems"
            )
        return fmt, str(data_dir).rstrip("/")
    found, folder = formats.resolve(data_dir, fmt, dataset)
    if found.name not in BEAM_FORMATS:
        raise UsageError(
            f"--runner beam reads formats {', '.join(BEAM_FORMATS)}; {folder} holds format "
            f"{found.name}: prepare it with --runner in-memory"
        )
    return found.name, str(folder)


def prepare(
    data_dir: str | Path,
    out: str | Path,
    fmt: str = "auto",
    num_shards: int = 4,
    dataset: str = "",
    beam_args: Sequence[str] = (),
) -> dict:
    """The prepare step on Beam; returns the manifest. ``beam_args``: Beam's pipeline
    options (``--runner=...``; default the DirectRunner)."""
    beam = require_beam()
    from apache_beam.io.filesystems import FileSystems

    from bst.data import prepare as in_memory
    from bst.data import records
    from bst.tempdirs import clean_stale, make_temp_dir, remove_temp_dir
    from bst.vocab import vocabularies_from_counts, write_vocabularies

    if num_shards < 1:
        raise UsageError(f"num_shards must be >= 1, got {num_shards}")
    options = pipeline_options(beam_args)
    started = time.perf_counter()
    if not is_remote(out):
        writable_dir(Path(out).absolute().parent, "output folder's parent")  # before the read
    fmt, folder = _resolve(str(data_dir), fmt, dataset)
    source = steps.Source(fmt, FileSystems.join(folder, steps.Source(fmt, "").name))
    if not FileSystems.exists(source.path):
        raise DataError(f"file not found: {source.path}", source.path)
    size = FileSystems.match([source.path])[0].metadata_list[0].size_in_bytes
    with FileSystems.open(source.path, mime_type="application/octet-stream") as f:
        head = f.read(PROBE_BYTES)
    if fmt == "ml-csv":
        source.header = head.split(b"\n", 1)[0] + b"\n"
    probe = head[: head.rfind(b"\n") + 1] if len(head) < size else head
    if not probe[len(source.header) :].strip():
        raise DataError("has no ratings", source.path)

    local_out = not is_remote(out)
    if local_out:
        out = Path(out).absolute()
        if out.exists() and not out.is_dir():
            raise UsageError(f"output folder {out} is a file, not a folder")
        prefix = f".{out.name}.tmp-"
        clean_stale(out.parent, prefix)
        tmp = make_temp_dir(out.parent, prefix)
        stage = str(tmp)
    else:
        stage = f"{str(out).rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    side_dir = Path(tempfile.mkdtemp(prefix="bst-beam-side-"))
    try:
        users, movies, report, profile, rule, inputs = _side(fmt, folder, side_dir)
        try:  # a bad header or first lines fail here, before the pipeline starts
            source.parse(probe[len(source.header) :])
        except DataError as err:
            line = err.line + (1 if source.header else 0) if err.line else None
            raise DataError(err.reason, source.path, line) from None
        movie_ids = np.unique(movies["movie_id"].to_numpy())
        user_ids = frozenset(users["user_id"].tolist()) if users is not None else None
        if users is not None:
            profiles = in_memory._profiles(ml.MovieLens(pd.DataFrame(), users, movies, report))
        else:  # an id-only users table (as the in-memory reader makes): every profile unknown
            empty = records.profile_token_rows({c: [""] for c in profile}, profile, rule)[0]
            profiles = {"": dict(zip(profile, empty, strict=True))}
        small = FileSystems.join(stage, "_beam")
        log.info(
            "preparing %s (%.0f MiB) on Beam (%s) into %s",
            source.path,
            size / 2**20,
            options.get_all_options()["runner"] or "DirectRunner",
            out,
        )
        with beam.Pipeline(options=options) as p:
            parsed = (
                p
                | "ranges" >> beam.Create(_ranges(size, len(source.header)))
                | "reshuffle ranges" >> beam.Reshuffle()
                | "read"
                >> beam.FlatMap(steps.tagged(steps.read_range), source).with_outputs(
                    "events", "error"
                )
            )
            users_out = (
                parsed.events
                | "by user" >> beam.GroupByKey()
                | "assemble"
                >> beam.FlatMap(steps.tagged(steps.assemble), movie_ids, user_ids).with_outputs(
                    "stats", "rating_values", "movies", "train_users", "sequence", "user",
                )
            )  # fmt: skip
            scale = (
                users_out.rating_values
                | "distinct ratings" >> beam.FlatMap(lambda v: v.tolist())
                | "rating set" >> beam.Distinct()
                | "scale" >> beam.combiners.ToList()
                | "rating scale" >> beam.Map(steps.scale_or_error)
            )
            written = users_out.sequence | "records" >> beam.FlatMap(
                steps.tagged(steps.write_user),
                beam.pvalue.AsSingleton(scale | "levels" >> beam.Map(lambda s: s[0] or [])),
                profiles,
            ).with_outputs(*SPLITS, SEQUENCES_FILE)
            for split in SPLITS:
                _ = getattr(written, split) | f"write {split}" >> beam.io.WriteToTFRecord(
                    FileSystems.join(stage, TFRECORDS_DIR, split),
                    file_name_suffix=".tfrecord",
                    num_shards=num_shards,
                    shard_name_template="-SSSSS-of-NNNNN",
                )
            _ = getattr(written, SEQUENCES_FILE) | "write sequences" >> beam.io.WriteToText(
                FileSystems.join(stage, SEQUENCES_FILE),
                num_shards=1,
                shard_name_template="",
                header=sequence_header(),
                append_trailing_newlines=False,
            )
            collected = {
                "stats": users_out.stats
                | "stats" >> beam.CombineGlobally(steps.Stats.merge).without_defaults(),
                "errors": parsed.error | "errors" >> beam.combiners.ToList(),
                "scale": scale,
                "movies": users_out.movies
                | "tally movies" >> beam.CombineGlobally(steps.movie_tally()).without_defaults(),
                "train_users": users_out.train_users | "train users" >> beam.combiners.ToList(),
            }
            if users is None:  # ml-csv has no users table: every user of the ratings file
                collected["users"] = users_out.user | "users" >> beam.combiners.ToList()
            for name, pcoll in collected.items():
                _ = (
                    pcoll
                    | f"{name} json" >> beam.Map(json.dumps)
                    | f"write {name}"
                    >> beam.io.WriteToText(
                        FileSystems.join(small, name), num_shards=1, shard_name_template=""
                    )
                )
        got = {name: _read_json(FileSystems.join(small, name)) for name in collected}
        FileSystems.delete([small])
        if got["errors"]:
            offset, reason = min(got["errors"])
            raise DataError(reason, source.path, _line_number(source.path, offset))
        scale_or_error = got["scale"] or [[], None]
        if scale_or_error[1]:
            raise DataError(scale_or_error[1], source.path)
        stats = got["stats"] or steps.Stats.merge([])
        if not stats["ratings"]:
            raise DataError("no ratings left after the checks", source.path)
        if users is None:  # ml-csv: every user of the ratings file, no profile
            users = ml.id_only_users(np.unique(np.asarray(got["users"])))
            report = mlcsv.begin_report(side_dir, movies, len(users))
        for key in ("ratings_read", "duplicate_pairs", "unknown_user_ratings", "ratings"):
            setattr(report, key, stats[key])
        report.unknown_movie_ratings = stats["unknown_movie_ratings"]
        ml.note_reconciled(
            report,
            source.name,
            ("users.dat", "movies.dat") if fmt == "ml1m" else ("", mlcsv.MOVIES),
        )
        if stats["users_train_only"]:
            log.warning(
                "%d users have fewer than 3 interactions: kept in train only, not evaluated",
                stats["users_train_only"],
            )
        tally = got["movies"] or {"train_counts": [], "movies": 0, "eval_movies": []}
        pairs = tally["train_counts"]
        counts = pd.Series(
            [c for _, c in pairs], index=pd.Index([m for m, _ in pairs]), dtype=np.int64
        )
        vocabs = vocabularies_from_counts(
            counts, np.asarray(got["train_users"]), movies, users, profile, rule
        )
        local_stage = Path(stage) if local_out else side_dir / "out"  # removed below
        write_vocabularies(local_stage / VOCAB_DIR, vocabs)
        in_memory.write_side_tables(local_stage, movies, users)
        for split in SPLITS:  # a split without records still has its (empty) shards
            for k in range(num_shards):
                shard = FileSystems.join(
                    stage, TFRECORDS_DIR, records.shard_name(split, k, num_shards)
                )
                if not FileSystems.exists(shard):
                    FileSystems.create(shard).close()
        oov = len(set(map(str, tally["eval_movies"])) - set(vocabs[F.MOVIE_ID]))
        out_stats = {
            "splits": {
                TRAIN: {"events": stats["train"], "examples": stats["users"]},
                VALIDATION: {"events": stats["validation"], "examples": stats["validation"]},
                TEST: {"events": stats["test"], "examples": stats["test"]},
                "users": stats["users"],
                "users_train_only": stats["users_train_only"],
                "eval_movies_not_in_train_vocab": oov,
            },
            "vocab_sizes": {name: len(tokens) for name, tokens in vocabs.items()},
            "max_sequence_length": stats["max_sequence_length"],
            "rating_scale": [float(v) for v in scale_or_error[0]] if stats["known_ratings"] else [],
        }
        in_memory.note_genres_cut(movies, out_stats)
        manifest = {
            "version": MANIFEST_VERSION,
            "counts": {
                "ratings": stats["ratings"],
                "users": stats["users"],
                "movies": int(tally["movies"]),
                "movies_in_table": int(len(movies)),
                "users_in_table": int(len(users)),
            },
            "read_report": report.to_dict(),
            "provides": in_memory._log_provided(
                fmt,
                in_memory.features_provided(
                    bool(stats["known_ratings"]),
                    bool(stats["known_timestamps"]),
                    movies,
                    users,
                    profile,
                ),
            ),
            "profile": {"features": list(profile), "rule": rule},
            **out_stats,
            "config": {
                "format": fmt,
                "dataset": dataset,
                "num_shards": num_shards,
                "enriched": False,
                "cold_fraction": 0.0,
                "runner": "beam",
            },
            "inputs": {name: in_memory.sha256(path) for name, path in sorted(inputs.items())},
        }
        manifest["inputs"][source.name] = _sha256(source.path)
        manifest["inputs"] = dict(sorted(manifest["inputs"].items()))
        if local_out:
            in_memory.write_manifest(tmp, manifest)
            in_memory._replace_dir(tmp, out)
        else:
            _publish_remote(local_stage, stage, str(out), manifest)
    finally:
        import shutil

        shutil.rmtree(side_dir, ignore_errors=True)
        if local_out:
            remove_temp_dir(tmp)
        elif FileSystems.exists(stage):  # a failed remote run leaves no staging behind
            FileSystems.delete([stage])
    log.info(
        "prepared %d ratings of %d users into %s on Beam in %.1f s",
        manifest["counts"]["ratings"],
        manifest["counts"]["users"],
        out,
        time.perf_counter() - started,
    )
    return manifest


def _read_json(path: str):
    """One JSON value written by the pipeline (None when the collection was empty)."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, mime_type="text/plain") as f:
        text = f.read().decode("utf-8").strip()
    return json.loads(text) if text else None


def _sha256(path: str) -> str:
    import hashlib

    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    with FileSystems.open(path, mime_type="application/octet-stream") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _publish_remote(local: Path, stage: str, out: str, manifest: dict) -> None:
    """A remote output: the driver's files copied up, the staged files moved into
    ``out`` and the manifest written last."""
    from apache_beam.io.filesystems import FileSystems

    for path in sorted(local.rglob("*")):
        if path.is_file():
            with FileSystems.create(
                FileSystems.join(stage, path.relative_to(local).as_posix())
            ) as f:
                f.write(path.read_bytes())
    staged = [m.path for m in FileSystems.match([FileSystems.join(stage, "**")])[0].metadata_list]
    manifest["outputs"] = {p[len(stage) + 1 :]: _sha256(p) for p in sorted(staged)}
    if FileSystems.exists(out):
        FileSystems.delete([out])
    targets = [FileSystems.join(out, p[len(stage) + 1 :]) for p in staged]
    for folder in sorted({FileSystems.split(t)[0] for t in targets}):
        try:  # folders where the filesystem has them (HDFS); a no-op on object stores
            FileSystems.mkdirs(folder)
        except OSError:  # BeamIOError: it exists already
            pass
    FileSystems.rename(staged, targets)
    try:
        FileSystems.delete([stage])  # empty folders left (an object store has none)
    except OSError:
        pass
    with FileSystems.create(FileSystems.join(out, MANIFEST)) as f:
        f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def pipeline_options(args: Sequence[str]):
    """Beam's options from ``args``, refusing any it does not know (Beam would only log
    and drop them)."""
    require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(args)
    options = PipelineOptions(args)
    handler = _Captured()
    logger = logging.getLogger("apache_beam.options.pipeline_options")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False  # said once, below
    try:
        options.get_all_options()
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if handler.unknown:
        raise UsageError(f"Beam pipeline options not known to Beam: {' '.join(handler.unknown)}")
    return options


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.unknown: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "unparseable args" in str(record.msg).lower():
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            for value in args:
                self.unknown.extend(map(str, value) if isinstance(value, list) else [str(value)])
