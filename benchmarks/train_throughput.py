"""Training throughput of the ml1m preset on this machine: examples/s and tokens/s.

    python benchmarks/train_throughput.py [--prepared DIR] [--steps 30] [--set model.dim=64 ...]

Prepares real ML-1M first when ``--prepared`` has no manifest (from
``--data-dir``, default ``$BST_DATA_DIR/ml-1m`` or ``../shared/data/ml-1m``), then
times ``--steps`` optimizer steps over the first ``--steps`` batches, after one untimed
pass over those same batches that traces every batch shape (length buckets) and fills
the cache: no tracing is timed. Tokens are real (non-padding) positions with a target.
"""

from __future__ import annotations

import argparse
import os
import time

from _trainer import DEFAULT_DATA, ml1m_trainer

from bst import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--prepared", default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    print(machine.first_line(), flush=True)  # where these figures are measured

    import bst  # noqa: F401  (Keras 2 before TensorFlow)

    import tensorflow as tf  # isort: skip

    from bst.pipeline import make_dataset

    cfg, _, trainer = ml1m_trainer(
        args.data_dir,
        args.prepared,
        args.overrides,
        optimizer=lambda cfg: tf.keras.optimizers.Adam(cfg.train.learning_rate),
    )
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    batches = list(make_dataset(cfg, "train", repeat=True).take(args.steps))
    examples = sum(int(f["movie_id"].shape[0]) for f, _ in batches)
    tokens = sum(int((lab["next_movie"] > 0).numpy().sum()) for _, lab in batches)
    step = tf.function(trainer.train_step)
    for batch in batches:  # traces every batch shape: no tracing is timed below
        step(batch)
    start = time.perf_counter()
    for batch in batches:
        loss = step(batch)["loss"]
    float(loss)  # waits for the last step
    seconds = time.perf_counter() - start
    m = cfg.model
    print(
        f"ml1m preset (dim {m.dim}, {m.num_blocks} blocks, {m.num_heads} heads, max_len {m.max_len}, "
        f"batch {cfg.train.batch_size}, loss {m.loss}) on {os.cpu_count()} CPU cores:"
    )
    print(
        f"training throughput: {examples / seconds:,.1f} examples/s, {tokens / seconds:,.0f} "
        f"tokens/s ({seconds / args.steps * 1000:.0f} ms/step over {args.steps} steps)"
    )


if __name__ == "__main__":
    main()
