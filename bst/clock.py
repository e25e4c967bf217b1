"""The one clock of a training run: what the time budget, the schedule's plan and the
log all read.

A run's training time is the time of the whole run, over every process that worked on
it: a run killed and resumed gets the rest of its ``train.max_minutes``, not a fresh
budget. The seconds trained up to the last backup are a variable of the trainer
(``BSTTrainer.elapsed_seconds``), so ``BackupAndRestore`` saves and restores them with
the weights. Time spent on an epoch that a kill cut short is not counted: the resumed
run trains that epoch again from its start.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2


class RunClock(tf.keras.callbacks.Callback):
    """Seconds of training over the whole run (:meth:`elapsed`) and the current time
    (:meth:`now`, for durations). Listed first among a run's callbacks; its
    :attr:`record` callback goes just before ``BackupAndRestore``, so each backup holds
    the seconds trained up to the end of its epoch.

    ``now``: the time source (``time.perf_counter``); a test passes one that counts
    steps, so that a run's plan does not depend on how fast the machine is.
    """

    def __init__(self, saved: tf.Variable, now: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.saved = saved
        self._now = now
        self.start: float | None = None
        self.base: float | None = None
        self.record = _RecordElapsed(self)

    def now(self) -> float:
        return self._now()

    def on_train_begin(self, logs=None):
        self.start = self.now()
        self.base = None  # read once the backup has been restored (after every train_begin)

    def elapsed(self) -> float:
        """Seconds trained in this run: those of earlier processes (as of their last
        backup) plus this process's since ``fit`` began; 0 before it began."""
        if self.start is None:
            return 0.0
        if self.base is None:
            self.base = float(self.saved.numpy())
        return self.base + (self.now() - self.start)

    def this_process(self) -> float:
        """Seconds since this process's ``fit`` began."""
        return 0.0 if self.start is None else self.now() - self.start


class _RecordElapsed(tf.keras.callbacks.Callback):
    def __init__(self, clock: RunClock):
        super().__init__()
        self.clock = clock

    def on_epoch_end(self, epoch, logs=None):
        self.clock.saved.assign(self.clock.elapsed())
