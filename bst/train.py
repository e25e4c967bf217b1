"""Train BST: ``python -m bst.train``.

    python -m bst.train --preset tiny --run-dir runs/tiny            # seconds, synthetic data
    python -m bst.train --preset ml1m --data-dir ../shared/data/ml-1m --run-dir runs/ml1m
    python -m bst.train --preset ml1m --set model.num_blocks=3 --set train.learning_rate=5e-4

Prepares the data when ``<run-dir>/prepared`` (or ``data.prepared_dir``) is missing,
trains with full-ranking validation HR@10/NDCG@10 after every epoch and early
stopping on validation NDCG@10 (best weights restored), then evaluates on the test
split next to the popularity baseline. Writes into the run folder:

* ``config.json``: the resolved config; ``metrics.json``: test metrics, baselines,
  epochs, train seconds;
* ``logs/``: TensorBoard events (per-step loss and learning rate, per-epoch
  validation metrics, hparams, movie embeddings in the projector);
* ``backup/``: training state after each epoch, so a killed run resumes from its
  last completed epoch when the same command is run again;
* ``model.weights.h5``: the best weights.

Devices: ``--tpu NAME`` uses TPUStrategy; ``TF_CONFIG`` listing several workers uses
MultiWorkerMirroredStrategy; several GPUs use MirroredStrategy; otherwise the
default strategy. ``train.mixed_precision`` switches to mixed float16 (GPU) or
bfloat16 (TPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import config as config_lib
from bst import features as F
from bst.config import Config
from bst.data.errors import DataError

import tensorflow as tf  # isort: skip

log = logging.getLogger("bst.train")

KS = (1, 5, 10, 20)


# --- devices -------------------------------------------------------------------


def task_info() -> tuple[str, int, int]:
    """(task type, task index, number of workers) from TF_CONFIG (chief/worker 0 if unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "worker", 0, 1
    tf_config = json.loads(raw)
    cluster = tf_config.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    task = tf_config.get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0)), max(workers, 1)


