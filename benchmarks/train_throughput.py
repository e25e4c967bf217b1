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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    default = Path(os.environ.get("BST_DATA_DIR") or REPO.parent / "shared" / "data") / "ml-1m"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(default))
    parser.add_argument("--prepared", default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    import bst  # noqa: F401  (Keras 2 before TensorFlow)
    from bst import config
    from bst.data.prepare import is_prepared, prepare
    from bst.data.prepared import Prepared
    from bst.model import Tables, build_model
    from bst.pipeline import make_dataset
    from bst.task import BSTTrainer
    from bst.train import resolve_batch_size

    import tensorflow as tf  # isort: skip

    prepared_dir = Path(args.prepared or Path(tempfile.gettempdir()) / "bst-bench-prepared")
    if not is_prepared(prepared_dir):
        prepare(args.data_dir, prepared_dir)
    cfg = config.replace(
        config.ml1m(),
        {"data.prepared_dir": str(prepared_dir), **config.parse_overrides(args.overrides)},
    )
    prepared = Prepared.open(prepared_dir)
    cfg = resolve_batch_size(cfg, prepared)
    model = build_model(cfg, Tables.from_prepared(prepared, cfg.model.text))
    trainer = BSTTrainer(model, cfg)
    trainer.compile(optimizer=tf.keras.optimizers.Adam(cfg.train.learning_rate))
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
