"""Text on and off under the cold-start protocol: the same held-out movies, budget and seed.

    python benchmarks/cold_start.py --data-dir ../shared/data/ml-1m \
        --enriched runs/ml1m-text/enriched/movies_enriched.csv \
        [--cold-fraction 0.05] [--out /tmp/bst-cold] [--set train.epochs=20 ...]

Prepares once with ``--cold-fraction`` (a fraction of the rated movies with an overview
held out of training entirely), then trains the default preset twice on that folder,
with the overviews and with ``model.text=false`` (held-out movies then embedded from
genres and year only), the ``--set`` overrides applied to both; each run reads its test
split once, at the end. Then ``bst.evaluate`` scores both and this prints, per model:
test NDCG@10/HR@10 overall, on the users whose target was held out (HR@10, NDCG@10,
HR@50, MRR; validation's first, the figures a setting is chosen by) and by the target's
training ratings, with each run's epochs and median epoch time. Run it alone on the machine when the times matter.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bst import machine

RUNS = (("with overviews", "text", "true"), ("without text", "no-text", "false"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--enriched", required=True, help="CSV from pipelines.enrich")
    parser.add_argument("--cold-fraction", type=float, default=0.05)
    parser.add_argument("--out", default="/tmp/bst-cold", help="prepared folder and runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--runs",
        default="text,no-text",
        help="which runs: text, no-text or both (comma-separated; default both)",
    )
    args = parser.parse_args()
    print(machine.first_line(), flush=True)  # where these figures are measured
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(wanted) - {name for _, name, _ in RUNS})
    if unknown or not wanted:
        parser.error(f"--runs takes text and/or no-text, got {args.runs!r}")

    import bst  # noqa: F401  (Keras 2 before TensorFlow)
    from bst import cli, config
    from bst import train as train_cli
    from bst.evaluate import evaluate

    cli.setup_logging()
    out = Path(args.out)
    updates = {
        "data.data_dir": str(Path(args.data_dir).resolve()),
        "data.enriched": str(Path(args.enriched).resolve()),
        "data.cold_fraction": args.cold_fraction,
        "data.prepared_dir": str((out / "prepared").resolve()),
        **config.parse_overrides(args.overrides),
    }
    rows = []
    for label, name, text in RUNS:
        if name not in wanted:
            continue
        cfg = config.validate(config.replace(config.ml1m(), {**updates, "model.text": text}))
        started = time.time()
        result = train_cli.train(cfg, out / name, export_dir=None)
        seconds = [row["seconds"] for row in result["history"]]
        # Validation first (what a setting is chosen by), then the test split, once.
        val = evaluate(out / name, split="validation")["cold_start"]["models"]["BST"]
        report = evaluate(out / name)
        rows.append((label, result, report, statistics.median(seconds), time.time() - started))
        print(
            f"{label}: validation, held-out targets: HR@10 {val['hr@10']:.4f}, NDCG@10 "
            f"{val['ndcg@10']:.4f}, HR@50 {val['hr@50']:.4f}, MRR {val['mrr']:.4f}"
        )

    cold = rows[0][2]["cold_start"]
    print(
        f"\n{cold['movies']} movies held out of training; {cold['users']} test users have one "
        "as their target"
    )
    print(
        "| run | epochs (median s) | best val NDCG@10 | test NDCG@10 / HR@10 | held-out targets: "
        "HR@10 / NDCG@10 / HR@50 / MRR | popularity on them: HR@50 / MRR |"
    )
    print("|---|---|---|---|---|---|")
    for label, result, report, median, _ in rows:
        best = max(row["val_ndcg@10"] for row in result["history"])
        test = report["model"]["BST"]
        mine = report["cold_start"]["models"]["BST"]
        pop = report["cold_start"]["models"]["popularity"]
        print(
            f"| {label} | {len(result['history'])} ({median:.1f} s) | {best:.4f} | "
            f"{test['ndcg@10']:.4f} / {test['hr@10']:.4f} | {mine['hr@10']:.4f} / "
            f"{mine['ndcg@10']:.4f} / {mine['hr@50']:.4f} / {mine['mrr']:.4f} | "
            f"{pop['hr@50']:.4f} / {pop['mrr']:.4f} |"
        )
    print("\ntest NDCG@10 by the target's training ratings (users):")
    for label, _, report, _, _ in rows:
        cells = [
            f"{b['bucket']}: {b['ndcg@10']:.4f} ({b['users']})"
            for b in report["by_target_count"]["BST"]
        ]
        print(f"  {label}: " + ", ".join(cells))
    for label, _, _, _, total in rows:
        print(f"{label}: {total:.0f} s in all")


if __name__ == "__main__":
    main()