def is_chief() -> bool:
    """The chief writes the run's files; other workers keep theirs apart."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    tf_config = json.loads(raw)
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def make_strategy(tpu: str | None = None) -> tf.distribute.Strategy:
    if tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if task_info()[2] > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name of a strategy (MultiWorkerMirroredStrategy's class is CollectiveAllReduce...)."""
    for name in ("TPUStrategy", "MultiWorkerMirroredStrategy", "MirroredStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return "default"


def set_precision(cfg: Config, strategy: tf.distribute.Strategy) -> str:
    policy = "float32"
    if cfg.train.mixed_precision:
        policy = (
            "mixed_bfloat16" if isinstance(strategy, tf.distribute.TPUStrategy) else "mixed_float16"
        )
    tf.keras.mixed_precision.set_global_policy(policy)
    return policy


# --- data ----------------------------------------------------------------------


def resolve_data(cfg: Config, run_dir: Path) -> Config:
    """Fill in data.prepared_dir, preparing (or generating synthetic) data when missing."""
    from pipelines.prepare import is_prepared, prepare

    prepared = Path(cfg.data.prepared_dir or run_dir / "prepared").resolve()
    cfg = config_lib.replace(cfg, {"data.prepared_dir": str(prepared)})
    if is_prepared(prepared):
        log.info("using prepared data in %s", prepared)
        return cfg
    if not is_chief():
        log.info("waiting for the chief to prepare %s", prepared)
        for _ in range(600):
            if is_prepared(prepared):
                return cfg
            time.sleep(1)
        raise DataError(f"the chief did not prepare {prepared} within 10 minutes", prepared)
    data_dir = cfg.data.data_dir
    if cfg.data.synthetic:
        from bst.data.synthetic import generate

        data_dir = str(run_dir / "synthetic")
        generate(
            data_dir,
            users=cfg.data.synthetic_users,
            movies=cfg.data.synthetic_movies,
            seed=cfg.train.seed,
        )
    elif not data_dir:
        data_dir = str(config_lib.default_data_dir())
    log.info("preparing %s data from %s into %s", cfg.data.format, data_dir, prepared)
    prepare(
        data_dir,
        prepared,
        cfg.data.format,
        cfg.data.side_data_dir or None,
        cfg.data.num_shards,
        cfg.data.enriched or None,
    )
    return cfg


def count_train_windows(prepared, max_len: int, all_windows: bool) -> tuple[int, np.ndarray]:
    """Training examples per epoch, and training-interaction counts per item index."""
    from bst.metrics import read_sequences

    sequences = read_sequences(prepared.folder).train()
    windows = sum(
        (math.ceil((len(s) - 1) / max_len) if all_windows else 1) for s in sequences if len(s) >= 2
    )
    counts = np.bincount(np.concatenate(sequences), minlength=prepared.vocab_size(F.MOVIE_ID))
    return windows, counts


# --- evaluation during and after training --------------------------------------


def predict_scores(
    model: tf.keras.Model, cfg: Config, split: str, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, last-position scores ``[U, N]``) for every evaluated user of ``split``.

    Users are scored in order of history length, each batch cut to its longest
    history: padded positions take no part, so this changes no score and skips
    about half the work on ML-1M.
    """
    from bst.model import model_inputs
    from bst.pipeline import make_dataset

    @tf.function(reduce_retracing=True)
    def scores_of(features):
        return model(features, training=False)["scores"]

    parts: dict[str, list[np.ndarray]] = {}
    for features, _ in make_dataset(cfg, split, batch_size=1024, shuffle=False):
        for name, value in {**model_inputs(features), F.USER_ID: features[F.USER_ID]}.items():
            parts.setdefault(name, []).append(value.numpy())
    data = {name: np.concatenate(values) for name, values in parts.items()}
    users = data.pop(F.USER_ID).astype(str)
    lengths = (data[F.MOVIE_ID] > 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    scores = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        keep = max(int(lengths[rows].max()), 1)
        batch = {
            name: (value[rows][:, -keep:] if value.ndim == 2 else value[rows])
            for name, value in data.items()
        }
        out = scores_of(batch).numpy()
        if scores is None:
            scores = np.empty((len(users), out.shape[1]), np.float32)
        scores[rows] = out
    return users, scores


def rank_metrics(model: tf.keras.Model, cfg: Config, split: str, data=None) -> dict:
    """Full-ranking metrics of the model on ``split`` (seen items excluded)."""
    from bst.metrics import evaluate_scores, load_eval_data

    data = data or load_eval_data(cfg.data.prepared_dir, split)
    users, scores = predict_scores(model, cfg, split)
    order = {u: i for i, u in enumerate(users)}
    rows = np.array([order[u] for u in data.user_ids])
    scores = scores[rows]
    metrics, _, _ = evaluate_scores(lambda idx: scores[idx], data, ks=KS)
    return metrics


class RankingCallback(tf.keras.callbacks.Callback):
    """After each epoch: validation HR@10/NDCG@10/MRR by full ranking, into logs and TensorBoard."""

    def __init__(self, cfg: Config, writer: tf.summary.SummaryWriter | None):
        super().__init__()
        from bst.metrics import load_eval_data

        self.cfg = cfg
        self.writer = writer
        self.data = load_eval_data(cfg.data.prepared_dir, "validation")
        self.started = time.perf_counter()
        self.last_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self.last_epoch = epoch + 1
        metrics = rank_metrics(self.model.model, self.cfg, "validation", self.data)
        for key in ("hr@10", "ndcg@10", "mrr"):
            logs[f"val_{key}"] = metrics[key]
        if self.writer is not None:
            with self.writer.as_default(step=epoch + 1):
                for key in (
                    "hr@1",
                    "hr@5",
                    "hr@10",
                    "hr@20",
                    "ndcg@5",
                    "ndcg@10",
                    "ndcg@20",
                    "mrr",
                ):
                    if key in metrics:
                        tf.summary.scalar(f"validation/{key}", metrics[key])
                tf.summary.scalar("train/epoch_loss", logs.get("loss", float("nan")))
            self.writer.flush()
        log.info(
            "epoch %d: loss %.4f, val HR@10 %.4f, NDCG@10 %.4f, MRR %.4f (%.1f s)",
            epoch + 1,
            logs.get("loss", float("nan")),
            metrics["hr@10"],
            metrics["ndcg@10"],
            metrics["mrr"],
            time.perf_counter() - self.started,
        )


class TimeBudget(tf.keras.callbacks.Callback):
    """Stop after the epoch that would make the next one overrun ``minutes`` (0 = no budget)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60.0
        self.started = time.perf_counter()
        self.epoch_started = self.started
        self.stopped_epoch: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if self.seconds and (now - self.started) + (now - self.epoch_started) > self.seconds:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            log.info("time budget of %.0f min reached after epoch %d", self.seconds / 60, epoch + 1)


class StepLogger(tf.keras.callbacks.Callback):
    """Per-step loss and learning rate to TensorBoard (every ``every`` steps)."""

    def __init__(self, writer: tf.summary.SummaryWriter, every: int = 10):
        super().__init__()
        self.writer, self.every = writer, every

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every and step != 1:
            return
        lr = self.model.optimizer.learning_rate
        lr = lr(step) if callable(lr) else lr
        with self.writer.as_default(step=step):
            tf.summary.scalar("train/loss", float((logs or {}).get("loss", float("nan"))))
            tf.summary.scalar("train/learning_rate", float(tf.keras.backend.get_value(lr)))


@tf.keras.utils.register_keras_serializable(package="bst")
class WarmupSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak`` over ``warmup`` steps, then constant."""

    def __init__(self, peak: float, warmup: int):
        self.peak, self.warmup = float(peak), int(warmup)

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0
        return self.peak * tf.minimum(1.0, step / max(self.warmup, 1))

    def get_config(self):
        return {"peak": self.peak, "warmup": self.warmup}


def make_optimizer(cfg: Config) -> tf.keras.optimizers.Optimizer:
    """Adam with warm-up (AdamW when ``train.weight_decay`` > 0)."""
    schedule = WarmupSchedule(cfg.train.learning_rate, cfg.train.warmup_steps)
    if cfg.train.weight_decay > 0:
        return tf.keras.optimizers.AdamW(schedule, weight_decay=cfg.train.weight_decay, beta_2=0.98)
    return tf.keras.optimizers.Adam(schedule, beta_2=0.98)


def weights_digest(model: tf.keras.Model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def write_projector(model: tf.keras.Model, cfg: Config, logdir: Path) -> None:
    """Movie embeddings labelled with titles, for TensorBoard's projector."""
    from tensorboard.plugins import projector

    from bst.model import item_embedding_layer
    from bst.pipeline import Prepared

    prepared = Prepared.open(cfg.data.prepared_dir)
    titles = dict(
        zip(prepared.movies["movie_id"].astype(str), prepared.movies["title"], strict=True)
    )
    vocab = prepared.vocabs[F.MOVIE_ID]
    embeddings = item_embedding_layer(model).all_items().numpy()[F.NUM_RESERVED :]
    folder = logdir / "projector"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.tsv", "w", encoding="utf-8") as out:
        out.write("title\tmovie_id\n")
        for token in vocab:
            out.write(f"{titles.get(token, token).replace(chr(9), ' ')}\t{token}\n")
    variable = tf.Variable(embeddings, name="movie_embeddings")
    tf.train.Checkpoint(embedding=variable).save(str(folder / "embedding.ckpt"))
    pconfig = projector.ProjectorConfig()
    emb = pconfig.embeddings.add()
    emb.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    emb.metadata_path = "metadata.tsv"
    projector.visualize_embeddings(str(folder), pconfig)


def write_hparams(cfg: Config, writer: tf.summary.SummaryWriter, run_name: str) -> None:
    from tensorboard.plugins.hparams import api as hp

    flat = {
        "model.dim": cfg.model.dim,
        "model.num_blocks": cfg.model.num_blocks,
        "model.num_heads": cfg.model.num_heads,
        "model.max_len": cfg.model.max_len,
        "model.dropout": cfg.model.dropout,
        "model.loss": cfg.model.loss,
        "train.learning_rate": cfg.train.learning_rate,
        "train.batch_size": cfg.train.batch_size,
    }
    with writer.as_default():
        hp.hparams(flat, trial_id=run_name)


# --- the run -------------------------------------------------------------------


def format_table(rows: dict[str, dict], keys: Sequence[str]) -> str:
    head = "| model | " + " | ".join(keys) + " |"
    sep = "|---" * (len(keys) + 1) + "|"
    body = [
        f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |"
        for name, m in rows.items()
    ]
    return "\n".join([head, sep, *body])


def train(
    cfg: Config, run_dir: str | Path, tpu: str | None = None, export_dir: str | None = None
) -> dict:
    """Train, evaluate and write the run folder; returns the metrics dict."""
    from bst.baselines import ItemTransition, Popularity
    from bst.metrics import evaluate_scores, load_eval_data
    from bst.model import BSTTrainer, Tables, build_model
    from bst.pipeline import Prepared, make_dataset

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    chief = is_chief()
    kind, index, workers = task_info()
    strategy = make_strategy(tpu)
    cfg = resolve_data(cfg, run_dir)
    if chief:
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    policy = set_precision(cfg, strategy)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    prepared = Prepared.open(cfg.data.prepared_dir)
    windows, item_counts = count_train_windows(prepared, cfg.model.max_len, cfg.data.all_windows)
    steps = cfg.train.steps_per_epoch or max(1, math.ceil(windows / cfg.train.batch_size))
    log.info(
        "%d training examples, %d steps/epoch, batch %d, %d replica(s), %s, policy %s",
        windows,
        steps,
        cfg.train.batch_size,
        strategy.num_replicas_in_sync,
        strategy_name(strategy),
        policy,
    )

    with strategy.scope():
        model = build_model(cfg, Tables.from_prepared(prepared))
        trainer = BSTTrainer(model, cfg, item_frequency=item_counts)
        trainer.compile(optimizer=make_optimizer(cfg), steps_per_execution=1)
        uncached = config_lib.replace(cfg, {"data.cache": False})  # read 2 rows, cache none
        sample, _ = next(iter(make_dataset(uncached, "validation", batch_size=2, shuffle=False)))
        trainer(sample, training=False)  # build now: BackupAndRestore needs built weights

    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(
            cfg, "train", input_context=ctx, repeat=True, drop_remainder=workers > 1
        )
    )
    logdir = run_dir / "logs" if chief else run_dir / "workers" / f"{kind}-{index}" / "logs"
    writer = tf.summary.create_file_writer(str(logdir / "train"))
    write_hparams(cfg, writer, run_dir.name)
    callbacks = [
        RankingCallback(cfg, writer),
        tf.keras.callbacks.EarlyStopping(
            monitor="val_ndcg@10",
            mode="max",
            patience=cfg.train.patience,
            restore_best_weights=True,
        ),
        tf.keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        tf.keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: log.info("epoch %d: state backed up", epoch + 1)
        ),
        StepLogger(writer),
        TimeBudget(cfg.train.max_minutes),
    ]
    started = time.perf_counter()
    history = trainer.fit(
        train_ds,
        epochs=cfg.train.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=2 if sys.stdout.isatty() else 0,
    )
    train_seconds = time.perf_counter() - started
    epochs = callbacks[0].last_epoch  # counts epochs before a resume too
    this_run = len(history.history.get("loss", []))
    best = callbacks[1].best if callbacks[1].best is not None else float("nan")

    test_data = load_eval_data(cfg.data.prepared_dir, "test")
    test = rank_metrics(model, cfg, "test", test_data)
    baselines = {}
    for baseline in (Popularity(), ItemTransition()):
        baseline.fit(prepared.folder)
        baselines[baseline.name], _, _ = evaluate_scores(
            baseline.scorer(test_data), test_data, ks=KS
        )
    result = {
        "test": test,
        "baselines": baselines,
        "validation": {"best_ndcg@10": float(best), "best_epoch": callbacks[1].best_epoch + 1},
        "epochs": epochs,
        "stopped_by": (
            "time budget"
            if callbacks[-1].stopped_epoch
            else "early stopping"
            if callbacks[1].stopped_epoch
            else "max epochs"
        ),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(this_run, 1), 1),
        "examples_per_epoch": windows,
        "strategy": strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "weights_sha256": weights_digest(model),
    }
    keys = ["hr@1", "hr@5", "hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr", "coverage@10"]
    table = format_table({"BST": test, **baselines}, keys)
    if chief:
        model.save_weights(str(run_dir / "model.weights.h5"))
        if export_dir:
            from bst.export import export

            result["exported"] = str(export(run_dir, export_dir))
        (run_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        (run_dir / "report.md").write_text(f"# Test metrics ({cfg.preset})\n\n{table}\n")
        write_projector(model, cfg, logdir)
        with writer.as_default(step=epochs):
            for key in ("hr@10", "ndcg@10", "mrr"):
                tf.summary.scalar(f"test/{key}", test[key])
        writer.flush()
    else:
        out = run_dir / "workers" / f"{kind}-{index}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"\nTest split, full ranking, seen items excluded ({test['users']} users):\n{table}")
    print(f"{epochs} epochs, {train_seconds:.0f} s; run folder: {run_dir}")
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bst.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ml1m", choices=sorted(config_lib.PRESETS))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set model.num_blocks=2 (repeatable)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="raw data folder (default $BST_DATA_DIR or ~/.cache/bst)"
    )
    parser.add_argument("--format", choices=("ml1m", "sasrec"), default=None)
    parser.add_argument("--run-dir", default=None, help="run folder (default runs/<preset>)")
    parser.add_argument("--tpu", default=None, help="TPU name or address: use TPUStrategy")
    parser.add_argument(
        "--export-dir",
        default="saved_models/bst",
        help="export the trained model here as the next SavedModel version ('' to skip)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = config_lib.preset(args.preset)
        updates = config_lib.parse_overrides(args.overrides)
        if args.data_dir:
            updates["data.data_dir"] = args.data_dir
        if args.format:
            updates["data.format"] = args.format
        cfg = config_lib.replace(cfg, updates)
        return train(
            cfg, args.run_dir or f"runs/{args.preset}", tpu=args.tpu, export_dir=args.export_dir
        )
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
