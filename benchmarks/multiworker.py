"""One worker against two (MultiWorkerMirroredStrategy on this machine's CPUs), on ML-1M.

    python benchmarks/multiworker.py [--data-dir ../shared/data/ml-1m] [--epochs 3] [--work W]

Prepares ML-1M once, then runs ``python -m bst.train`` (the ``ml1m`` preset,
``--epochs`` epochs, no time budget, no export) as one worker, then as two workers on
localhost (``TF_CONFIG``, one process each, the same global batch). Prints, per run,
the training examples per second of each epoch (the epoch's examples over its
seconds, validation included) and the validation NDCG@10 per epoch, and whether the
two workers ended with identical weights.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from _trainer import DEFAULT_DATA

from bst import machine

REPO = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train(run_dir: Path, prepared: Path, epochs: int, workers: int, log: Path) -> dict:
    """``workers`` processes of one ``bst.train`` run; the chief's metrics.json."""
    command = [
        sys.executable, "-m", "bst.train", "--run-dir", str(run_dir), "--no-export", "--fresh",
        "--set", f"data.prepared_dir={prepared}", "--set", f"train.epochs={epochs}",
        "--set", "train.max_minutes=0",
    ]  # fmt: skip
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(workers)]}
    procs = []
    for index in range(workers):
        env = dict(os.environ)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
        out = open(log.with_suffix(f".{index}.log"), "w")
        procs.append(
            (subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env), out)
        )
    for proc, out in procs:
        proc.wait()
        out.close()
    if any(p.returncode for p, _ in procs):
        raise SystemExit(f"training failed: see {log.with_suffix('.0.log')}")
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default="runs/multiworker")
    args = parser.parse_args()
    print(machine.first_line(), flush=True)
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    prepared = work / "prepared"
    if not (prepared / "manifest.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "pipelines.prepare", "--data-dir", args.data_dir,
             "--out", str(prepared)],
            check=True,
        )  # fmt: skip
    rows = []
    for workers in (1, 2):
        started = time.perf_counter()
        m = train(work / f"w{workers}", prepared, args.epochs, workers, work / f"w{workers}")
        wall = time.perf_counter() - started
        per_epoch = [m["examples_per_epoch"] / h["seconds"] for h in m["history"]]
        ndcg = [h["val_ndcg@10"] for h in m["history"]]
        same = None
        if workers > 1:
            other = json.loads((work / "w2" / "workers" / "worker-1.json").read_text())
            same = other["weights_sha256"] == m["weights_sha256"]
        rows.append((workers, m["replicas"], per_epoch, ndcg, m["test"]["ndcg@10"], wall, same))
        print(
            f"{workers} worker(s), {m['replicas']} replica(s): examples/s per epoch "
            f"{', '.join(f'{x:.0f}' for x in per_epoch)}; val NDCG@10 per epoch "
            f"{', '.join(f'{x:.4f}' for x in ndcg)}; test NDCG@10 {m['test']['ndcg@10']:.4f}; "
            f"{wall:.0f} s in all" + ("" if same is None else f"; identical weights: {same}"),
            flush=True,
        )
    one, two = rows
    print(
        "2 workers / 1 worker, examples/s (median epoch): "
        f"{sorted(two[2])[len(two[2]) // 2] / sorted(one[2])[len(one[2]) // 2]:.2f}x"
    )


if __name__ == "__main__":
    main()
