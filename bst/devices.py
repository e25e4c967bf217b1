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

from bst import config as config_lib
from bst import machine
from bst.config import CPU_BUDGET_MINUTES, Config
from bst.errors import UsageError


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
    """mixed_float16 on a GPU, mixed_bfloat16 on a TPU or a CPU, when asked for."""
    policy = "float32"
    if cfg.train.mixed_precision:
        policy = "mixed_float16" if accelerator(strategy) == "gpu" else "mixed_bfloat16"
    tf.keras.mixed_precision.set_global_policy(policy)
    return policy


DEFAULT_CPU_MINUTES = 30.0  # train.max_minutes=-1 on a CPU: fits the README's targets


def accelerator(strategy: tf.distribute.Strategy) -> str:
    """``tpu``, ``gpu`` or ``cpu``: what the training step runs on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (AVX512-BF16 or AMX) and
    oneDNN may use them (``ONEDNN_MAX_CPU_ISA`` not below them)."""
    extensions = machine.cpu()["extensions"]
    return "AVX512-BF16" in extensions or "AMX" in extensions


def resolve(cfg: Config, strategy: tf.distribute.Strategy) -> tuple[Config, list[str]]:
    """``cfg`` with every ``auto`` setting made concrete for this machine, and a line per
    decision (so the saved config says what ran)."""
    kind = accelerator(strategy)
    updates, notes = {}, []
    t = cfg.train
    if t.max_minutes < 0:
        cpu_minutes = CPU_BUDGET_MINUTES.get(cfg.preset, DEFAULT_CPU_MINUTES)
        minutes = cpu_minutes if kind == "cpu" else 0.0
        updates["train.max_minutes"] = minutes
        notes.append(
            f"time budget: {minutes:.0f} minutes on this CPU (change it with --set "
            "train.max_minutes=N, 0 = none)"
            if minutes
            else f"no time budget on the {kind.upper()}: early stopping decides"
        )
    if t.jit_compile not in ("auto", "true", "false"):
        raise UsageError(f"train.jit_compile must be auto, true or false, got {t.jit_compile!r}")
    if t.jit_compile == "auto":
        updates["train.jit_compile"] = "false" if kind == "cpu" else "true"
    if t.bf16_logits and kind == "cpu" and not cpu_has_fast_bf16():
        updates["train.bf16_logits"] = False
        notes.append("bf16_logits off: this CPU has no AVX512-BF16/AMX")
    return config_lib.replace(cfg, updates), notes
