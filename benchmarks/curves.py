"""Validation NDCG@10 against training minutes, for several runs: one PNG.

    python benchmarks/curves.py --run "full softmax=runs/a" --run "sampled=runs/b" \\
        --out docs/images/validation_curves.png [--title "ML-1M, 2-core CPU"]

Reads each run folder's ``history.jsonl`` (what ``bst.train`` appends after every
epoch: the validation metrics and the training seconds so far) and draws validation
NDCG@10 over the run's minutes, one line per run, then prints each run's best
validation NDCG@10, the minute it was first within 0.005 of it and the minutes at
which it first reached each of ``MARKS``. No figure is
measured here: the runs measured them (with their machines in their ``metrics.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MARKS = (0.15, 0.17, 0.18, 0.19, 0.20)


def history(run_dir: Path) -> list[dict]:
    rows: dict[int, dict] = {}
    path = run_dir / "history.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: is {run_dir} a bst.train run folder?")
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[int(row["epoch"])] = row
    return [rows[k] for k in sorted(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="Validation NDCG@10 over training time")
    args = parser.parse_args()
    runs = []
    for item in args.run:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            parser.error(f"--run takes LABEL=RUN_DIR, got {item!r}")
        runs.append((label, history(Path(folder))))

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.add_subplot()
    for label, rows in runs:
        minutes = [row["elapsed_seconds"] / 60 for row in rows]
        ax.plot(minutes, [row["val_ndcg@10"] for row in rows], label=label, linewidth=1.6)
        best = max(row["val_ndcg@10"] for row in rows)
        near = next(row for row in rows if row["val_ndcg@10"] >= best - 0.005)
        marks = []
        for mark in MARKS:
            hit = next((row for row in rows if row["val_ndcg@10"] >= mark), None)
            marks.append(
                f"{mark:.2f} at {hit['elapsed_seconds'] / 60:.1f} min (epoch {hit['epoch']})"
                if hit
                else f"{mark:.2f} not reached"
            )
        print(
            f"{label}: {len(rows)} epochs, best validation NDCG@10 {best:.4f}; within 0.005 "
            f"of it at {near['elapsed_seconds'] / 60:.1f} min (epoch {near['epoch']}); "
            + "; ".join(marks)
        )
    ax.set_xlabel("training minutes")
    ax.set_ylabel("validation NDCG@10 (full ranking)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
