"""A random user subsample of MovieLens-1M, written as ML-1M files (for small-data checks).

    python benchmarks/subsample.py --data-dir ../shared/data/ml-1m --out /tmp/ml-1m-10pct \
        [--fraction 0.1] [--seed 0]

Keeps every rating, and the users.dat row, of a random ``--fraction`` of the users
(all movies stay in movies.dat), so the result has MovieLens-1M's format and about
100,000 ratings of about 600 users at the default 10 %. The files are byte copies of
the kept lines, in the original order and encoding.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    default = Path(os.environ.get("BST_DATA_DIR") or REPO.parent / "shared" / "data") / "ml-1m"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(default))
    parser.add_argument("--out", required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    src, out = Path(args.data_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    users = (src / "users.dat").read_bytes().splitlines(keepends=True)
    ids = np.array([int(line.split(b"::", 1)[0]) for line in users])
    rng = np.random.default_rng(args.seed)
    keep = set(
        rng.choice(ids, size=max(1, round(args.fraction * len(ids))), replace=False).tolist()
    )
    (out / "users.dat").write_bytes(
        b"".join(u for u, i in zip(users, ids, strict=True) if i in keep)
    )
    kept = 0
    with open(src / "ratings.dat", "rb") as handle, open(out / "ratings.dat", "wb") as dest:
        for line in handle:
            if int(line.split(b"::", 1)[0]) in keep:
                dest.write(line)
                kept += 1
    (out / "movies.dat").write_bytes((src / "movies.dat").read_bytes())
    print(f"{len(keep)} of {len(ids)} users, {kept} ratings written to {out}")


if __name__ == "__main__":
    main()
