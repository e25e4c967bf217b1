"""Which machine a figure was measured on: the CPU model, its cores, the vector
extensions that decide bst's speed (AVX2, AVX512, AVX512-BF16, AMX), TensorFlow's
version and its thread settings. ``bst.train`` logs it once and keeps it in
``metrics.json``; the benchmarks print it first. No TensorFlow import here.
"""

from __future__ import annotations

import os
from pathlib import Path

# /proc/cpuinfo flag -> how the figures name it
EXTENSIONS = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX",
}


def cpu() -> dict:
    """``{"model", "logical_cpus", "extensions"}`` of this machine's CPU (what Linux's
    /proc/cpuinfo says; "unknown" and none elsewhere)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "model": model,
        "logical_cpus": len(usable) if usable else os.cpu_count(),
        "extensions": [name for flag, name in EXTENSIONS.items() if flag in flags],
    }


def describe(tf_module=None) -> dict:
    """:func:`cpu` plus TensorFlow's version and thread settings when ``tf_module`` (the
    imported ``tensorflow``) is given (0 = TensorFlow's choice)."""
    info = cpu()
    if tf_module is not None:
        threading = tf_module.config.threading
        info["tensorflow"] = tf_module.__version__
        info["intra_op_threads"] = threading.get_intra_op_parallelism_threads()
        info["inter_op_threads"] = threading.get_inter_op_parallelism_threads()
    return info


def line(info: dict) -> str:
    """One line for a log or a benchmark's first line."""
    extensions = ", ".join(info["extensions"]) or "no AVX2/AVX512/AMX"
    text = f"{info['model']}, {info['logical_cpus']} logical CPUs, {extensions}"
    if "tensorflow" in info:
        threads = [
            f"{name} {info[key] or 'default'}"
            for name, key in (("intra-op", "intra_op_threads"), ("inter-op", "inter_op_threads"))
        ]
        text += f"; TensorFlow {info['tensorflow']}, threads {', '.join(threads)}"
    return text
