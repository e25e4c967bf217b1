"""MovieLens-sized synthetic data in the MovieLens CSV format, written in minutes.

    python -m bst.data.synthetic --like ml-25m --out data/synthetic-25m
    python -m bst.data.synthetic --users 30200 --movies 3706 --ratings 5000000 --out data/5x

For benchmarks and tests of bst at the sizes its users reach for (ML-20M, ML-25M,
ML-32M): ``ratings.csv`` (``userId,movieId,rating,timestamp``, half stars) and
``movies.csv`` (``movieId,title,genres``), the files of :mod:`bst.data.mlcsv`. Every
step is a numpy operation over all events at once (no per-user Python loop), so 25 M
ratings take about a minute and a few GiB of memory (the README's results say how
long and how much on which machine).

What it plants, so that quality figures on it mean something:

* **popularity**: movie ``k`` (by popularity rank) is drawn with probability
  proportional to ``(k + 20) ** -1.1``, a Zipf-like law with a flattened head, as
  in MovieLens where the most rated movie holds a fraction of a percent of ratings;
* **history lengths**: at least 20 ratings per user (the releases' own filter) plus a
  log-normal part whose median and mean follow ML-25M's (about 71 and 154 ratings):
  a long tail of heavy users, scaled so the total is the ratings asked for;
* **sequential structure**: a user starts at a movie drawn by popularity and with
  probability ``follow`` (0.3) moves 1 to 5 steps along the popularity order
  (neighbours are movies of similar popularity that share a genre), otherwise jumps
  to a new movie drawn by popularity. So the previous movies predict the next one,
  about as much as on ML-1M (``follow`` was chosen so that the item-transition
  baseline's validation NDCG@10 on ``--like ml-1m`` data is near ML-1M's own; the
  README's results give both), so quality figures on it are not saturated;
* each (user, movie) pair at most once, as in MovieLens; timestamps increase within a
  user; ratings are half stars from a user bias, a movie quality and noise.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np

from bst.data.synthetic import GENRES

log = logging.getLogger(__name__)

# Users, rated movies and ratings of the GroupLens releases (rated movies, not every
# row of movies.csv): --like NAME.
LIKE = {
    "ml-1m": (6_040, 3_706, 1_000_209),
    "ml-10m": (69_878, 10_677, 10_000_054),
    "ml-20m": (138_493, 26_744, 20_000_263),
    "ml-25m": (162_541, 59_047, 25_000_095),
    "ml-32m": (200_948, 84_432, 32_000_204),
}
MIN_RATINGS = 20  # per user, as in the releases
ZIPF_OFFSET, ZIPF_EXPONENT = 20.0, 1.1
STEP_PROBS = (0.2,) * 5  # a follow step moves 1 to 5 along the popularity order
START, END = 946_684_800, 1_546_300_800  # 2000-01-01 .. 2019-01-01, Unix seconds
HALF_STARS = np.array(
    ["0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5", "5.0"], dtype=object
)


def popularity(movies: int) -> np.ndarray:
    """float64 ``[movies]``: the probability of each popularity rank (most popular first)."""
    p = (np.arange(movies, dtype=np.float64) + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    return p / p.sum()


def history_lengths(users: int, ratings: int, movies: int, rng) -> np.ndarray:
    """int64 ``[users]`` ratings per user, summing to ``ratings`` (at most half the
    catalog each): 20 (or the average's half when that is smaller) plus a log-normal
    part with ML-25M's shape (median 51, mean 134 before scaling)."""
    low = max(1, min(MIN_RATINGS, ratings // users // 2))
    cap = max(low, movies // 2)
    extra = np.exp(np.log(51.0) + 1.39 * rng.standard_normal(users))
    extra *= max(ratings - low * users, 0) / extra.sum()
    lengths = np.minimum(low + np.floor(extra).astype(np.int64), cap)
    short = ratings - int(lengths.sum())  # rounding and the cap: hand the rest out
    while short > 0:
        room = np.flatnonzero(lengths < cap)
        if not len(room):
            break
        take = rng.choice(room, size=min(short, len(room)), replace=False)
        lengths[take] += 1
        short -= len(take)
    return lengths


def _walks(draw: np.ndarray, movies: int, follow: float, rng) -> np.ndarray:
    """int64 ``[sum(draw)]`` popularity ranks: ``draw[u]`` events of each user in order,
    starting with a jump; each next event follows (1-5 steps along the ranks) with
    probability ``follow``, else jumps to a movie drawn by popularity."""
    total = int(draw.sum())
    first = np.zeros(total, dtype=bool)
    first[np.concatenate(([0], np.cumsum(draw)[:-1]))[draw > 0]] = True
    jump = first | (rng.random(total) >= follow)
    cdf = np.cumsum(popularity(movies))
    target = np.minimum(np.searchsorted(cdf, rng.random(int(jump.sum())), side="right"), movies - 1)
    step = rng.choice(np.arange(1, len(STEP_PROBS) + 1), size=total, p=STEP_PROBS)
    step[jump] = 0
    moved = np.cumsum(step)
    segment = np.cumsum(jump) - 1  # which jump each event follows
    return (target[segment] + moved - moved[np.flatnonzero(jump)][segment]) % movies


def walk(
    lengths: np.ndarray, movies: int, follow: float, rng, rounds: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """(user index, popularity rank) int64 arrays of every event, each user's events in
    order (:func:`_walks`), no movie twice for a user, ``lengths[u]`` events for user
    ``u``: a repeated movie is dropped and the users left short walk on (a new jump)
    for up to ``rounds`` rounds."""
    users = len(lengths)
    owner = np.zeros(0, np.int64)
    ranks = np.zeros(0, np.int64)
    have = np.zeros(users, np.int64)
    for _ in range(rounds):
        short = lengths - have
        if not short.any():
            break
        draw = np.where(short > 0, np.ceil(short * 1.2 + 3), 0).astype(np.int64)
        new_owner = np.repeat(np.arange(users, dtype=np.int64), draw)
        owner = np.concatenate((owner, new_owner))  # a user's new events after the old
        ranks = np.concatenate((ranks, _walks(draw, movies, follow, rng)))
        order = np.argsort(owner, kind="stable")  # by user, each user's events in order
        owner, ranks = owner[order], ranks[order]
        _, keep = np.unique(owner * movies + ranks, return_index=True)  # first of each pair
        keep.sort()
        owner, ranks = owner[keep], ranks[keep]
        begins = np.concatenate(([0], np.flatnonzero(np.diff(owner)) + 1))
        sizes = np.diff(np.append(begins, len(owner)))
        index = np.arange(len(owner)) - np.repeat(begins, sizes)
        kept = index < lengths[owner]
        owner, ranks = owner[kept], ranks[kept]
        have = np.bincount(owner, minlength=users)
    return owner, ranks


def generate_at_scale(
    out: str | Path,
    users: int,
    movies: int,
    ratings: int,
    seed: int = 0,
    follow: float = 0.3,
) -> dict[str, int]:
    """Write ``ratings.csv`` and ``movies.csv`` (MovieLens CSV format) into ``out``;
    returns the counts written (ratings can fall a little short of ``ratings`` when
    users near the catalog's size run out of new movies)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if users < 1 or movies < 10 or ratings < users:
        raise ValueError(
            "need at least 1 user, 10 movies and a rating per user, got "
            f"users={users}, movies={movies}, ratings={ratings}"
        )
    if not 0.0 <= follow < 1.0:
        raise ValueError(f"follow must be in [0, 1), got {follow}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    lengths = history_lengths(users, ratings, movies, rng)
    owner, ranks = walk(lengths, movies, follow, rng)
    n = len(owner)
    log.info("%d events of %d users drawn (%.1f s)", n, users, time.perf_counter() - started)

    movie_id = rng.permutation(movies).astype(np.int64) + 1  # rank -> movieId
    user_id = rng.permutation(users).astype(np.int64) + 1
    # timestamps: a start per user, then gaps of a per-user typical length
    counts = np.bincount(owner, minlength=users)
    begins = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pace = np.exp(np.log(3_600.0 * 6) + 1.5 * rng.standard_normal(users))  # seconds
    gaps = rng.exponential(1.0, n) * pace[owner]
    gaps[begins[counts > 0]] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[begins], counts)
    duration = elapsed[begins + counts - 1]  # every user has an event
    # a user whose gaps add up past 90 % of the years covered is sped up to fit them
    squeeze = np.minimum(1.0, 0.9 * (END - START) / np.maximum(duration, 1.0))
    elapsed *= squeeze[owner]
    latest = np.maximum((END - START) - duration * squeeze, 1.0)  # starts that end by END
    start = START + (rng.random(users) * latest).astype(np.int64)
    timestamp = start[owner] + elapsed.astype(np.int64)
    del gaps, elapsed
    # half stars: a user's bias, a movie's quality, noise
    quality = rng.normal(0.0, 0.5, movies)
    bias = rng.normal(0.0, 0.4, users)
    stars = 3.5 + bias[owner] + quality[ranks] + rng.normal(0.0, 0.8, n)
    level = np.clip(np.round(stars * 2.0), 1, 10).astype(np.int8) - 1
    del stars

    table = pa.table(
        {
            "userId": user_id[owner],
            "movieId": movie_id[ranks],
            "rating": pa.DictionaryArray.from_arrays(pa.array(level), pa.array(HALF_STARS)),
            "timestamp": timestamp,
        }
    )
    with open(out / "ratings.csv", "wb") as handle:
        handle.write(b"userId,movieId,rating,timestamp\n")
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        pacsv.write_csv(table, handle, options)
    del table
    years = rng.integers(1920, 2019, movies)
    with open(out / "movies.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["movieId", "title", "genres"])
        for rank in np.argsort(movie_id):  # movieId order, as GroupLens writes it
            mid = int(movie_id[rank])
            # neighbours in the popularity order share a genre, as the walk follows it
            genres = {GENRES[(rank // 8) % len(GENRES)], GENRES[int(rng.integers(len(GENRES)))]}
            title = f"Synthetic Movie {mid}" if mid % 13 else f"Movie {mid}, The"
            writer.writerow([mid, f"{title} ({years[rank]})", "|".join(sorted(genres))])
    result = {"ratings": n, "users": int((counts > 0).sum()), "movies": movies}
    log.info(
        "wrote %s ratings of %s users on %s movies to %s in %.1f s",
        f"{n:,}",
        f"{result['users']:,}",
        f"{movies:,}",
        out,
        time.perf_counter() - started,
    )
    return result
