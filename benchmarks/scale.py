"""bst's whole chain at 1x, 5x and 25x ML-1M's size, on generated data: time and memory.

    python benchmarks/scale.py                          # 1x, 5x, 25x (25x: about an hour)
    python benchmarks/scale.py --scales 1,5 --train-minutes 2 --work /tmp/bst-scale

Each scale's data comes from ``python -m bst.data.synthetic`` (1x: ``--like ml-1m``;
25x: ``--like ml-25m``, 162,541 users, 59,047 movies, 25 M ratings; 5x: the
geometric middle of the two), and each stage is its own process, measured with
``os.wait4`` (wall time and that process's peak RSS):

* prepare: ``python -m pipelines.prepare``;
* train: ``python -m bst.train`` for ``--train-minutes`` of training (the default
  loss, ``model.loss=auto``), then its own test evaluation; steps/s is the training
  steps over the training seconds, and ``peak_memory_gib.training`` in its
  ``metrics.json`` is the process's peak when training ended, before the test;
* evaluate: ``python -m bst.evaluate`` (every user against the whole catalog, and the
  three baselines);
* recommend: ``python -m bst.recommend`` for the user with the most events;
* export: ``python -m bst.export`` and the SavedModel's size on disk;
* serving: p50 of one top-10 request for a 200-event history in process, on the
  SavedModel's ``serving_default``, with one TensorFlow thread.

Prints one table (and ``--json`` writes the figures). Run it alone on the machine:
every figure is wall-clock time or memory. The first line says the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ML1M, ML25M = (6_040, 3_706, 1_000_209), (162_541, 59_047, 25_000_095)


def size_of(scale: float) -> tuple[int, int, int]:
    """(users, movies, ratings) at ``scale`` x ML-1M: 1 and 25 are ML-1M's and ML-25M's
    own, others on the same curve (users and ratings grow 27x and 25x from ML-1M to
    ML-25M, movies 16x), below 1 too (a smoke test of this script)."""
    t = math.log(scale) / math.log(25)
    return tuple(round(a * (b / a) ** t) for a, b in zip(ML1M, ML25M, strict=True))


def run(name: str, argv: list[str], log: Path) -> dict:
    """Runs ``argv`` (a python module and its flags) as a child; its wall time, peak RSS."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        child = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"{name} failed (exit {child.returncode}); {log}:\n" + "\n".join(tail))
    return {"seconds": round(seconds, 1), "peak_gib": round(usage.ru_maxrss / 2**20, 2)}


SERVE = """
import json, statistics, sys, time
import bst
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from bst.versions import newest_version
history = json.loads(sys.argv[2])
signature = tf.saved_model.load(str(newest_version(sys.argv[1]))).signatures["serving_default"]
request = tf.constant([history])
for _ in range(20):
    signature(history=request)
samples = []
for _ in range(300):
    start = time.perf_counter()
    signature(history=request)
    samples.append(time.perf_counter() - start)
print(json.dumps({"p50_ms": round(1000 * statistics.median(samples), 2),
                  "p99_ms": round(1000 * sorted(samples)[int(0.99 * len(samples))], 2)}))
"""


