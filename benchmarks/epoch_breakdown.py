"""Where an epoch of training goes: the training steps of one epoch, cut into parts.

    python benchmarks/epoch_breakdown.py [--prepared DIR] [--set model.mask_seen=false ...]
        [--ops 25]

Prepares real ML-1M first when ``--prepared`` has no manifest (as
``benchmarks/train_throughput.py`` does), builds the ``ml1m`` preset with its real
optimizer, and runs every batch of one training epoch through each of these functions,
each traced on every batch beforehand (so no tracing is timed), and prints the seconds
each takes over the epoch:

* ``step``: the whole training step (forward, backward, AdamW update);
* ``forward``: the training loss only (the encoder, the catalog logits, the seen-movie
  mask and the softmax);
* ``forward+backward``: the loss and its gradients, no update;
* ``encoder``: the encoder's forward pass only (embeddings, blocks, head);
* ``encoder+backward``: the encoder and its gradients under a stand-in loss.

Differences between them give the loss's share, the backward pass's and the
optimizer's. ``--ops N`` also records the whole step under TensorFlow's profiler and
prints the N op types and name scopes that took the most time (summed over TensorFlow's
threads, so the total is above the wall time on 2 cores). Validation ranking and the
input pipeline are outside these figures (``bst.train`` logs them per epoch). Run it
alone on the machine.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

from _trainer import DEFAULT_DATA, ml1m_trainer

from bst import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--prepared", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--ops", type=int, default=0, help="profile the step: top N ops")
    args = parser.parse_args()
    print(machine.first_line(), flush=True)  # where these figures are measured
    if args.ops < 0:
        parser.error(f"--ops must be >= 0, got {args.ops}")

    cfg, _, trainer = ml1m_trainer(args.data_dir, args.prepared, args.overrides)

    import tensorflow as tf  # after bst (Keras 2)

    from bst.model import model_inputs
    from bst.pipeline import make_dataset

    trainer.planned_steps.assign(10_000)  # mid-schedule learning rates
    batches = list(make_dataset(cfg, "train"))
    tokens = sum(
        int(tf.reduce_sum(tf.cast(lab["next_movie"] >= 2, tf.int32))) for _, lab in batches
    )

    def forward(features, labels):
        return trainer.compute_loss_terms(features, labels, training=True)

    def forward_backward(features, labels):
        with tf.GradientTape() as tape:
            loss = trainer.compute_loss_terms(features, labels, training=True)
        return loss, tape.gradient(loss, trainer.trainable_variables)

    def encoder(features, labels):
        catalog = trainer.items.all_items(True)
        return trainer.model.encoder(model_inputs(features), training=True, catalog=catalog)

    def encoder_backward(features, labels):
        with tf.GradientTape() as tape:
            query = encoder(features, labels)
            loss = tf.reduce_mean(tf.square(query))  # a stand-in loss over every output
        return loss, tape.gradient(loss, trainer.trainable_variables)

    parts = {
        "step": tf.function(lambda f, lab: trainer.train_step((f, lab))),
        "forward": tf.function(forward),
        "forward+backward": tf.function(forward_backward),
        "encoder": tf.function(encoder),
        "encoder+backward": tf.function(encoder_backward),
    }

    def epoch(fn) -> float:
        start = time.perf_counter()
        for features, labels in batches:
            out = fn(features, labels)
        tf.nest.flatten(out, expand_composites=True)[0].numpy()  # wait for the last step
        return time.perf_counter() - start

    m = cfg.model
    print(
        f"ml1m preset (dim {m.dim}, {m.num_blocks} blocks, max_len {m.max_len}, batch "
        f"{cfg.train.batch_size}, mask_seen {m.mask_seen}, bf16_logits "
        f"{cfg.train.bf16_logits}) on {os.cpu_count()} CPU cores: {len(batches)} steps, "
        f"{tokens:,} target tokens per epoch"
    )
    seconds = {}
    for name, fn in parts.items():
        epoch(fn)  # traces every batch shape (length buckets)
        seconds[name] = epoch(fn)
        print(f"  {name:<17} {seconds[name]:6.2f} s per epoch", flush=True)
    print(
        f"  => loss forward {seconds['forward'] - seconds['encoder']:.2f} s; loss backward "
        f"{seconds['forward+backward'] - seconds['forward'] - seconds['encoder+backward'] + seconds['encoder']:.2f} s; "
        f"optimizer and the rest {seconds['step'] - seconds['forward+backward']:.2f} s"
    )
    if args.ops:
        print_ops(parts["step"], batches, epoch, args.ops)


def print_ops(step, batches, epoch, top: int) -> None:
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = Path(tempfile.mkdtemp(prefix="bst-profile-"))
    tf.profiler.experimental.start(str(logdir))
    epoch(step)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(logdir.rglob("*.xplane.pb")).read_bytes())
    by_type: collections.Counter = collections.Counter()
    by_scope: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith(("ExecutorState", "Eager", "Kernel")):
                    continue
                op, kind = name.rsplit(":", 1)
                if kind.startswith(" __inference") or kind in ("Process", "Run"):
                    continue
                by_type[kind] += event.duration_ps / 1e12
                by_scope["/".join(op.split("/")[:3])] += event.duration_ps / 1e12
    print(f"op types, seconds over one epoch (all threads; trace in {logdir}):")
    for kind, secs in by_type.most_common(top):
        print(f"  {secs:6.2f}  {kind}")
    print("name scopes:")
    for scope, secs in by_scope.most_common(top):
        print(f"  {secs:6.2f}  {scope}")


if __name__ == "__main__":
    main()
