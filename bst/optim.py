"""The optimizer and its learning-rate schedule, planned in steps derived from the data.

The schedule warms up linearly over ``train.warmup_fraction`` of the planned steps
(at most ``train.warmup_steps``), then decays (cosine by default) to
``train.final_lr_fraction`` of the peak at the end of the planned run. The planned
run is ``epochs x steps per epoch``, or, under a time budget, the epochs that fit in
it: :class:`SchedulePlanner` measures the first steps and every epoch and updates
the plan. The plan is a variable of the trainer, saved in its backups, so a resumed
run continues on the same curve.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst.config import Config
from bst.errors import UsageError

log = logging.getLogger("bst.train")

SCHEDULES = ("cosine", "linear", "constant")


@tf.keras.utils.register_keras_serializable(package="bst")
class WarmupDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak``, then cosine/linear decay (or constant) over ``total``.

    ``total`` (planned steps) may be a ``tf.Variable`` updated while training.
    """

    def __init__(
        self,
        peak: float,
        total: tf.Variable | int,
        warmup_fraction: float = 0.05,
        max_warmup: int = 500,
        kind: str = "cosine",
        final_fraction: float = 0.02,
    ):
        if kind not in SCHEDULES:
            raise UsageError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
        self.peak, self.total = float(peak), total
        self.warmup_fraction, self.max_warmup = float(warmup_fraction), int(max_warmup)
        self.kind, self.final_fraction = kind, float(final_fraction)

    def warmup_steps(self, total: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(
            tf.round(self.warmup_fraction * total), 1.0, float(max(self.max_warmup, 1))
        )

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0  # step 0 is the first step
        total = tf.maximum(tf.cast(tf.convert_to_tensor(self.total), tf.float32), 1.0)
        warmup = self.warmup_steps(total)
        rise = self.peak * tf.minimum(1.0, step / warmup)
        if self.kind == "constant":
            return rise
        progress = tf.clip_by_value((step - warmup) / tf.maximum(total - warmup, 1.0), 0.0, 1.0)
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        low = self.final_fraction
        decayed = self.peak * (low + (1.0 - low) * shape)
        return tf.where(step <= warmup, rise, decayed)

    def get_config(self):
        total = self.total
        total = int(total.numpy()) if isinstance(total, tf.Variable) else int(total)
        return {
            "peak": self.peak,
            "total": total,
            "warmup_fraction": self.warmup_fraction,
            "max_warmup": self.max_warmup,
            "kind": self.kind,
            "final_fraction": self.final_fraction,
        }


# train.batch_size=-1: the largest batch, halved (not below the smallest) while an epoch
# would hold fewer than MIN_STEPS_PER_EPOCH steps.
LARGEST_BATCH, SMALLEST_BATCH, MIN_STEPS_PER_EPOCH = 128, 16, 24


def auto_batch_size(examples: int) -> int:
    """The batch size of ``train.batch_size=-1`` for ``examples`` training windows.

    128 on data the size of ML-1M (about 7,700 windows: 60 steps an epoch); on small
    data, halved until an epoch has at least 24 steps, so a run makes enough (and
    noisier, so less overfitting) updates: on a 10 % user subsample of ML-1M (823
    windows) it gives 32, chosen over 128 on validation NDCG@10 (docs/experiments.md).
    """
    batch = LARGEST_BATCH
    while batch > SMALLEST_BATCH and examples < MIN_STEPS_PER_EPOCH * batch:
        batch //= 2
    return batch


# train.steps_per_epoch=-1: a pass over the data longer than this many steps is
# validated in equal parts of at most this many.
MAX_EPOCH_STEPS = 500


def epoch_parts(pass_steps: int) -> tuple[int, int]:
    """``(steps, parts)`` of ``train.steps_per_epoch=-1`` for a pass of ``pass_steps``: the
    pass itself (``parts=1``) up to ``MAX_EPOCH_STEPS``, else ``parts`` equal epochs of at
    most that many steps (the last pass's remainder is covered by rounding up)."""
    pass_steps = max(int(pass_steps), 1)
    parts = math.ceil(pass_steps / MAX_EPOCH_STEPS)
    return math.ceil(pass_steps / parts), parts


def make_schedule(cfg: Config, total: tf.Variable | int) -> WarmupDecay:
    t = cfg.train
    return WarmupDecay(
        t.learning_rate, total, t.warmup_fraction, t.warmup_steps, t.schedule, t.final_lr_fraction
    )


def make_optimizer(
    cfg: Config, total: tf.Variable | int | None = None
) -> tf.keras.optimizers.Optimizer:
    """Adam with the schedule (AdamW when ``train.weight_decay`` > 0; keeping a moving
    average of the weights, :class:`WarmAverage`, when ``train.ema`` > 0). ``total`` is the
    planned number of steps (default: ``epochs x steps_per_epoch`` or 1000)."""
    if total is None:
        total = cfg.train.epochs * (
            cfg.train.steps_per_epoch if cfg.train.steps_per_epoch > 0 else 1000
        )
    schedule = make_schedule(cfg, total)
    ema = {"use_ema": True, "ema_momentum": cfg.train.ema} if cfg.train.ema > 0 else {}
    if cfg.train.weight_decay > 0:
        kind = AdamWAverage if ema else tf.keras.optimizers.AdamW
        return kind(schedule, weight_decay=cfg.train.weight_decay, beta_2=0.98, **ema)
    return (AdamAverage if ema else tf.keras.optimizers.Adam)(schedule, beta_2=0.98, **ema)


class WarmAverage:
    """Keras's moving average of the weights (``use_ema``) with a warm-up: at step ``t``
    the momentum is ``min(ema_momentum, (1 + t) / (10 + t))``, as in
    ``tf.train.ExponentialMovingAverage(num_updates=t)``. Keras starts the average at the
    initial weights with a fixed momentum, so at 0.999 the untrained weights would still
    weigh a third after 1,000 steps."""

    @property
    def ema_momentum(self):
        step = tf.cast(self.iterations, tf.float32)
        return tf.minimum(self.peak_ema_momentum, (1.0 + step) / (10.0 + step))

    @ema_momentum.setter
    def ema_momentum(self, value):
        self.peak_ema_momentum = float(value)

    def get_config(self):
        return {**super().get_config(), "ema_momentum": self.peak_ema_momentum}


class AdamAverage(WarmAverage, tf.keras.optimizers.Adam):
    """Adam keeping a warmed-up moving average of the weights (:class:`WarmAverage`)."""


class AdamWAverage(WarmAverage, tf.keras.optimizers.AdamW):
    """AdamW keeping a warmed-up moving average of the weights (:class:`WarmAverage`)."""


def swap_average(optimizer, variables: list) -> list | None:
    """Writes the optimizer's moving averages into ``variables`` and returns their
    previous values (for :func:`restore`); None, and nothing written, when it keeps none
    or has not taken a step yet."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under loss scaling
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_built", False):
        return None
    saved = [v.numpy() for v in variables]
    optimizer.finalize_variable_values(variables)
    return saved


def restore(variables: list, saved: list | None) -> None:
    """Puts back what :func:`swap_average` replaced (nothing when it returned None)."""
    if saved is not None:
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)


class SchedulePlanner(tf.keras.callbacks.Callback):
    """Keeps ``planned`` (the schedule's total steps) equal to the steps the run will take.

    Without a budget that is ``epochs x steps``. With one, it is the steps done plus the
    whole epochs that still fit in what is left of the run's budget (``clock``, a
    :class:`bst.clock.RunClock`: a resumed run has only the rest of it), estimated from
    the first timed steps of the first epoch this process trains, then from that epoch's
    steady steps and its validation, then from the median of the last five epochs after
    it. That first epoch's own wall time is never used: it includes tracing and filling
    the cache, and re-planning on it would shorten the schedule by a quarter for one
    epoch and then lengthen it again. When not one whole epoch fits in the budget (an
    epoch longer than it), the plan is the steps that fit, re-estimated every 50 steps,
    and :class:`bst.callbacks.TimeBudget` ends the run at about that step. Listed before
    ``BackupAndRestore``, so each backup holds the plan its epoch ended with.
    """

    def __init__(self, planned: tf.Variable, steps: int, epochs: int, minutes: float, clock):
        super().__init__()
        self.planned, self.steps, self.epochs = planned, steps, epochs
        self.seconds = minutes * 60.0
        self.clock = clock
        self.epoch_times: list[float] = []
        self.epoch = 0
        self.epoch_started = 0.0
        self._batch_times: list[float] = []
        self.first_estimate: float | None = None
        self.partial = False  # the plan ends inside the first epoch

    def _set(self, steps: int, why: str) -> None:
        steps = int(min(max(steps, 1), self.epochs * self.steps))
        before = int(self.planned.numpy())
        if steps != before:
            self.planned.assign(steps)
            # a re-plan by under 5 % (short epochs re-plan at nearly every one) is DEBUG
            small = before > 0 and abs(steps - before) < 0.05 * before
            log.log(
                logging.DEBUG if small else logging.INFO,
                "schedule planned over %d steps (%s)",
                steps,
                why,
            )

    def on_train_begin(self, logs=None):
        # before BackupAndRestore restores a resumed run's plan (which then replaces this)
        if not self.seconds or int(self.planned.numpy()) == 0:
            self._set(self.epochs * self.steps, f"{self.epochs} epochs x {self.steps} steps")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = self.clock.now()

    def on_train_batch_end(self, batch, logs=None):
        if not self.seconds or self.epoch_times:
            return
        self._batch_times.append(self.clock.now())
        count = len(self._batch_times)
        # after the traced steps, then every 50 steps while not one epoch fits the budget
        if count == 6 or batch + 1 == self.steps or (self.partial and count % 50 == 0):
            if count < 3:
                return
            self._plan(self._per_step() * self.steps, first=True)

    def _per_step(self) -> float:
        """Seconds per step in the first epoch: the mean step after the first few (batches
        differ in length, so the mean, not the median, adds up to an epoch), without
        the retracing outliers (over 3x the median step)."""
        diffs = np.diff(self._batch_times[1:])
        steady = diffs[5:] if len(diffs) > 10 else diffs
        return float(np.mean(steady[steady <= 3 * np.median(steady)]))

    def _plan(self, epoch_seconds: float, first: bool = False) -> None:
        done = self.epoch if first else self.epoch + 1  # whole epochs done
        remaining = self.seconds - self.clock.elapsed()
        if first:
            remaining += self.clock.now() - self.epoch_started  # this epoch counts whole
        fit = int(remaining // max(epoch_seconds, 1e-3))
        epoch = f"{epoch_seconds:.1f} s" if epoch_seconds < 10 else f"{epoch_seconds:.0f} s"
        budget = f"{self.seconds:.0f} s" if self.seconds < 120 else f"{self.seconds / 60:.0f} min"
        self.partial = first and fit < 1
        if self.partial:  # not one whole epoch fits: the steps that do (TimeBudget stops there)
            per_step = epoch_seconds / self.steps
            fit_steps = max(int(remaining // max(per_step, 1e-6)), 1)
            self._set(
                done * self.steps + fit_steps,
                f"{fit_steps} steps of about {per_step:.2f} s fit in the {budget} budget, "
                f"less than an epoch of about {epoch}",
            )
            return
        fit = max(fit, 1 if first else 0)
        self._set(
            (done + fit) * self.steps,
            f"{fit} more epoch(s) of about {epoch} fit in the {budget} budget",
        )

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock.now()
        if not self.epoch_times and len(self._batch_times) >= 3:
            # the first epoch, as a steady one would take: its steps after tracing, plus
            # the validation that just ran (callbacks before this one)
            self.first_estimate = self._per_step() * self.steps + (now - self._batch_times[-1])
        self.epoch_times.append(now - self.epoch_started)
        if self.seconds:
            self.epoch = epoch
            steady = self.epoch_times[1:] or [self.first_estimate or self.epoch_times[0]]
            self._plan(float(np.median(steady[-5:])))
