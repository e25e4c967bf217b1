"""Time to quality of the default preset: epoch time and when validation NDCG@10 gets there.

    python benchmarks/time_to_quality.py [--data-dir ../shared/data/ml-1m] [--format ml1m]
        [--preset ml1m] [--run-dir /tmp/bst-ttq] [--set train.max_minutes=30 ...]

Runs ``bst.train`` (the default ``ml1m`` preset, or ``--preset``, plus ``--set``
overrides; prepared data is reused from ``--prepared`` when it is there) and prints: the median epoch time
(validation included), the seconds since this command started at which validation
NDCG@10 first reached each of ``MARKS`` (0.10 to 0.19), and the final test metrics next to the
item-transition baseline. The test split is read once, at the end, by ``bst.train``.
Run it alone on the machine: every figure is wall-clock time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bst import machine

REPO = Path(__file__).resolve().parents[1]
MARKS = (0.10, 0.15, 0.17, 0.18, 0.19)


def main() -> None:
    started = time.time()
    import bst  # noqa: F401  (Keras 2 before TensorFlow; imports neither)
    from bst import config

    default = Path(os.environ.get("BST_DATA_DIR") or REPO.parent / "shared" / "data") / "ml-1m"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(default))
    parser.add_argument("--format", default="ml1m", choices=("ml1m", "sasrec"))
    parser.add_argument(
        "--preset", default="ml1m", choices=[p for p in config.PRESETS if p != "tiny"]
    )
    parser.add_argument("--side-data-dir", default=None, help="sasrec: movies.dat/users.dat")
    parser.add_argument("--prepared", default=None, help="prepared folder to reuse or write")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    print(machine.first_line(), flush=True)  # where these figures are measured

    from bst import cli
    from bst import train as train_cli

    cli.setup_logging()  # bst's lines, as python -m bst.train shows them
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bst-ttq-"))
    updates = {"data.data_dir": args.data_dir, "data.format": args.format}
    if args.side_data_dir:
        updates["data.side_data_dir"] = args.side_data_dir
    if args.prepared:
        updates["data.prepared_dir"] = args.prepared
    updates.update(config.parse_overrides(args.overrides))
    cfg = config.replace(config.preset(args.preset), updates)
    result = train_cli.train(cfg, run_dir, export_dir=None)
    history = result["history"]
    seconds = [row["seconds"] for row in history]
    print(
        f"\n{len(history)} epochs; median epoch {statistics.median(seconds):.1f} s (validation included)"
    )
    for mark in MARKS:
        reached = [row for row in history if row["val_ndcg@10"] >= mark]
        if reached:
            row = reached[0]
            print(
                f"validation NDCG@10 >= {mark:.2f}: epoch {row['epoch']}, "
                f"{row['unix_time'] - started:.0f} s after start"
            )
        else:
            print(f"validation NDCG@10 >= {mark:.2f}: not reached")
    best = max(history, key=lambda row: row["val_ndcg@10"])
    print(f"best validation NDCG@10 {best['val_ndcg@10']:.4f} at epoch {best['epoch']}")
    test, base = result["test"], result["baselines"]["item_transition"]
    print(
        f"test: NDCG@10 {test['ndcg@10']:.4f}, HR@10 {test['hr@10']:.4f} "
        f"(item transitions {base['ndcg@10']:.4f} / {base['hr@10']:.4f}); "
        f"{time.time() - started:.0f} s in all, stopped by {result['stopped_by']}"
    )


if __name__ == "__main__":
    main()
