"""The prepare step in memory and on Apache Beam's DirectRunner: time and peak memory.

    python benchmarks/prepare_runners.py --data-dir D [--out W] [--runners in-memory,beam,beam2]

Each runner is a fresh ``python -m pipelines.prepare`` process (start-up included):
``in-memory`` (the default runner), ``beam`` (``--runner beam``, the DirectRunner in
one process) and ``beam2`` (``--runner beam -- --direct_num_workers=2
--direct_running_mode=multi_processing``: two worker processes). Peak memory is the
largest sum of the resident memory of the process and all its descendants, sampled
every 0.2 s (Beam's workers are processes of their own). Needs the ``beam`` extra for
the Beam runners.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bst import machine

REPO = Path(__file__).resolve().parents[1]
RUNNERS = {
    "in-memory": [],
    "beam": ["--runner", "beam"],
    "beam2": [
        "--runner", "beam", "--",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    ],
}  # fmt: skip


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def run(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak GiB of the process tree) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}")
    return time.perf_counter() - started, peak[0] / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--runners", default="in-memory,beam,beam2")
    args = parser.parse_args()
    print(machine.first_line(), flush=True)
    work = Path(args.out or tempfile.mkdtemp(prefix="bst-runners-"))
    for name in args.runners.split(","):
        out = work / name
        argv = [sys.executable, "-m", "pipelines.prepare", "--data-dir", args.data_dir]
        extra = RUNNERS[name]
        if "--" in extra:
            cut = extra.index("--")
            argv += ["--out", str(out), *extra[:cut], *extra[cut:]]
        else:
            argv += ["--out", str(out), *extra]
        seconds, peak = run(argv)
        print(f"{name}: {seconds:.1f} s, peak {peak:.2f} GiB (process tree)", flush=True)


if __name__ == "__main__":
    main()
