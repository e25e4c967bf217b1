"""Serving latency and throughput of an exported model: in process and over REST (bst.serve).

    python benchmarks/serving.py --model-dir saved_models/bst [--run-dir runs/ml1m]
        [--intra-op-threads 1 --inter-op-threads 2]

Prints p50/p99 latency of one top-10 request (a real user's history when
``--run-dir`` is given, else 50 known movie ids) called in process on the
SavedModel's ``serving_default`` signature and over REST against ``python -m
bst.serve`` started as a separate process, then throughput with ``--clients``
concurrent clients. Targets on the 2-core development CPU: in-process p50 <= 2 ms,
REST p99 <= 15 ms, >= 300 requests/s. The load generator shares the machine's
cores with the server, so REST figures are pessimistic.

``--intra-op-threads`` / ``--inter-op-threads`` size TensorFlow's thread pools,
in this process and in the server (``bst.serve``'s flags of the same name, TF
Serving's ``--tensorflow_intra_op_parallelism`` / ``--tensorflow_inter_op_parallelism``);
0, the default, keeps TensorFlow's choice. The figures printed say which was used.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bst import machine

REPO = Path(__file__).resolve().parents[1]


def histories(run_dir: str | None, count: int) -> list[list[str]]:
    if run_dir:
        from bst.config import load
        from bst.data.prepared import Prepared

        prepared = Prepared.open(load(Path(run_dir) / "config.json").data.prepared_dir)
        users = prepared.sequences.user_ids[:count]
        return [prepared.user_events(u).movie_ids[-200:] for u in users]
    return [[str(i) for i in range(1, 51)]] * count


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="saved_models/bst")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput phase length")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="0 = TensorFlow's choice")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="0 = TensorFlow's choice")
    args = parser.parse_args()
    print(machine.first_line(), flush=True)  # where these figures are measured

    import bst  # noqa: F401

    import tensorflow as tf  # isort: skip

    from bst.client import BSTClient
    from bst.serve import set_tf_threads
    from bst.versions import newest_version

    set_tf_threads(args.intra_op_threads, args.inter_op_threads)
    threads = [
        "--intra-op-threads", str(args.intra_op_threads),
        "--inter-op-threads", str(args.inter_op_threads),
    ]  # fmt: skip
    print(
        f"TensorFlow threads: intra-op {args.intra_op_threads or 'default'}, "
        f"inter-op {args.inter_op_threads or 'default'}"
    )

    base = Path(args.model_dir)
    version = newest_version(base)
    if version is None:
        raise SystemExit(f"no exported version in {base}: run python -m bst.export first")
    users = histories(args.run_dir, 100)
    lengths = [len(h) for h in users]
    print(f"model {version}; histories of {min(lengths)}-{max(lengths)} movies")

    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    for h in users[:5]:
        signature(history=tf.constant([h]))
    samples = []
    for i in range(args.requests):
        start = time.perf_counter()
        signature(history=tf.constant([users[i % len(users)]]))
        samples.append(time.perf_counter() - start)
    p50, p99 = percentiles(samples)
    print(f"in process: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p50 <= 2 ms)")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bst.serve", "--model-dir", str(base), "--port", str(port)]
        + threads,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/models/bst", timeout=2) as r:
                    if json.load(r)["model_version_status"][0]["state"] == "AVAILABLE":
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("bst.serve did not come up")
            time.sleep(0.5)
        client = BSTClient(url)
        for h in users[:5]:
            client.recommend([h])
        samples = []
        for i in range(args.requests):
            start = time.perf_counter()
            client.recommend([users[i % len(users)]])
            samples.append(time.perf_counter() - start)
        p50, p99 = percentiles(samples)
        print(f"REST, one client: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 <= 15 ms)")

        stop = time.time() + args.seconds
        lock, done, latencies = threading.Lock(), [0], []

        def worker(seed: int) -> None:
            local = BSTClient(url)
            i, mine = seed, []
            while time.time() < stop:
                start = time.perf_counter()
                local.recommend([users[i % len(users)]])
                mine.append(time.perf_counter() - start)
                i += args.clients
            with lock:
                done[0] += len(mine)
                latencies.extend(mine)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        p50, p99 = percentiles(latencies)
        print(
            f"REST, {args.clients} concurrent clients: {done[0] / elapsed:,.0f} requests/s "
            f"(target >= 300), p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
