"""The prepare step: raw MovieLens files → the prepared folder (:mod:`bst.data.prepared`).

    python -m pipelines.prepare --data-dir ../shared/data/ml-1m --out data/prepared/ml1m

Writes (built in a temporary folder beside ``out`` and moved into place, so a
failed run leaves the previous outputs untouched): the vocabularies from the
training split only, ``movies.tsv``, ``users.tsv``, ``sequences.tsv``, the TFRecord
shards (schema: :mod:`bst.data.records`) and ``manifest.json`` with counts, split
sizes, config and every input's and output's sha256. The same inputs give
byte-identical outputs. :func:`ensure_prepared` is what ``bst.train`` calls: it
prepares (or generates synthetic data) only when the folder is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bst import config as config_lib
from bst import features as F
from bst.config import Config
from bst.data import formats, records
from bst.data.interactions import Columns
from bst.data.movielens import MovieLens
from bst.data.prepared import (
    MANIFEST,
    MANIFEST_VERSION,
    OVERVIEW_FILE,
    SEQUENCES_FILE,
    TEXT_VOCAB_FILE,
    TFRECORDS_DIR,
    USERS_FILE,
    VOCAB_DIR,
    is_prepared,
    sequence_header,
    sequence_row,
)
from bst.data.ratings import rating_levels
from bst.data.split import SPLITS, TEST, TRAIN, VALIDATION, split_by_time
from bst.data.synthetic import generate
from bst.errors import DataError, UsageError, writable_dir
from bst.metadata.report import enrich
from bst.tempdirs import clean_stale, make_temp_dir, remove_temp_dir
from bst.text import build_overview_tokens
from bst.vocab import build_vocabularies, write_vocabularies

log = logging.getLogger("bst.prepare")

__all__ = ["ensure_prepared", "is_prepared", "prepare", "sha256"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_source(
    fmt: str,
    data_dir: str | Path,
    side_data_dir: str | Path | None = None,
    dataset: str = "",
    columns: Columns | None = None,
) -> tuple[MovieLens, dict[str, Path], str]:
    """Read the raw files (:func:`bst.data.formats.resolve` finds them, downloading a
    release when asked); returns the tables, the input files (for checksums) and the
    format's name."""
    found, folder = formats.resolve(data_dir, fmt, dataset)
    if side_data_dir and found.name != "sasrec":
        raise UsageError(f"data.side_data_dir is only read with format sasrec, not {found.name}")
    columns = columns or Columns()
    if found.name != "interactions" and columns != Columns():
        changed = [
            f.name
            for f in dataclasses.fields(Columns)
            if getattr(columns, f.name) != getattr(Columns(), f.name)
        ]
        keys = ", ".join(
            f"data.{n}_column" if n != "time_unit" else "data.time_unit" for n in changed
        )
        raise UsageError(
            f"{keys} {'is' if len(changed) == 1 else 'are'} read only from a generic "
            f"interactions table, but {folder} holds format {found.name}: drop "
            f"{'it' if len(changed) == 1 else 'them'}"
        )
    options = formats.Options(str(side_data_dir or ""), columns)
    ml, inputs = found.load(folder, options)
    return ml, inputs, found.name


def _profiles(ml: MovieLens) -> dict[str, dict[str, str]]:
    """user_id → profile tokens by feature (:func:`records.tokens_of`; MovieLens: gender,
    age, occupation, zip prefix)."""
    users, names = ml.users, ml.profile
    ids = users["user_id"].astype(str).tolist()
    if not names:  # no users table
        return {uid: {} for uid in ids}
    rows = records.profile_token_rows({c: users[c].tolist() for c in names}, names, ml.profile_rule)
    return {uid: dict(zip(names, row, strict=True)) for uid, row in zip(ids, rows, strict=True)}


def _log_provided(fmt: str, provides: dict) -> dict:
    have = [k for k in ("ratings", "timestamps", "titles", "genres", "years") if provides[k]]
    lacks = [k for k in ("ratings", "timestamps", "titles", "genres", "years") if not provides[k]]
    log.info(
        "format %s provides %s; profile: %s%s",
        fmt,
        ", ".join(have) or "ids only",
        ", ".join(provides["profile"]) or "none",
        f"; lacks {', '.join(lacks)}" if lacks else "",
    )
    return provides


