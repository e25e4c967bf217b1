"""Synthetic MovieLens-1M-format files with planted, learnable sequential structure.

Movies sit on a ring. A user starts somewhere and, with probability ``follow``,
watches the next unseen movie along the ring; otherwise a random unseen movie
drawn by popularity. So "what comes next" is predictable from the last item, and
a sequential model can beat popularity by a wide margin, while popularity still
carries some signal.

    python -m bst.data.synthetic --out data/synthetic --users 60 --movies 40 --seed 0
    python -m bst.data.synthetic --like ml-25m --out data/synthetic-25m   # CSV, at scale

``--like`` or ``--ratings`` writes MovieLens-sized data in the MovieLens CSV format
instead (:mod:`bst.data.synthetic_scale`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
AGES = (1, 18, 25, 35, 45, 50, 56)
START = 956_703_932  # 2000-04-25, the first ML-1M timestamp

log = logging.getLogger(__name__)


def generate(
    out: str | Path,
    users: int = 60,
    movies: int = 40,
    seed: int = 0,
    min_len: int = 5,
    max_len: int = 30,
    follow: float = 0.8,
) -> dict[str, int]:
    """Write ratings.dat, users.dat and movies.dat into ``out``; returns row counts."""
    if users < 1 or movies < 3:
        raise ValueError(f"need at least 1 user and 3 movies, got users={users}, movies={movies}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    popularity = 1.0 / np.arange(1, movies + 1) ** 0.8
    popularity = popularity[rng.permutation(movies)]
    popularity /= popularity.sum()

    movie_lines = []
    for m in range(1, movies + 1):
        year = int(rng.integers(1930, 2001))
        # neighbours on the ring share a genre, so genres carry signal too
        genres = {GENRES[(m // 4) % len(GENRES)]}
        genres.update(GENRES[int(g)] for g in rng.choice(len(GENRES), rng.integers(0, 3)))
        title = f"Synthetic Movie {m}"
        if m % 7 == 0:
            title = f"Movie {m}, The"
        if m % 11 == 0:
            title = f"Cité {m}"  # a latin-1 character, as in the real movies.dat
        movie_lines.append(f"{m}::{title} ({year})::{'|'.join(sorted(genres))}")

    user_lines, rating_lines = [], []
    for u in range(1, users + 1):
        gender = "F" if rng.random() < 0.3 else "M"
        user_lines.append(
            f"{u}::{gender}::{AGES[rng.integers(len(AGES))]}::{rng.integers(0, 21)}"
            f"::{rng.integers(10000, 99999)}"
        )
        length = int(rng.integers(min_len, min(max_len, movies - 1) + 1))
        current = int(rng.choice(movies, p=popularity))
        seen = [current]
        while len(seen) < length:
            if rng.random() < follow:
                step = 1
                while (current + step) % movies in seen:
                    step += 1
                current = (current + step) % movies
            else:
                p = popularity.copy()
                p[seen] = 0.0
                current = int(rng.choice(movies, p=p / p.sum()))
            seen.append(current)
        t = START + int(rng.integers(0, 86_400 * 30))
        for m in seen:
            t += int(rng.exponential(3_600 * 12))
            rating = int(np.clip(round(rng.normal(3.6, 1.0)), 1, 5))
            rating_lines.append(f"{u}::{m + 1}::{rating}::{t}")

    (out / "movies.dat").write_bytes(("\n".join(movie_lines) + "\n").encode("latin-1"))
    (out / "users.dat").write_text("\n".join(user_lines) + "\n", encoding="ascii")
    (out / "ratings.dat").write_text("\n".join(rating_lines) + "\n", encoding="ascii")
    counts = {"ratings": len(rating_lines), "users": users, "movies": movies}
    log.info("wrote synthetic ML-1M files to %s: %s", out, counts)
    return counts


def parser() -> argparse.ArgumentParser:
    """``python -m bst.data.synthetic``'s arguments."""
    from bst.data import synthetic_scale as scale

    parser = argparse.ArgumentParser(
        prog="python -m bst.data.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="folder to write the files into")
    parser.add_argument(
        "--like",
        choices=sorted(scale.LIKE),
        default=None,
        help="the users, rated movies and ratings of a GroupLens release, in the MovieLens "
        "CSV format (bst.data.synthetic_scale); --users, --movies, --ratings override them",
    )
    parser.add_argument("--users", type=int, default=None, help="users (default 60)")
    parser.add_argument("--movies", type=int, default=None, help="movies (default 40)")
    parser.add_argument(
        "--ratings",
        type=int,
        default=None,
        help="ratings to write: MovieLens-sized data in the MovieLens CSV format "
        "(ratings.csv, movies.csv); without it (and --like), the small ML-1M-format "
        "files of the tests and demos",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    from bst.data import synthetic_scale as scale

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        if args.like or args.ratings is not None:
            users, movies, ratings = scale.LIKE.get(args.like, (None, None, None))
            users = args.users if args.users is not None else users
            movies = args.movies if args.movies is not None else movies
            ratings = args.ratings if args.ratings is not None else ratings
            if users is None or movies is None:
                raise ValueError("--ratings needs --users and --movies (or --like NAME)")
            counts = scale.generate_at_scale(args.out, users, movies, ratings, seed=args.seed)
        else:
            counts = generate(
                args.out,
                users=60 if args.users is None else args.users,
                movies=40 if args.movies is None else args.movies,
                seed=args.seed,
            )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"wrote {counts['ratings']} ratings, {counts['users']} users, {counts['movies']} movies to {args.out}"
    )
    return counts


if __name__ == "__main__":
    main()
