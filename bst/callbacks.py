"""Keras callbacks of a training run, and what it writes for TensorBoard.

* :class:`RankingCallback`: validation metrics by full ranking after every epoch;
* :class:`PlannedEarlyStopping`: early stopping whose patience follows the planned run;
* :class:`AverageWeights`: validation and early stopping on the moving average of the
  weights (``train.ema``);
* :class:`TimeBudget`: stop before the next epoch would overrun ``train.max_minutes``
  (of the whole run, on :class:`bst.clock.RunClock`);
* :class:`StepLogger`: per-step loss and learning rate;
* :class:`BackupLogger`: a log line when the state has been backed up;
* :func:`write_projector`, :func:`write_hparams`: the embedding projector and hparams.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2
from tensorboard.plugins import projector
from tensorboard.plugins.hparams import api as hp
from tqdm.auto import tqdm

from bst import features as F
from bst.clock import RunClock
from bst.config import Config
from bst.data.prepared import Prepared
from bst.metrics import EPOCH_METRICS, KS, load_eval_data, metric_names
from bst.optim import restore, swap_average
from bst.scoring import Scorer, SplitInputs, rank_metrics

log = logging.getLogger("bst.train")


class RankingCallback(tf.keras.callbacks.Callback):
    """After each epoch: validation metrics by full ranking, into ``logs`` (``val_<name>``),
    the log and TensorBoard."""

    def __init__(
        self,
        cfg: Config,
        writer: tf.summary.SummaryWriter | None,
        history: Path | None = None,
        budget_minutes: float = 0.0,
        prepared: Prepared | None = None,
        clock: RunClock | None = None,
        pass_steps: int = 0,
    ):
        super().__init__()
        self.cfg = cfg
        # steps of a pass over the training data: epochs shorter than it say where they are
        self.pass_steps = pass_steps
        self.validation_seconds = 0.0  # the last validation's, what the budget keeps for one
        self.writer = writer
        self.history = history  # one JSON line per epoch, appended (survives resumes)
        self.budget = budget_minutes * 60.0
        self.clock = clock or RunClock(tf.Variable(0.0, dtype=tf.float64, trainable=False))
        every = load_eval_data(prepared or cfg.data.prepared_dir, "validation")
        # many users: a fixed sample validates each epoch (the test split ranks them all)
        self.data = every.sample(cfg.train.val_users, cfg.train.seed)
        self.inputs = SplitInputs.read(cfg, "validation")  # featurized once for every epoch
        if self.data is not every:
            self.inputs = self.inputs.subset(self.data.user_ids)
            log.info(
                "validation ranks a fixed sample of %d of %d users each epoch "
                "(train.val_users; the test split ranks every user)",
                self.data.num_users,
                every.num_users,
            )
        self.scorer: Scorer | None = None
        self.started = 0.0
        self.last_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.clock.now()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self.last_epoch = epoch + 1
        if self.scorer is None:
            self.scorer = Scorer(self.model.model)
        validating = self.clock.now()
        metrics = rank_metrics(
            self.model.model, self.cfg, "validation", self.data, self.inputs, self.scorer
        )
        self.validation_seconds = self.clock.now() - validating
        for key in EPOCH_METRICS:
            logs[f"val_{key}"] = metrics[key]
        if self.writer is not None:
            with self.writer.as_default(step=epoch + 1):
                for key in metric_names(KS):
                    if key in metrics:
                        tf.summary.scalar(f"validation/{key}", metrics[key])
                tf.summary.scalar("train/epoch_loss", logs.get("loss", float("nan")))
            self.writer.flush()
        seconds = self.clock.now() - self.started
        elapsed = self.clock.elapsed()  # the whole run's, resumes included
        left = f", about {_duration(max(self.budget - elapsed, 0))} of budget left"
        left = left if self.budget else ""
        step = int(self.model.optimizer.iterations.numpy())
        where = ""
        if self.pass_steps and self.cfg.train.steps_per_epoch < self.pass_steps:
            where = f" (step {step:,}, {step / self.pass_steps:.2f} passes over the data)"
        log.info(
            "epoch %d%s: loss %.4f, val HR@10 %.4f, NDCG@10 %.4f, MRR %.4f (%.1f s; %.1f min in%s)",
            epoch + 1,
            where,
            logs.get("loss", float("nan")),
            metrics["hr@10"],
            metrics["ndcg@10"],
            metrics["mrr"],
            seconds,
            elapsed / 60,
            left,
        )
        if self.history is not None:
            optimizer = self.model.optimizer
            row = {
                "epoch": epoch + 1,
                "loss": float(logs.get("loss", float("nan"))),
                "seconds": round(seconds, 2),
                "elapsed_seconds": round(elapsed, 1),
                "unix_time": round(time.time(), 2),
                "step": step,
                # the rate the epoch's last step (number `step`, counting from 1) used,
                # as TensorBoard's train/learning_rate at that step
                "learning_rate": last_learning_rate(optimizer),
                **{f"val_{k}": float(metrics[k]) for k in metric_names(KS) if k in metrics},
            }
            with open(self.history, "a", encoding="utf-8") as out:
                out.write(json.dumps(row, sort_keys=True) + "\n")


def _duration(seconds: float) -> str:
    """``seconds`` as a person reads them: seconds under two minutes, else minutes."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def read_history(path: Path) -> list[dict]:
    """The per-epoch rows :class:`RankingCallback` appended (the last row per epoch wins)."""
    if not path.is_file():
        return []
    rows: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[int(row["epoch"])] = row
    return [rows[k] for k in sorted(rows)]


