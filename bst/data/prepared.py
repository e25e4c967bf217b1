"""The prepared folder: its file names and every read of it. No TensorFlow.

A folder written by :mod:`bst.data.prepare` holds::

    manifest.json           counts, split sizes, config, input and output sha256
    vocab/*.txt             vocabularies (training split only), one token per line
    movies.tsv users.tsv    the movie and user tables
    sequences.tsv           each user's events in time order, with split sizes
    overview_tokens.tsv     per-movie overview token ids (prepared with --enriched)
    tfrecords/<split>-NNNNN-of-NNNNN.tfrecord   (schema: bst.data.records)

:class:`Prepared` opens one; its tables are read once and cached, so a training run
parses ``sequences.tsv`` once however many parts of it ask.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from bst import features as F
from bst.data.split import SPLITS, TEST, VALIDATION
from bst.errors import DataError
from bst.vocab import (
    index_of,
    item_tables,
    load_vocabularies,
    read_vocabulary,
    vocab_file,
    vocab_size,
)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
VOCAB_DIR = "vocab"
MOVIES_FILE = "movies.tsv"
USERS_FILE = "users.tsv"
SEQUENCES_FILE = "sequences.tsv"
OVERVIEW_FILE = "overview_tokens.tsv"
TEXT_VOCAB_FILE = "text.txt"
TFRECORDS_DIR = "tfrecords"
SEQUENCE_COLUMNS = (
    "user_id",
    "n_train",
    "n_validation",
    "n_test",
    "movie_ids",
    "timestamps",
    "ratings",
)


def is_prepared(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def sequence_header() -> str:
    return "\t".join(SEQUENCE_COLUMNS) + "\n"


def sequence_row(
    user_id: int | str,
    splits: tuple[int, int, int],
    movie_ids: Sequence[str],
    timestamps: Sequence[int],
    ratings: Sequence[int],
) -> str:
    """One line of ``sequences.tsv`` (the writer's half of :meth:`Prepared.sequences`)."""
    return (
        f"{user_id}\t{splits[0]}\t{splits[1]}\t{splits[2]}\t{' '.join(movie_ids)}\t"
        f"{' '.join(map(str, timestamps))}\t{' '.join(map(str, ratings))}\n"
    )


@dataclass(frozen=True)
class UserSequences:
    """``sequences.tsv`` with movie ids mapped to item indices (OOV = 1).

    Attributes:
        user_ids: str ``[U]``.
        items: per user, int32 ``[n]`` item indices of all events in time order.
        n_train, n_validation, n_test: int ``[U]``. Split sizes; the validation target
            is at position ``n_train``, the test target at ``n_train + n_validation``.
        num_items: vocabulary size including the 2 reserved indices.
    """

    user_ids: np.ndarray
    items: list[np.ndarray]
    n_train: np.ndarray
    n_validation: np.ndarray
    n_test: np.ndarray
    num_items: int

    def train(self) -> list[np.ndarray]:
        """Each user's training events only (what baselines may be fitted on)."""
        return [s[:n] for s, n in zip(self.items, self.n_train, strict=True)]

    def split(self, split: str) -> EvalSplit:
        """The users evaluated on ``split``: their histories before the target, and the target.

        The validation target is event ``n_train`` with history ``[:n_train]``; the test
        target is event ``n_train + n_validation`` with everything before it as history
        (the validation event included). Train-only users (too short) are left out.
        """
        if split == VALIDATION:
            keep = np.flatnonzero(self.n_validation > 0)
            position = self.n_train
        elif split == TEST:
            keep = np.flatnonzero(self.n_test > 0)
            position = self.n_train + self.n_validation
        else:
            raise ValueError(f"`split` must be 'validation' or 'test'. Received: split={split!r}")
        return EvalSplit(
            user_ids=self.user_ids[keep],
            histories=[self.items[u][: position[u]] for u in keep],
            targets=np.array([self.items[u][position[u]] for u in keep], dtype=np.int64),
            num_items=self.num_items,
        )


@dataclass(frozen=True)
class EvalSplit:
    """Users of one evaluation split, in ``sequences.tsv`` order (see :meth:`UserSequences.split`)."""

    user_ids: np.ndarray  # str [U]
    histories: list[np.ndarray]  # int32 [n] per user, oldest first
    targets: np.ndarray  # int64 [U]
    num_items: int


@dataclass(frozen=True)
class Events:
    """One person's events in time order (raw movie ids; -1/0 = unknown time/rating)."""

    movie_ids: list[str]
    timestamps: np.ndarray  # int64 [n]
    ratings: np.ndarray  # int64 [n]
    splits: tuple[int, int, int] | None = None  # (n_train, n_validation, n_test)


def _numbers(text: str, n: int, missing: int) -> np.ndarray:
    """int64 ``[n]`` from a space-separated column; all ``missing`` when absent."""
    values = np.array([int(x) for x in text.split()], dtype=np.int64)
    return values if len(values) == n else np.full(n, missing, np.int64)


def _sequence_fields(
    line: str, path: Path, line_no: int
) -> tuple[list[str], list[str], tuple[int, int, int]]:
    """One ``sequences.tsv`` line → (fields, movie ids, split sizes), or a DataError."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) < len(SEQUENCE_COLUMNS):
        raise DataError(
            f"expected {len(SEQUENCE_COLUMNS)} tab-separated fields, got {len(fields)}",
            path,
            line_no,
        )
    try:
        splits = tuple(int(x) for x in fields[1:4])
    except ValueError:
        raise DataError(f"split sizes must be integers, got {fields[1:4]}", path, line_no) from None
    return fields, fields[4].split(), splits


def read_sequences(path: Path, vocab: list[str]) -> UserSequences:
    """Parse ``sequences.tsv``, mapping movie ids through ``vocab`` (unknown → OOV)."""
    lookup = index_of(vocab)
    user_ids, items, sizes = [], [], []
    with open(path, encoding="utf-8") as handle:
        header = next(handle, "").rstrip("\n").split("\t")
        if tuple(header[: len(SEQUENCE_COLUMNS)]) != SEQUENCE_COLUMNS:
            raise DataError(
                f"expected columns {', '.join(SEQUENCE_COLUMNS)}, got {header}", path, 1
            )
        for line_no, line in enumerate(handle, start=2):
            fields, ids, n = _sequence_fields(line, path, line_no)
            if min(n) < 0 or sum(n) > len(ids):
                raise DataError(f"split sizes {n} do not fit {len(ids)} events", path, line_no)
            user_ids.append(fields[0])
            items.append(np.array([lookup.get(m, F.OOV) for m in ids], dtype=np.int32))
            sizes.append(n)
    sizes = np.array(sizes, dtype=np.int64).reshape(-1, 3)
    return UserSequences(
        user_ids=np.array(user_ids, dtype=str),
        items=items,
        n_train=sizes[:, 0],
        n_validation=sizes[:, 1],
        n_test=sizes[:, 2],
        num_items=vocab_size(vocab),
    )


@dataclass(frozen=True)
class Prepared:
    """A folder written by :mod:`bst.data.prepare`: vocabularies, tables, sequences, shards."""

    folder: Path

    @classmethod
    def open(cls, folder: str | Path | Prepared) -> Prepared:
        if isinstance(folder, Prepared):
            return folder
        folder = Path(folder)
        if not is_prepared(folder):
            raise DataError(
                f"{folder} is not a prepared folder (no {MANIFEST}): "
                f"run python -m pipelines.prepare --out {folder}"
            )
        return cls(folder)

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.folder / MANIFEST).read_text())

    @cached_property
    def vocabs(self) -> dict[str, list[str]]:
        return load_vocabularies(self.folder / VOCAB_DIR, self.profile_features)

    def vocab_path(self, name: str) -> str:
        return str(self.folder / VOCAB_DIR / vocab_file(name))

    @property
    def profile_features(self) -> tuple[str, ...]:
        """The profile features of this data (MovieLens': gender, age, occupation, zip; a
        generic users table's: its columns), in the order of the model's inputs."""
        return tuple(self.manifest.get("profile", {}).get("features", F.PROFILE_FEATURES))

    @property
    def profile_rule(self) -> str:
        """How raw profile values become tokens (:func:`bst.data.records.tokens_of`)."""
        return self.manifest.get("profile", {}).get("rule", "movielens")

    def vocab_size(self, name: str) -> int:
        return vocab_size(self.vocabs[name])

    @property
    def cold_movies(self) -> int:
        """Movies held out of training (the cold-start protocol, ``--cold-fraction``): the
        last entries of the movie vocabulary. 0 when the folder was prepared without it."""
        return int(self.manifest.get("cold_start", {}).get("movies", 0))

    @property
    def num_trained_items(self) -> int:
        """Item indices below this have training events (and an id embedding); the
        held-out movies above it are content-only."""
        return self.vocab_size(F.MOVIE_ID) - self.cold_movies

    @property
    def rating_levels(self) -> int:
        """How many rating levels the model embeds: the data's scale (manifest
        ``rating_scale``; half stars have 10), and at least 5, so that data with fewer
        (or none, like the SASRec file) builds ML-1M's model."""
        return max(F.NUM_RATINGS, len(self.manifest.get("rating_scale") or []))

    @cached_property
    def movies(self) -> pd.DataFrame:
        return pd.read_csv(
            self.folder / MOVIES_FILE,
            sep="\t",
            dtype={"movie_id": str, "title": str, "genres": str},
            keep_default_na=False,
            na_values={"year": [""]},
        ).assign(year=lambda d: d["year"].astype("Int64"))

    @cached_property
    def movie_labels(self) -> dict[str, str]:
        """Movie id → ``"Title (year)"`` (the title alone when the year is unknown)."""
        movies = self.movies
        return {
            str(mid): (f"{title} ({int(year)})" if not np.isnan(year) else str(title))
            for mid, title, year in zip(
                movies["movie_id"],
                movies["title"],
                movies["year"].astype("float64").to_numpy(),
                strict=True,
            )
        }

    @cached_property
    def catalog_fingerprint(self) -> str:
        """sha256 of the movie vocabulary in index order with each movie's label: what a
        model trained on this folder scores, and how an export names its catalog."""
        labels = self.movie_labels
        digest = hashlib.sha256()
        for movie in self.vocabs[F.MOVIE_ID]:
            digest.update(f"{movie}\t{labels.get(movie, movie)}\n".encode())
        return digest.hexdigest()

    @cached_property
    def users(self) -> pd.DataFrame:
        """``users.tsv`` as strings ("" = unknown)."""
        path = self.folder / USERS_FILE
        if not path.is_file():
            return pd.DataFrame(columns=["user_id", *self.profile_features])
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)

    @cached_property
    def item_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(genres ``[V, MAX_GENRES]``, year ``[V]``) indexed by movie index."""
        return item_tables(self.movies, self.vocabs)

    @cached_property
    def text_table(self) -> tuple[np.ndarray | None, int | None]:
        """(overview token ids ``[V, T]`` by movie index, text vocabulary size), or (None, None)
        when the folder was prepared without an enriched table."""
        path = self.folder / OVERVIEW_FILE
        if not path.is_file():
            return None, None
        index = index_of(self.vocabs[F.MOVIE_ID])
        rows = {}
        with open(path, encoding="utf-8") as handle:
            next(handle)
            for line in handle:
                movie_id, _, ids = line.rstrip("\n").partition("\t")
                if movie_id in index:
                    rows[index[movie_id]] = [int(t) for t in ids.split()]
        width = max((len(r) for r in rows.values()), default=0) or 1
        table = np.zeros((self.vocab_size(F.MOVIE_ID), width), np.int32)
        for row, ids in rows.items():
            table[row, : len(ids)] = ids
        text_vocab = len(read_vocabulary(self.folder / VOCAB_DIR / TEXT_VOCAB_FILE))
        return table, text_vocab

    @cached_property
    def sequences(self) -> UserSequences:
        """``sequences.tsv`` with item indices, parsed once per :class:`Prepared`."""
        movie_vocab = read_vocabulary(self.vocab_path(F.MOVIE_ID))
        return read_sequences(self.folder / SEQUENCES_FILE, movie_vocab)

    def eval_split(self, split: str) -> EvalSplit:
        """Evaluation targets of ``split`` ('validation' or 'test')."""
        return self.sequences.split(split)

    def train_item_counts(self) -> np.ndarray:
        """Training interactions per item index (``[N]`` int64)."""
        train = self.sequences.train()
        flat = np.concatenate(train) if train else np.zeros(0, np.int32)
        return np.bincount(flat, minlength=self.vocab_size(F.MOVIE_ID))

    def user_events(self, user_id: str) -> Events | None:
        """``user_id``'s row of ``sequences.tsv`` with raw ids and times (None when absent)."""
        path = self.folder / SEQUENCES_FILE
        prefix = f"{user_id}\t"
        with open(path, encoding="utf-8") as handle:
            next(handle, None)  # header
            for line_no, line in enumerate(handle, start=2):
                if not line.startswith(prefix):
                    continue
                fields, ids, splits = _sequence_fields(line, path, line_no)
                timestamps = _numbers(fields[5], len(ids), -1)
                ratings = _numbers(fields[6], len(ids), 0)
                return Events(ids, timestamps, ratings, splits)
        return None

    def user_profile(self, user_id: str) -> dict[str, str]:
        """Raw profile values from ``users.tsv`` ("" = unknown; {} when the user is absent)."""
        users = self.users
        row = users[users["user_id"] == str(user_id)]
        if row.empty:
            return {}
        return {name: str(row.iloc[0].get(name, "")).strip() for name in self.profile_features}

    def shards(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        folder = self.folder / TFRECORDS_DIR
        files = sorted(str(p) for p in folder.glob(f"{split}-*.tfrecord"))
        if not files:
            raise DataError(f"no {split} shards in {folder}: re-run pipelines.prepare")
        return files
