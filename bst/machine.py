"""Which machine a figure was measured on: the CPU model, its cores, the vector
extensions that decide bst's speed (AVX2, AVX512, AVX512-BF16, AMX), TensorFlow's
version and its thread settings. ``bst.train`` logs it once and keeps it in
``metrics.json``; the benchmarks print it first. No TensorFlow import here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# /proc/cpuinfo flag -> how the figures name it
EXTENSIONS = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX",
}


# ONEDNN_MAX_CPU_ISA (oneDNN's cap on the instructions its kernels use: TensorFlow's
# matmuls, softmax, ...) -> the extensions of EXTENSIONS still in use under it, by level
_ISA_LEVELS = (
    (("SSE41", "AVX"), 0),
    (("AVX2", "AVX2_VNNI", "AVX2_VNNI_2"), 1),
    (("AVX512_CORE", "AVX512_CORE_VNNI"), 2),
    (("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16"), 3),
)


def isa_cap() -> str:
    """``ONEDNN_MAX_CPU_ISA`` as set (upper case), or "" when it is not."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()


def _in_use(extensions: list[str], cap: str) -> list[str]:
    """The ``extensions`` oneDNN uses under ``cap`` (all of them when there is none)."""
    for names, level in _ISA_LEVELS:
        if cap in names:
            return [e for e in extensions if list(EXTENSIONS.values()).index(e) < level]
    return extensions  # no cap, ALL, or the AMX levels


def cpu() -> dict:
    """``{"model", "logical_cpus", "extensions"}`` of this machine's CPU (what Linux's
    /proc/cpuinfo says; "unknown" and none elsewhere). ``extensions`` are those in use:
    under ``ONEDNN_MAX_CPU_ISA`` (say ``AVX2``, to measure what a CPU without AVX512
    does) only those below the cap, and ``onednn_max_isa`` says the cap."""
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
    info = {
        "model": model,
        "logical_cpus": len(usable) if usable else os.cpu_count(),
        "extensions": [name for flag, name in EXTENSIONS.items() if flag in flags],
    }
    if isa_cap():
        info["extensions"] = _in_use(info["extensions"], isa_cap())
        info["onednn_max_isa"] = isa_cap()
    return info


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
    if info.get("onednn_max_isa"):
        text += f" (ONEDNN_MAX_CPU_ISA={info['onednn_max_isa']})"
    if "tensorflow" in info:
        threads = [
            f"{name} {info[key] or 'default'}"
            for name, key in (("intra-op", "intra_op_threads"), ("inter-op", "inter_op_threads"))
        ]
        text += f"; TensorFlow {info['tensorflow']}, threads {', '.join(threads)}"
    return text


def first_line() -> str:
    """:func:`line` for a benchmark's first line, before it imports TensorFlow: the CPU
    and TensorFlow's installed version (its threads are what the benchmark sets)."""
    from importlib import metadata

    try:
        version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        version = "not installed"
    return f"machine: {line(cpu())}; TensorFlow {version}"


def peak_memory_gib() -> float | None:
    """This process's peak resident memory so far, in GiB (None where the OS does not
    say: no ``resource`` module)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 2)
