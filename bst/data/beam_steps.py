"""The steps the workers of the prepare step on Beam run (:mod:`bst.data.beam` builds
the pipeline and runs the driver's part): reading the ratings file's byte ranges,
assembling, reconciling and splitting each user's events, writing a user's records.
Each applies the in-memory step's rules (see :mod:`bst.data.beam`)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from bst.data import mlcsv
from bst.data import movielens as ml
from bst.data.prepared import SEQUENCES_FILE, sequence_row
from bst.data.split import TEST, TRAIN, VALIDATION, split_sizes
from bst.errors import DataError

log = logging.getLogger("bst.prepare")

PIECE_BYTES = 4 << 20  # a range is parsed by the in-memory reader in pieces of this size


class Source:
    """A format's ratings file and how a piece of its lines is parsed and checked."""

    def __init__(self, fmt: str, path: str):
        self.fmt, self.path = fmt, path
        self.name = ml.ML1M_FILES[0] if fmt == "ml1m" else mlcsv.RATINGS
        self.header = b""  # ratings.csv's first line, given to every piece

    def parse(self, piece: bytes) -> pd.DataFrame:
        """Whole lines → user_id, movie_id, rating, timestamp, checked by the in-memory
        reader (a :class:`DataError`'s line is then the piece's data line, 1-based)."""
        with tempfile.TemporaryDirectory(prefix="bst-beam-") as folder:
            path = Path(folder) / self.name
            path.write_bytes(self.header + piece)
            try:
                if self.fmt == "ml1m":
                    return ml.read_ratings(path)
                return mlcsv.read_ratings(path)
            except DataError as err:
                line = (err.line or 0) - (1 if self.header else 0)
                raise DataError(err.reason, Path(self.path), line if line > 0 else None) from None


def _line_starts(piece: bytes) -> np.ndarray:
    """Offsets in ``piece`` (whole lines, the last one ending in a newline) of each line."""
    ends = np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == ord("\n"))
    return np.r_[0, ends[:-1] + 1].astype(np.int64) if len(ends) else np.zeros(0, np.int64)


def read_range(span: tuple[int, int], source: Source) -> Iterator:
    """The lines starting in ``[start, end)`` of the ratings file, parsed piece by piece:
    yields ``("events", (user, arrays))`` per user of a piece (arrays: byte offsets of
    the lines, movie ids, ratings, timestamps) or one ``("error", (offset, reason))``."""
    from apache_beam.io.filesystems import FileSystems

    start, end = span
    with FileSystems.open(source.path, mime_type="application/octet-stream") as f:
        if start:
            f.seek(start - 1)
            first = start - 1 + len(f.readline())  # the first line starting at start or later
        else:
            first = len(source.header)
        if first >= end:
            return
        f.seek(first)
        data = f.read(end - first)
        if data and not data.endswith(b"\n"):
            data += f.readline()
    at = 0
    while at < len(data):
        cut = data.find(b"\n", min(at + PIECE_BYTES, len(data)) - 1)
        cut = len(data) if cut < 0 else cut + 1
        piece = data[at:cut]
        offset = first + at
        at = cut
        starts = _line_starts(piece if piece.endswith(b"\n") else piece + b"\n")
        stops = np.r_[starts[1:], len(piece)]
        kept = starts
        if source.fmt == "ml-csv":  # the CSV reader skips blank lines: keep the others' offsets
            short = np.flatnonzero(stops - starts <= 2)
            blank = np.zeros(len(starts), dtype=bool)
            blank[short] = [not piece[starts[i] : stops[i]].strip() for i in short]
            if blank.any():
                piece = b"".join(
                    piece[a:z] for a, z, b in zip(starts, stops, blank, strict=True) if not b
                )
                kept = starts[~blank]
        try:
            frame = source.parse(piece)
        except DataError as err:
            line = min(err.line or 1, len(kept))
            yield "error", (offset + int(kept[line - 1] if len(kept) else 0), err.reason)
            return
        if len(frame) != len(kept):
            yield "error", (offset, f"read {len(frame)} rows from {len(kept)} lines")
            return
        positions = offset + kept
        users = frame["user_id"].to_numpy()
        order = np.argsort(users, kind="stable")
        users = users[order]
        bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
        columns = [
            positions[order],
            frame["movie_id"].to_numpy()[order],
            frame["rating"].to_numpy()[order],
            frame["timestamp"].to_numpy()[order],
        ]
        for a, z in zip(bounds[:-1], bounds[1:], strict=True):
            yield "events", (users[a].item(), tuple(c[a:z] for c in columns))
    log.info("read bytes %d-%d of %s", start, end, source.path)  # progress, per range


class Stats:
    """Counts summed over users (``max_sequence_length``: the largest)."""

    SUMMED = (
        "ratings_read",
        "duplicate_pairs",
        "unknown_user_ratings",
        "unknown_movie_ratings",
        "ratings",
        "users",
        "users_train_only",
        "train",
        "validation",
        "test",
        "known_ratings",
        "known_timestamps",
    )

    @classmethod
    def merge(cls, parts: Iterable[dict]) -> dict:
        out = dict.fromkeys(cls.SUMMED, 0)
        out["max_sequence_length"] = 0
        for part in parts:
            for key in cls.SUMMED:
                out[key] += part.get(key, 0)
            out["max_sequence_length"] = max(
                out["max_sequence_length"], part.get("max_sequence_length", 0)
            )
        return out


