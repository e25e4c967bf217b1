"""Devices and distribution: the tf.distribute strategy, the chief, the precision policy.

``--tpu NAME`` → TPUStrategy; ``TF_CONFIG`` listing several workers →
MultiWorkerMirroredStrategy; several GPUs → MirroredStrategy; otherwise the
default strategy. ``train.mixed_precision`` switches to mixed float16 (GPU) or
bfloat16 (TPU).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst.config import Config


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
