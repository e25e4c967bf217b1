"""Prepare real ML-1M end to end; print wall time, peak memory and tf.data throughput.

    python benchmarks/prepare.py [--data-dir ../shared/data/ml-1m] [--out /tmp/bst-bench]

Targets on the 2-core development machine: prepare <= 20 s and <= 2 GiB peak RSS.
The prepare step runs as a fresh process (``python -m pipelines.prepare``), so its
time includes Python and TensorFlow start-up; throughput is measured afterwards
on the ml1m preset's training pipeline with no model attached.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bst import machine

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    default = Path(os.environ.get("BST_DATA_DIR") or REPO.parent / "shared" / "data") / "ml-1m"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(default))
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int, default=2, help="passes for the throughput figure")
    args = parser.parse_args()
    print(machine.first_line(), flush=True)  # where these figures are measured
    out = Path(args.out or tempfile.mkdtemp(prefix="bst-bench-")) / "prepared"

    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipelines.prepare", "--data-dir", args.data_dir, "--out", str(out)],
        check=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux

    import bst  # noqa: F401
    from bst import config
    from bst.data.prepared import Prepared
    from bst.pipeline import make_dataset
    from bst.train import resolve_batch_size

    cfg = config.replace(config.ml1m(), {"data.prepared_dir": str(out)})
    cfg = resolve_batch_size(cfg, Prepared.open(out))
    ds = make_dataset(cfg, "train")
    rates = []
    for epoch in range(args.epochs):
        t0, examples, tokens = time.perf_counter(), 0, 0
        for feats, _ in ds:
            examples += int(feats["movie_id"].shape[0])
            tokens += int((feats["movie_id"] > 0).numpy().sum())
        rates.append((examples / (time.perf_counter() - t0), tokens / (time.perf_counter() - t0)))
        print(f"pipeline epoch {epoch + 1}: {examples} examples, {tokens} tokens")
    print(f"prepare wall time: {wall:.1f} s (target <= 20 s)")
    print(f"prepare peak memory: {peak_gib:.2f} GiB (target <= 2 GiB)")
    shape = f"max_len {cfg.model.max_len}, batch {cfg.train.batch_size}, no model"
    first, later = rates[0], max(rates[1:], default=rates[0])
    print(
        f"training pipeline throughput ({shape}): first epoch (parsing) {first[0]:,.0f} "
        f"examples/s, {first[1]:,.0f} tokens/s; cached epochs {later[0]:,.0f} examples/s, "
        f"{later[1]:,.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
