"""The optimizer and its learning-rate schedule."""

from __future__ import annotations

import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst.config import Config


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