def one_scale(scale: float, work: Path, minutes: float) -> dict:
    users, movies, ratings = size_of(scale)
    folder = work / f"{scale:g}x"
    data, prepared, run_dir, models = (folder / p for p in ("data", "prepared", "run", "models"))
    folder.mkdir(parents=True, exist_ok=True)
    out = {"scale": scale, "users": users, "movies": movies, "ratings_asked": ratings}
    if not (data / "ratings.csv").is_file():
        out["generate"] = run(
            "generate",
            ["-m", "bst.data.synthetic", "--users", str(users), "--movies", str(movies)]
            + ["--ratings", str(ratings), "--out", str(data)],
            folder / "generate.log",
        )
    out["prepare"] = run(
        "prepare",
        ["-m", "pipelines.prepare", "--data-dir", str(data), "--out", str(prepared)],
        folder / "prepare.log",
    )
    out["train"] = run(
        "train",
        ["-m", "bst.train", "--data-dir", str(data), "--run-dir", str(run_dir), "--fresh"]
        + ["--set", f"data.prepared_dir={prepared}", "--set", f"train.max_minutes={minutes}"]
        + ["--no-export"],
        folder / "train.log",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    out["train"].update(
        steps=metrics["steps"],
        steps_per_second=round(metrics["steps"] / max(metrics["train_seconds"], 1e-9), 2),
        training_peak_gib=metrics["peak_memory_gib"]["training"],
        loss=metrics["loss"],
        test_ndcg10=round(metrics["test"]["ndcg@10"], 4),
    )
    out["evaluate"] = run(
        "evaluate", ["-m", "bst.evaluate", "--run-dir", str(run_dir)], folder / "evaluate.log"
    )
    report = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text(encoding="utf-8"))
    out["evaluate"].update(users=report["users"], catalog=report["catalog_items"])
    out["export"] = run(
        "export",
        ["-m", "bst.export", "--run-dir", str(run_dir), "--model-dir", str(models)],
        folder / "export.log",
    )
    version = max((p for p in models.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    out["export"]["savedmodel_mib"] = round(
        sum(f.stat().st_size for f in version.rglob("*") if f.is_file()) / 2**20, 1
    )
    user, history = longest_history(prepared, 200)
    out["recommend"] = run(
        "recommend",
        ["-m", "bst.recommend", "--run-dir", str(run_dir), "--user", user],
        folder / "recommend.log",
    )
    served = subprocess.run(
        [sys.executable, "-c", SERVE, str(models), json.dumps(history)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=True,
    )
    out["serving"] = json.loads(served.stdout.strip().splitlines()[-1])
    out["serving"]["history"] = len(history)
    return out


def longest_history(prepared: Path, length: int) -> tuple[str, list[str]]:
    """The user with the most events and that user's newest ``length`` movie ids (all of
    them when nobody has that many; the table says how many were sent)."""
    from bst.data.prepared import Prepared

    sequences = Prepared.open(prepared).sequences
    vocab = Prepared.open(prepared).vocabs["movie_id"]
    row = max(range(len(sequences.items)), key=lambda u: len(sequences.items[u]))
    items = sequences.items[row]
    return str(sequences.user_ids[row]), [vocab[i - 2] for i in items[-length:] if i >= 2]


def table(results: list[dict]) -> str:
    head = (
        "| scale | users / movies / ratings | prepare s / GiB | train steps/s / GiB "
        "| evaluate s / GiB | recommend s / GiB | SavedModel MiB | serving p50 ms (events) |"
    )
    rows = [head, "|---" * 8 + "|"]
    for r in results:
        rows.append(
            f"| {r['scale']:g}x | {r['users']:,} / {r['movies']:,} / {r['ratings_asked']:,} "
            f"| {r['prepare']['seconds']} / {r['prepare']['peak_gib']} "
            f"| {r['train']['steps_per_second']} / {r['train']['training_peak_gib']} "
            f"| {r['evaluate']['seconds']} / {r['evaluate']['peak_gib']} "
            f"| {r['recommend']['seconds']} / {r['recommend']['peak_gib']} "
            f"| {r['export']['savedmodel_mib']} "
            f"| {r['serving']['p50_ms']} ({r['serving']['history']}) |"
        )
    return "\n".join(rows)


def growth(results: list[dict]) -> list[str]:
    """How each stage grew from the smallest scale to the largest, against the data."""
    if len(results) < 2:
        return []
    a, b = results[0], results[-1]
    data = b["ratings_asked"] / a["ratings_asked"]
    lines = [f"from {a['scale']:g}x to {b['scale']:g}x: {data:.1f}x the ratings"]
    for stage, key in (("prepare", "seconds"), ("prepare", "peak_gib"), ("evaluate", "seconds")):
        lines.append(f"  {stage} {key}: {b[stage][key] / max(a[stage][key], 1e-9):.1f}x")
    lines.append(
        f"  evaluate peak_gib: {b['evaluate']['peak_gib'] / a['evaluate']['peak_gib']:.1f}x"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="1,5,25", help="comma-separated multiples of ML-1M")
    parser.add_argument("--work", default="/tmp/bst-scale", help="folder for data and runs")
    parser.add_argument("--train-minutes", type=float, default=3.0, help="training budget")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--scales takes numbers such as 1,5,25; got {args.scales!r}")
    if not scales or min(scales) < 0.01 or max(scales) > 32:
        parser.error(f"--scales must be between 0.01 and 32; got {args.scales!r}")
    if args.train_minutes <= 0:
        parser.error(f"--train-minutes must be > 0; got {args.train_minutes}")

    from bst import machine

    print(machine.first_line(), flush=True)  # where these figures are measured
    results = []
    for scale in sorted(scales):
        print(f"{scale:g}x ...", flush=True)
        results.append(one_scale(scale, Path(args.work), args.train_minutes))
        print(json.dumps(results[-1]), flush=True)
    print(table(results))
    for line in growth(results):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