def assemble(
    item: tuple, movie_ids: np.ndarray, user_ids: frozenset | None
) -> Iterator[tuple[str, object]]:
    """One user's events from every piece → reconciled, ordered and split (tagged outputs;
    ``movie_ids``: the movies table's ids, sorted)."""
    from bst.data.ratings import known_ratings

    user, blocks = item
    positions, movies, ratings, times = (np.concatenate(c) for c in zip(*blocks, strict=True))
    stats = {"ratings_read": len(movies)}
    stats["duplicate_pairs"] = len(movies) - len(np.unique(movies))
    yield "user", user
    if user_ids is not None and user not in user_ids:
        stats["unknown_user_ratings"] = len(movies)
        yield "stats", stats
        return
    at = np.minimum(np.searchsorted(movie_ids, movies), len(movie_ids) - 1)
    known = movie_ids[at] == movies
    stats["unknown_movie_ratings"] = int((~known).sum())
    positions, movies, ratings, times = (
        positions[known],
        movies[known],
        ratings[known],
        times[known],
    )
    n = len(movies)
    if not n:
        yield "stats", stats
        return
    order = np.lexsort((positions, times))  # by time, ties in file order
    movies, ratings, times = movies[order], ratings[order], times[order]
    n_train, n_validation, n_test = split_sizes(n)
    rated = ratings[known_ratings(ratings)]
    stats.update(
        ratings=n,
        users=1,
        users_train_only=int(n_validation == 0),
        train=n_train,
        validation=n_validation,
        test=n_test,
        known_ratings=len(rated),
        known_timestamps=int((times >= 0).sum()),
        max_sequence_length=n,
    )
    yield "stats", stats
    yield "rating_values", np.unique(rated.astype(np.float64))
    yield (
        "movies",
        (movies[:n_train].tolist(), np.unique(movies).tolist(), movies[n_train:].tolist()),
    )
    if n_train:
        yield "train_users", user
    yield "sequence", (user, (n_train, n_validation, n_test), movies, times, ratings)


def write_user(
    item: tuple, scale: list[float], profiles: dict
) -> Iterator[tuple[str, bytes | str]]:
    """One user's records (tagged by split) and ``sequences.tsv`` row, as
    :func:`bst.data.prepare.write_outputs` writes them (``profiles``: tokens by user id;
    ``""``: those of a user without a row)."""
    from bst.data import records  # TensorFlow: imported where records are written

    user, sizes, movies, times, ratings = item
    from bst.data.ratings import known_ratings

    levels = np.zeros(len(ratings), dtype=np.int64)
    known = known_ratings(ratings)
    levels[known] = np.searchsorted(np.asarray(scale), ratings[known].astype(np.float64)) + 1
    uid = str(user)
    profile = profiles.get(uid) or profiles[""]
    ids, ts, rs = [str(m) for m in movies.tolist()], times.tolist(), levels.tolist()
    n_train, n_eval = sizes[0], sizes[1] + sizes[2]
    yield SEQUENCES_FILE, sequence_row(uid, sizes, ids, ts, rs)
    yield TRAIN, records.serialize(uid, profile, ids[:n_train], ts[:n_train], rs[:n_train])
    if n_eval:
        v, t = n_train, n_train + 1
        yield (
            VALIDATION,
            records.serialize(uid, profile, ids[:v], ts[:v], rs[:v], (ids[v], ts[v], rs[v])),
        )
        yield TEST, records.serialize(uid, profile, ids[:t], ts[:t], rs[:t], (ids[t], ts[t], rs[t]))


def movie_tally():
    """A CombineFn over each user's (training movies, distinct movies, evaluation movies):
    training events per movie, the movies rated, the movies of validation and test."""
    from collections import Counter

    import apache_beam as beam

    class MovieTally(beam.CombineFn):
        def create_accumulator(self):
            return Counter(), set(), set()

        def add_input(self, acc, element):
            acc[0].update(element[0])
            acc[1].update(element[1])
            acc[2].update(element[2])
            return acc

        def merge_accumulators(self, accumulators):
            out = self.create_accumulator()
            for train, rated, evaluated in accumulators:
                out[0].update(train)
                out[1].update(rated)
                out[2].update(evaluated)
            return out

        def extract_output(self, acc):
            return {
                "train_counts": sorted(acc[0].items()),
                "movies": len(acc[1]),
                "eval_movies": sorted(acc[2]),
            }

    return MovieTally()


def tagged(fn):
    """A generator of ``(tag, value)`` pairs → Beam tagged outputs."""
    from apache_beam import pvalue

    def wrapped(*args, **kwargs):
        for tag, value in fn(*args, **kwargs):
            yield pvalue.TaggedOutput(tag, value)

    return wrapped


def scale_or_error(values: list[float]) -> list:
    """The rating scale of the distinct known ratings, or the error (as text)."""
    from bst.data.ratings import rating_scale

    try:
        return [[float(v) for v in rating_scale(np.unique(np.asarray(values, np.float64)))], None]
    except DataError as err:
        return [[], err.reason]
