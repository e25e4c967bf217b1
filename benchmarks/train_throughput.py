"""Training throughput of the ml1m preset on this machine: examples/s and tokens/s.

    python benchmarks/train_throughput.py [--prepared DIR] [--steps 30] [--set model.dim=64 ...]

Prepares real ML-1M first when ``--prepared`` has no manifest (from
``--data-dir``, default ``$BST_DATA_DIR/ml-1m`` or ``../shared/data/ml-1m``), then
times ``--steps`` optimizer steps after ``--warmup`` untimed ones (tracing,
cache filling). Tokens are real (non-padding) positions with a target.
"""

from __future__ import annotations

import argparse
import os
import time

from _trainer import DEFAULT_DATA, ml1m_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--prepared", default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    import bst  # noqa: F401  (Keras 2 before TensorFlow)

    import tensorflow as tf  # isort: skip

    from bst.pipeline import make_dataset

    cfg, _, trainer = ml1m_trainer(
        args.data_dir,
        args.prepared,
        args.overrides,
        optimizer=lambda cfg: tf.keras.optimizers.Adam(cfg.train.learning_rate),
    )
    batches = iter(make_dataset(cfg, "train", repeat=True))
    step = tf.function(trainer.train_step)

    def run(n: int) -> tuple[int, int]:
        examples = tokens = 0
        for _ in range(n):
            features, labels = next(batches)
            examples += int(features["movie_id"].shape[0])
            tokens += int((labels["next_movie"] > 0).numpy().sum())
            step((features, labels))
        return examples, tokens

    run(args.warmup)
    start = time.perf_counter()
    examples, tokens = run(args.steps)
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