class Progress(tf.keras.callbacks.Callback):
    """A progress bar per epoch (step/steps, loss, steps/s, ETA) on a terminal; nothing
    when the output is not one (logs and CI keep one line per epoch)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = tqdm(
            total=self.steps, desc=f"epoch {epoch + 1}", unit="step", leave=False, disable=None
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PlannedEarlyStopping(tf.keras.callbacks.EarlyStopping):
    """Early stopping on a validation metric (best weights restored) whose patience, when
    ``patience`` is -1, is a fifth of the planned epochs (``planned`` steps, which
    :class:`bst.optim.SchedulePlanner` keeps current, over ``steps`` per epoch) and at
    least ``MIN_PATIENCE``: 16 epochs for ML-1M's 80 planned ones, 40 for a small dataset
    whose 200 epochs take 6 steps each. Any other ``patience`` is used as given."""

    MIN_PATIENCE = 10
    STATE, WEIGHTS = "early_stopping.json", "best_weights.npz"

    def __init__(
        self,
        patience: int,
        planned: tf.Variable,
        steps: int,
        backup: Path | None = None,
        **kwargs,
    ):
        self.auto = patience < 0
        super().__init__(patience=self.MIN_PATIENCE if self.auto else patience, **kwargs)
        self.planned, self.steps = planned, max(int(steps), 1)
        self.said = False
        self.backup = backup  # where save_state writes and a resumed run reads
        self._saved_best_epoch: int | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = self.backup / self.STATE if self.backup is not None else None
        if state is None or not state.is_file():
            return
        # A resumed run: the best epoch so far, its weights and the epochs since it,
        # as of the last backup, so neither the count nor the best weights start afresh.
        saved = json.loads(state.read_text(encoding="utf-8"))
        self.best, self.best_epoch, self.wait = saved["best"], saved["best_epoch"], saved["wait"]
        with np.load(self.backup / self.WEIGHTS) as weights:
            self.best_weights = [weights[f"w{i}"] for i in range(len(weights.files))]
        self._saved_best_epoch = self.best_epoch
        log.info(
            "resumed early stopping: best %s %.4f at epoch %d, %d epoch(s) since",
            self.monitor,
            self.best,
            self.best_epoch + 1,
            self.wait,
        )

    def save_state(self, epoch: int) -> None:
        """Writes the best epoch, its weights (when they changed) and the epochs since it
        into the backup folder: called once ``BackupAndRestore`` has saved ``epoch``."""
        if self.backup is None or self.best_weights is None:
            return
        self.backup.mkdir(parents=True, exist_ok=True)
        if self._saved_best_epoch != self.best_epoch:
            part = self.backup / f".{self.WEIGHTS}.part"
            with open(part, "wb") as out:
                np.savez(out, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            part.replace(self.backup / self.WEIGHTS)
            self._saved_best_epoch = self.best_epoch
        state = {"best": float(self.best), "best_epoch": int(self.best_epoch)}
        state.update(wait=int(self.wait), epoch=epoch + 1)
        part = self.backup / f".{self.STATE}.part"
        part.write_text(json.dumps(state) + "\n", encoding="utf-8")
        part.replace(self.backup / self.STATE)

    def on_epoch_end(self, epoch, logs=None):
        if self.auto:
            epochs = int(self.planned.numpy()) / self.steps
            self.patience = max(self.MIN_PATIENCE, math.ceil(epochs / 5))
            if not self.said:
                log.info(
                    "early stopping: at %d epochs without a better %s (a fifth of the "
                    "planned %.0f, at least %d; set train.patience to choose)",
                    self.patience,
                    self.monitor,
                    epochs,
                    self.MIN_PATIENCE,
                )
                self.said = True
        super().on_epoch_end(epoch, logs)


class AverageWeights(tf.keras.callbacks.Callback):
    """With ``train.ema``: from the end of each epoch's steps the model holds the moving
    average of its weights, until :attr:`restore` (a second callback, listed after early
    stopping and before the backup) puts the trained weights back. Validation and early
    stopping's best weights are thus the average's, the backups the trained weights
    (the average is saved with the optimizer). At the end of training Keras writes the
    average into the model and early stopping then restores the best epoch's average.
    Without a moving average both do nothing."""

    def __init__(self):
        super().__init__()
        self.saved: list | None = None
        self.restore = _RestoreTrained(self)

    def on_epoch_end(self, epoch, logs=None):
        self.saved = swap_average(self.model.optimizer, self.model.trainable_variables)


class _RestoreTrained(tf.keras.callbacks.Callback):
    def __init__(self, owner: AverageWeights):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        restore(self.model.trainable_variables, self.owner.saved)
        self.owner.saved = None


class TimeBudget(tf.keras.callbacks.Callback):
    """Keeps training inside ``minutes`` (0 = no budget) of the whole run's training time
    (``clock``: a resumed run has the rest): stops after the epoch that would make the
    next one overrun it, and within an epoch at the step after which what is left would
    not cover a validation (``reserve()``, the last one's seconds), for epochs longer
    than the budget. Keras still ends that epoch (validation, early stopping, backup),
    so the run ends with validated weights either way."""

    def __init__(self, minutes: float, clock: RunClock, reserve=lambda: 0.0):
        super().__init__()
        self.seconds = minutes * 60.0
        self.clock = clock
        self.reserve = reserve
        self.epoch_started = 0.0
        self.epoch = 0
        self.stopped_epoch: int | None = None
        self.stopped_step: int | None = None  # set when it stopped inside an epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = self.clock.now()
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self.seconds or self.model.stop_training:
            return
        if self.clock.elapsed() + self.reserve() >= self.seconds:
            self.stopped_step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True
            log.info(
                "time budget of %s reached at step %d, inside epoch %d (validating it)",
                _duration(self.seconds),
                self.stopped_step,
                self.epoch + 1,
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_step is not None:
            self.stopped_epoch = epoch + 1
            return
        last = self.clock.now() - self.epoch_started
        if self.seconds and self.clock.elapsed() + last > self.seconds:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            log.info("time budget of %s reached after epoch %d", _duration(self.seconds), epoch + 1)


def last_learning_rate(optimizer) -> float:
    """The learning rate the optimizer's last step used: under a schedule, Keras keeps
    it in ``optimizer.learning_rate`` (set at each ``apply_gradients``), which is the
    schedule at iteration ``iterations - 1`` as planned when that step ran."""
    lr = optimizer.learning_rate
    return float(tf.keras.backend.get_value(lr(optimizer.iterations - 1) if callable(lr) else lr))


class StepLogger(tf.keras.callbacks.Callback):
    """Per-step loss and learning rate to TensorBoard (every ``every`` steps): at step
    ``s`` (counting from 1, the optimizer's iterations after it), the loss and the
    learning rate of that step, as in ``history.jsonl``."""

    def __init__(self, writer: tf.summary.SummaryWriter, every: int = 10):
        super().__init__()
        self.writer, self.every = writer, every

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every and step != 1:
            return
        lr = last_learning_rate(self.model.optimizer)
        with self.writer.as_default(step=step):
            tf.summary.scalar("train/loss", float((logs or {}).get("loss", float("nan"))))
            tf.summary.scalar("train/learning_rate", lr)


class BackupLogger(tf.keras.callbacks.Callback):
    """Once ``BackupAndRestore`` (which runs before it) has saved: the config the backup
    belongs to into ``<backup>/config.json`` (``config_json``; None on a worker that is
    not the chief), early stopping's state (``early_stopping``, on the chief) and one
    log line per epoch."""

    def __init__(
        self,
        backup: Path | None = None,
        config_json: str | None = None,
        early_stopping: PlannedEarlyStopping | None = None,
    ):
        super().__init__()
        self.backup, self.config_json = backup, config_json
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None):
        if self.backup is not None and self.config_json is not None and self.backup.is_dir():
            path = self.backup / "config.json"
            if not path.is_file():
                path.write_text(self.config_json + "\n", encoding="utf-8")
            if self.early_stopping is not None:
                self.early_stopping.save_state(epoch)
        log.info("epoch %d: state backed up", epoch + 1)


def write_projector(model: tf.keras.Model, prepared: Prepared, logdir: Path) -> None:
    """Movie embeddings labelled with titles, for TensorBoard's projector."""
    titles = dict(
        zip(prepared.movies["movie_id"].astype(str), prepared.movies["title"], strict=True)
    )
    vocab = prepared.vocabs[F.MOVIE_ID]
    embeddings = model.encoder.items.all_items().numpy()[F.NUM_RESERVED :]
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
    # TensorBoard's projector only looks in folders it knows as runs (ones holding an
    # event file): one event here makes it appear under `tensorboard --logdir runs/` too.
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        tf.summary.text("projector", "movie embeddings, labelled with titles", step=0)
    writer.close()


def write_hparams(cfg: Config, writer: tf.summary.SummaryWriter, run_name: str) -> None:
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
