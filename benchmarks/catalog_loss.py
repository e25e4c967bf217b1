"""The losses at growing catalogs: steps/s and peak memory of the full softmax in one
pass, in chunks, and of the sampled softmax with shared negatives.

    python benchmarks/catalog_loss.py                       # 3,706 / 26,744 / 59,047 / 84,432 movies
    python benchmarks/catalog_loss.py --movies 59047 --steps 3 --modes chunks,sampled

One loss step (forward and backward, as in training) with the seen mask, on a batch
shaped like ML-1M's default (128 windows of up to 200 events, dim 64; about 20,000
real tokens), at each catalog size: the full softmax once in one pass and once in
chunks of tokens under ``train.logits_mib`` (2048 MiB; :func:`bst.task.loss_chunk`),
and the sampled softmax over ``model.num_negatives`` (2048) shared negatives
(:class:`bst.task.SharedNegatives`, drawn from a popularity law). Each measurement is
its own process, so its peak RSS is the loss's own. The first line says the CPU, its
vector extensions, TensorFlow's version and its threads.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = (3_706, 26_744, 59_047, 84_432)  # ML-1M, ML-20M, ML-25M, ML-32M rated movies


MODES = ("one-pass", "chunks", "sampled")


def one(movies: int, mode: str, steps: int, seed: int = 0) -> dict:
    """Runs in the child: time ``steps`` loss steps after one warm-up; returns figures."""
    import time

    import numpy as np

    import bst  # noqa: F401  (Keras 2 before TensorFlow)
    from bst import config
    from bst.devices import cpu_has_fast_bf16
    from bst.loss_choice import loss_step
    from bst.task import logits_bytes_per_entry, loss_chunk

    batch = 128
    # ML-1M's shapes (windows of up to 200 events, dim 64); bfloat16 logits where
    # bst.train uses them: not under ONEDNN_MAX_CPU_ISA=AVX2
    cfg = config.replace(
        config.ml1m(), {"train.batch_size": batch, "train.bf16_logits": cpu_has_fast_bf16()}
    )
    # the chunk train.logits_mib gives (at ML-1M's size one chunk holds every token:
    # the chunked path's own cost, the softmax twice)
    per_row = movies * logits_bytes_per_entry(cfg.train.bf16_logits, cfg.model.mask_seen)
    chunk = (
        (loss_chunk(cfg, movies) or int(cfg.train.logits_mib * 2**20 // per_row))
        if mode == "chunks"
        else None
    )
    popularity = (np.arange(movies) + 20.0) ** -1.1 * 1e7  # Zipf-like, as generated data
    step, tokens, negatives = loss_step(
        cfg, movies, "sampled" if mode == "sampled" else "softmax", chunk, popularity, seed
    )

    step()  # trace and warm up
    started = time.perf_counter()
    for _ in range(steps):
        loss, _ = step()
    seconds = (time.perf_counter() - started) / steps
    return {
        "movies": movies,
        "mode": (
            f"chunks of {chunk:,} tokens"
            if chunk
            else f"sampled, {negatives.num:,} shared negatives"
            if mode == "sampled"
            else "one pass"
        ),
        "tokens": tokens,
        "seconds_per_step": round(seconds, 3),
        "steps_per_second": round(1.0 / seconds, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "loss": float(loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movies", type=int, action="append", default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # movies,mode
        movies, mode = args.child.split(",")
        print(json.dumps(one(int(movies), mode, args.steps)))
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}; got {args.modes!r}")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    import tensorflow as tf

    from bst import machine

    print(machine.line(machine.describe(tf)))
    print("| movies | mode | tokens | s/step | steps/s | peak RSS (GiB) | loss |")
    print("|---|---|---|---|---|---|---|")
    for movies in args.movies or SIZES:
        for mode in modes:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    f"{movies},{mode}",
                    "--steps",
                    str(args.steps),
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            if done.returncode:
                tail = (done.stderr.strip().splitlines() or ["?"])[-1][:120]
                print(f"| {movies:,} | {mode} | | failed: {tail} | | | |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {movies:,} | {r['mode']} | {r['tokens']:,} | {r['seconds_per_step']} | "
                f"{r['steps_per_second']} | {r['peak_rss_gib']} | {r['loss']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