def provided_features(ml: MovieLens) -> dict:
    """What the data has, feature by feature (the manifest's ``provides``)."""
    ratings = ml.ratings
    return features_provided(
        bool(ratings["rating"].fillna(0).ne(0).any()),
        bool((ratings["timestamp"] >= 0).any()),
        ml.movies,
        ml.users,
        ml.profile,
        ml.provides,
    )


def features_provided(
    has_ratings: bool,
    has_timestamps: bool,
    movies: pd.DataFrame,
    users: pd.DataFrame,
    profile: tuple[str, ...],
    extra: dict | None = None,
) -> dict:
    """:func:`provided_features` from whether any rating and any time is known (what the
    prepare step on Beam counts) and the side tables."""
    return {
        "ratings": has_ratings,
        "timestamps": has_timestamps,
        "titles": bool((movies["title"].astype(str) != movies["movie_id"].astype(str)).any()),
        "genres": bool(any(len(g) for g in movies["genres"])),
        "years": bool(movies["year"].notna().any()),
        "profile": [c for c in profile if users[c].astype(str).str.strip().ne("").any()],
        **(extra or {}),
    }


COLD_SEED = 0  # the held-out movies depend on the data and the fraction only


def write_outputs(
    ml: MovieLens,
    out: Path,
    num_shards: int,
    enriched: str | Path | None = None,
    cold_fraction: float = 0.0,
) -> dict:
    """Split, build vocabularies and write every output file into ``out``; returns stats.

    ``cold_fraction`` > 0 (needs ``enriched``): the cold-start protocol
    (:func:`hold_out_cold_movies`).
    """
    levels, scale = rating_levels(ml.ratings["rating"])
    events, split_report = split_by_time(ml.ratings.assign(rating=levels))
    table = _read_enriched(Path(enriched)) if enriched else None
    cold_info = None
    cold: list[int] = []
    if cold_fraction:
        if table is None:
            raise UsageError("cold_fraction needs an enriched table (movies with overviews)")
        events, cold, cold_info = hold_out_cold_movies(events, table, cold_fraction)
    train = events[events["split"] == TRAIN]
    vocabs = build_vocabularies(train, ml.movies, ml.users, ml.profile, ml.profile_rule)
    # Held-out movies follow the trained ones: indices from 2 + trained movies on are
    # content-only (no id embedding; bst.model.Tables.num_trained_items).
    vocabs[F.MOVIE_ID] = vocabs[F.MOVIE_ID] + [str(m) for m in cold]
    write_vocabularies(out / VOCAB_DIR, vocabs)

    write_side_tables(out, ml.movies, ml.users)

    text_info = None
    if table is not None:
        text_info = _write_text_features(table, Path(enriched).name, train, out)

    profiles = _profiles(ml)
    users = events["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    # each distinct movie id as text once, not every event's (25 M strings at ML-25M)
    codes, distinct = pd.factorize(events["movie_id"], sort=False)
    names = np.asarray(distinct.astype(str), dtype=object)
    times = events["timestamp"].to_numpy()
    ratings = events["rating"].to_numpy()
    split = events["split"].to_numpy()

    folder = out / TFRECORDS_DIR
    folder.mkdir()
    examples = {s: 0 for s in SPLITS}
    with (
        records.ShardWriters(folder, SPLITS, num_shards) as writers,
        open(out / SEQUENCES_FILE, "w", encoding="utf-8") as sequences,
    ):
        sequences.write(sequence_header())  # then a row per user, as it goes
        for n, (a, z) in enumerate(zip(starts, ends, strict=True)):
            uid = str(users[a])
            profile = profiles[uid]
            ids, ts, rs = names[codes[a:z]].tolist(), times[a:z].tolist(), ratings[a:z].tolist()
            n_train = int((split[a:z] == TRAIN).sum())
            n_eval = z - a - n_train
            shard = n % num_shards
            sequences.write(
                sequence_row(uid, (n_train, min(n_eval, 1), min(n_eval, 1)), ids, ts, rs)
            )
            writers.write(
                TRAIN,
                shard,
                records.serialize(uid, profile, ids[:n_train], ts[:n_train], rs[:n_train]),
            )
            examples[TRAIN] += 1
            if n_eval:
                v, t = n_train, n_train + 1
                writers.write(
                    VALIDATION,
                    shard,
                    records.serialize(
                        uid, profile, ids[:v], ts[:v], rs[:v], (ids[v], ts[v], rs[v])
                    ),
                )
                writers.write(
                    TEST,
                    shard,
                    records.serialize(
                        uid, profile, ids[:t], ts[:t], rs[:t], (ids[t], ts[t], rs[t])
                    ),
                )
                examples[VALIDATION] += 1
                examples[TEST] += 1
    eval_movies = set(events.loc[events["split"] != TRAIN, "movie_id"].astype(str))
    oov = len(eval_movies - set(vocabs[F.MOVIE_ID]))
    stats = {
        "splits": {
            TRAIN: {"events": len(train), "examples": examples[TRAIN]},
            VALIDATION: {"events": split_report.validation, "examples": examples[VALIDATION]},
            TEST: {"events": split_report.test, "examples": examples[TEST]},
            "users": split_report.users,
            "users_train_only": split_report.users_train_only,
            "eval_movies_not_in_train_vocab": oov,
        },
        "vocab_sizes": {name: len(tokens) for name, tokens in vocabs.items()},
        "max_sequence_length": int((ends - starts).max()) if len(starts) else 0,
        "rating_scale": scale,
    }
    note_genres_cut(ml.movies, stats)
    if text_info:
        stats["text"] = text_info
    if cold_info:
        stats["cold_start"] = cold_info
    return stats


def note_genres_cut(movies: pd.DataFrame, stats: dict) -> None:
    """Count (in ``stats``) and warn about movies with more genres than the model reads."""
    cut = sum(len(g) > F.MAX_GENRES for g in movies["genres"])
    if cut:
        stats["movies_with_genres_cut"] = {"movies": int(cut), "kept": F.MAX_GENRES}
        log.warning(
            "%d movies have more than %d genres: the first %d are used",
            cut,
            F.MAX_GENRES,
            F.MAX_GENRES,
        )


def write_side_tables(out: Path, movies: pd.DataFrame, users: pd.DataFrame) -> None:
    """``movies.tsv`` and ``users.tsv``, sorted by id."""
    movies = movies.sort_values("movie_id", kind="mergesort")
    pd.DataFrame(
        {
            "movie_id": movies["movie_id"],
            "title": movies["title"],
            "year": movies["year"].astype("Int64"),
            "genres": ["|".join(g) for g in movies["genres"]],
        }
    ).to_csv(out / "movies.tsv", sep="\t", index=False, lineterminator="\n")
    users.sort_values("user_id", kind="mergesort").to_csv(
        out / USERS_FILE, sep="\t", index=False, lineterminator="\n"
    )


def _read_enriched(enriched: Path) -> pd.DataFrame:
    if not enriched.is_file():
        raise DataError(f"enriched table not found: {enriched}", enriched)
    table = pd.read_csv(enriched, dtype={"overview": str}, keep_default_na=False)
    for column in ("movie_id", "overview"):
        if column not in table.columns:
            raise DataError(f"expected a {column!r} column (from pipelines.enrich)", enriched)
    return table


def hold_out_cold_movies(
    events: pd.DataFrame, table: pd.DataFrame, fraction: float
) -> tuple[pd.DataFrame, list[int], dict]:
    """The cold-start protocol: hold ``fraction`` of the rated movies with an overview out
    of training.

    The movies are drawn at random (seed :data:`COLD_SEED`) from those with at least one
    rating and a non-empty overview in ``table``. Their training events are removed, so
    no weight, vocabulary or count learns from them; their validation and test events
    stay, so a model is scored on ranking them when they are a user's next movie.
    Returns ``(events without those training rows, held-out movie ids, report)``.
    """
    with_text = set(
        table.loc[table["overview"].astype(str).str.strip().ne(""), "movie_id"].astype(np.int64)
    )
    rated = np.unique(events["movie_id"].to_numpy(np.int64))
    candidates = np.array(sorted(set(rated.tolist()) & with_text), dtype=np.int64)
    count = int(round(fraction * len(candidates)))
    if count < 1:
        raise DataError(
            f"cold_fraction={fraction:g} of {len(candidates)} rated movies with an overview "
            "holds out no movie: raise it"
        )
    rng = np.random.default_rng(COLD_SEED)
    cold = sorted(rng.choice(candidates, size=count, replace=False).tolist())
    is_cold = events["movie_id"].isin(cold).to_numpy()
    drop = is_cold & (events["split"] == TRAIN).to_numpy()
    kept = events[~drop]
    trained_users = set(kept.loc[kept["split"] == TRAIN, "user_id"])
    info = {
        "fraction": float(fraction),
        "seed": COLD_SEED,
        "candidates": int(len(candidates)),
        "movies": count,
        "train_events_removed": int(drop.sum()),
        "validation_targets": int((is_cold & (events["split"] == VALIDATION).to_numpy()).sum()),
        "test_targets": int((is_cold & (events["split"] == TEST).to_numpy()).sum()),
        "users_without_training_events": int(events["user_id"].nunique() - len(trained_users)),
    }
    log.info(
        "cold start: held %d of %d rated movies with an overview out of training "
        "(%d training events removed); they are the target of %d validation and %d test users",
        count,
        len(candidates),
        info["train_events_removed"],
        info["validation_targets"],
        info["test_targets"],
    )
    return kept, cold, info


def _write_text_features(table: pd.DataFrame, source: str, train: pd.DataFrame, out: Path) -> dict:
    """Tokenize catalog overviews with a vocabulary from training movies only."""
    vocab, tokens = build_overview_tokens(table, train["movie_id"].unique())
    (out / VOCAB_DIR / TEXT_VOCAB_FILE).write_text(
        "".join(f"{t}\n" for t in vocab), encoding="utf-8"
    )
    rows = [f"{mid}\t{' '.join(map(str, ids))}\n" for mid, ids in sorted(tokens.items())]
    (out / OVERVIEW_FILE).write_text("movie_id\ttoken_ids\n" + "".join(rows), encoding="utf-8")
    with_text = sum(1 for ids in tokens.values() if ids)
    return {"vocab_size": len(vocab), "movies_with_text": with_text, "source": source}


def prepare(
    data_dir: str | Path,
    out: str | Path,
    fmt: str = "auto",
    side_data_dir: str | Path | None = None,
    num_shards: int = 4,
    enriched: str | Path | None = None,
    cold_fraction: float = 0.0,
    dataset: str = "",
    columns: Columns | None = None,
) -> dict:
    """Run the whole offline preparation; returns the manifest.

    ``fmt``: a name of :data:`bst.data.formats.FORMATS` (or an alias), or ``auto`` to
    detect it; ``dataset``: a GroupLens release to use or download
    (:data:`bst.data.formats.DATASETS`); ``columns``: the generic table's column names.
    ``cold_fraction``: hold that fraction of the rated movies with an overview out of
    training (:func:`hold_out_cold_movies`); needs ``enriched``.
    """
    if num_shards < 1:
        raise UsageError(f"num_shards must be >= 1, got {num_shards}")
    if not 0.0 <= cold_fraction <= 0.5:
        raise UsageError(f"cold_fraction must be in [0, 0.5], got {cold_fraction!r}")
    if cold_fraction and not enriched:
        raise UsageError("cold_fraction holds out movies with an overview: give --enriched too")
    fmt = formats.canonical(fmt)
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is a file, not a folder")
    writable_dir(out.parent, "output folder's parent")  # before the (long) read
    started = time.perf_counter()
    ml, inputs, fmt = load_source(fmt, data_dir, side_data_dir, dataset, columns)
    if (enriched or cold_fraction) and fmt not in ("ml1m", "sasrec"):
        raise UsageError(
            f"movie overviews (--enriched, --catalog, --cold-fraction) are joined to movies.dat "
            f"by MovieLens id: format {fmt} is not supported yet"
        )
    prefix = f".{out.name}.tmp-"
    clean_stale(out.parent, prefix)
    tmp = make_temp_dir(out.parent, prefix)
    try:
        stats = write_outputs(ml, tmp, num_shards, enriched, cold_fraction)
        ratings = ml.ratings
        manifest = {
            "version": MANIFEST_VERSION,
            "counts": {
                "ratings": int(len(ratings)),
                "users": int(ratings["user_id"].nunique()),
                "movies": int(ratings["movie_id"].nunique()),
                "movies_in_table": int(len(ml.movies)),
                "users_in_table": int(len(ml.users)),
            },
            "read_report": ml.report.to_dict(),
            "provides": _log_provided(fmt, provided_features(ml)),
            "profile": {"features": list(ml.profile), "rule": ml.profile_rule},
            **stats,
            "config": {
                "format": fmt,
                "dataset": dataset,
                "num_shards": num_shards,
                "enriched": bool(enriched),
                "cold_fraction": float(cold_fraction),
            },
            "inputs": {name: sha256(path) for name, path in sorted(inputs.items())},
        }
        if enriched:
            manifest["inputs"]["enriched"] = sha256(Path(enriched))
        write_manifest(tmp, manifest)
        _replace_dir(tmp, out)
    finally:
        remove_temp_dir(tmp)
    log.info(
        "prepared %d ratings of %d users into %s in %.1f s",
        manifest["counts"]["ratings"],
        manifest["counts"]["users"],
        out,
        time.perf_counter() - started,
    )
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    """``manifest.json``, last, with every output's sha256 (what makes a folder prepared)."""
    manifest["outputs"] = {
        p.relative_to(folder).as_posix(): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is kept until the move succeeded."""
    if not target.exists():
        new.replace(target)
        return
    if not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise DataError(
            f"{target} exists and is not a prepared folder (no {MANIFEST}); refusing to replace it",
            target,
        )
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    target.replace(old)
    new.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def ensure_prepared(cfg: Config, run_dir: Path, chief: bool = True) -> Config:
    """``cfg`` with ``data.prepared_dir`` filled in, preparing the folder when it is missing.

    The folder is ``data.prepared_dir`` or ``<run_dir>/prepared``. With ``data.synthetic``
    the raw files are generated into ``<run_dir>/synthetic`` first. A worker that is not
    the chief waits (up to 10 minutes) for the chief to prepare it.
    """
    prepared = Path(cfg.data.prepared_dir or run_dir / "prepared").resolve()
    # Absolute, resolved paths: the saved config reruns the run from any folder.
    paths: dict[str, object] = {
        f"data.{key}": str(Path(value).expanduser().resolve())
        for key in ("data_dir", "side_data_dir", "enriched")
        if (value := getattr(cfg.data, key))
    }
    if cfg.data.catalogs:
        paths["data.catalogs"] = tuple(
            str(Path(c).expanduser().resolve()) for c in cfg.data.catalogs
        )
    cfg = config_lib.replace(cfg, {"data.prepared_dir": str(prepared), **paths})
    if is_prepared(prepared):
        _check_text_matches(prepared, cfg)
        log.info("using prepared data in %s", prepared)
        return cfg
    if not chief:
        log.info("waiting for the chief to prepare %s", prepared)
        for _ in range(600):
            if is_prepared(prepared):
                return cfg
            time.sleep(1)
        raise DataError(f"the chief did not prepare {prepared} within 10 minutes", prepared)
    data_dir = cfg.data.data_dir
    if cfg.data.synthetic:
        data_dir = str(run_dir / "synthetic")
        generate(
            data_dir,
            users=cfg.data.synthetic_users,
            movies=cfg.data.synthetic_movies,
            seed=cfg.train.seed,
        )
    elif not data_dir:
        data_dir = str(config_lib.default_data_dir())
        cfg = config_lib.replace(cfg, {"data.data_dir": data_dir})  # say what was used
    if cfg.data.catalogs:
        enriched = join_catalogs(cfg, data_dir, run_dir / ENRICHED_DIR)
        cfg = config_lib.replace(cfg, {"data.enriched": str(enriched)})
    log.info("preparing %s into %s", data_dir, prepared)  # the format is logged once found
    if cfg.data.runner == "beam":
        from bst.data import beam

        beam.prepare(data_dir, prepared, cfg.data.format, cfg.data.num_shards, cfg.data.dataset)
        return cfg
    prepare(
        data_dir,
        prepared,
        cfg.data.format,
        cfg.data.side_data_dir or None,
        cfg.data.num_shards,
        cfg.data.enriched or None,
        cfg.data.cold_fraction,
        dataset=cfg.data.dataset,
        columns=columns_of(cfg),
    )
    return cfg


def columns_of(cfg: Config) -> Columns:
    """The generic table's column names and time unit from ``cfg.data``."""
    d = cfg.data
    return Columns(
        user=d.user_column,
        item=d.item_column,
        time=d.time_column,
        rating=d.rating_column,
        title=d.title_column,
        genres=d.genres_column,
        year=d.year_column,
        time_unit=d.time_unit,
    )


ENRICHED_DIR = "enriched"
ENRICHED_FILE = "movies_enriched.csv"


def join_catalogs(cfg: Config, data_dir: str | Path, out_dir: Path) -> Path:
    """Join ``movies.dat`` to ``cfg.data.catalogs`` (``--catalog``); returns the enriched
    table, ``<out_dir>/movies_enriched.csv``, with the join report (``.report.json``,
    ``.report.md``) beside it. ``bst.train`` writes it into ``<run_dir>/enriched``."""
    found, folder = formats.resolve(data_dir, cfg.data.format, cfg.data.dataset)
    if found.name == "ml1m":
        movies = folder / "movies.dat"
    elif found.name == "sasrec" and cfg.data.side_data_dir:
        movies = Path(cfg.data.side_data_dir) / "movies.dat"
    else:
        raise UsageError(
            "data.catalogs needs movies.dat titles: with format sasrec set "
            f"data.side_data_dir to a folder with movies.dat (format {found.name} is not "
            "supported yet)"
        )
    out = Path(out_dir) / ENRICHED_FILE
    result, report = enrich(movies, [Path(c) for c in cfg.data.catalogs], out)
    log.info(
        "joined %d catalog(s) to %s: %d of %d movies have an overview (%.1f %%); report in %s",
        len(cfg.data.catalogs),
        movies,
        report.matched,
        report.movies,
        100 * report.join_rate,
        out.parent,
    )
    return out


def _check_text_matches(prepared: Path, cfg: Config) -> None:
    """A reused prepared folder must match the run: the format and dataset the run names,
    overviews exactly when the run asks for them (``data.enriched`` or ``data.catalogs``), from the same enriched table when
    the run names one, and the same ``data.cold_fraction``; otherwise a flag would be
    ignored."""
    try:
        manifest = json.loads((prepared / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {prepared / MANIFEST}: {err}", prepared) from None
    again = "set data.prepared_dir to another folder, or remove this one to prepare it again"
    has_text = bool(manifest.get("config", {}).get("enriched"))
    wants_text = bool(cfg.data.enriched or cfg.data.catalogs)
    if has_text != wants_text:
        asked = "asks for overviews (data.enriched or --catalog)" if wants_text else "has none"
        raise UsageError(
            f"{prepared} was prepared {'with' if has_text else 'without'} movie overviews but "
            f"this run {asked}: {again}"
        )
    enriched = Path(cfg.data.enriched) if cfg.data.enriched else None
    recorded = manifest.get("inputs", {}).get("enriched")
    if enriched is not None and enriched.is_file() and recorded and sha256(enriched) != recorded:
        raise UsageError(
            f"{prepared} was prepared from another enriched table than {enriched}: {again}"
        )
    made = manifest.get("config", {})
    runner = made.get("runner", "in-memory")
    if runner != cfg.data.runner:  # the same contents either way: reused, and said
        log.info(
            "%s was prepared by the %s runner; reused as it is (data.runner=%s applies when "
            "a folder is prepared)",
            prepared,
            runner,
            cfg.data.runner,
        )
    fmt = formats.canonical(cfg.data.format)
    if fmt != formats.AUTO and made.get("format") != fmt:
        raise UsageError(
            f"{prepared} was prepared from format {made.get('format')} but this run asks for "
            f"data.format={cfg.data.format}: {again}"
        )
    if cfg.data.dataset and made.get("dataset", "") != cfg.data.dataset:
        raise UsageError(
            f"{prepared} was prepared from {made.get('dataset') or 'another source'} but this "
            f"run asks for data.dataset={cfg.data.dataset}: {again}"
        )
    cold = float(made.get("cold_fraction", 0.0))
    if cold != cfg.data.cold_fraction:
        raise UsageError(
            f"{prepared} was prepared with data.cold_fraction={cold:g} but this run asks for "
            f"{cfg.data.cold_fraction:g}: {again}"
        )
