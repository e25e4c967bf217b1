"""Evaluate a trained run against baselines and published figures: ``python -m bst.evaluate``.

    python -m bst.evaluate --run-dir runs/ml1m                      # test split
    python -m bst.evaluate --run-dir runs/ml1m --split validation

Full-catalog ranking of every evaluated user (the protocol of :mod:`bst.metrics`):
HR@K, NDCG@K for K in 1, 3, 5, 10, 20, MRR and catalog coverage@10 for the model and
the popularity, ItemTransition and ItemKNN baselines, the same metrics by
history-length bucket, and how popular the recommended movies are. Writes into
``<run>/eval/<split>/`` (``eval/test/``, ``eval/validation/``: one split's report never
overwrites the other's; :func:`find_report` also finds the ``eval/`` and
``eval-validation/`` folders of earlier versions):

* ``metrics.json``: every figure below (what :func:`main` returns);
* ``report.md``: the tables, the protocol in words and the published full-ranking
  ML-1M figures as reference rows (marked as not measured here);
* ``ndcg_at_k.png``, ``by_history_length.png``, ``popularity.png``: the plots;

and logs the scalars and the plots to TensorBoard under ``<run>/logs/eval/`` (the
baselines in ``logs/eval/<baseline>/`` with the same tags, so TensorBoard overlays
them). The model and each baseline score and rank ``--users-per-batch`` users (1,024,
or fewer with a large catalog: :data:`bst.metrics.SCORE_ENTRIES`)
at a time, the model's in order of history length: memory holds a few ``[users per
batch, catalog]`` arrays, never the whole ``[users, catalog]`` matrix, so a split of
every user of ML-25M against its whole catalog fits a few GiB. A progress bar shows on a
terminal, and the log, the report and the printed summary say how long each part took.
"""

from __future__ import annotations

from bst import cli

if __name__ == "__main__":
    cli.early("evaluate")  # --help and mistakes answer before TensorFlow starts

import io
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import features as F
from bst.baselines import all_baselines
from bst.errors import DataError, UsageError, cli_errors
from bst.metrics import (
    COVERAGE_K,
    KS,
    MODEL_NAME,
    REPORT_METRICS,
    TEST,
    VALIDATION,
    by_history_length,
    by_target_count,
    evaluate_scores,
    load_eval_data,
    results_table,
    summarize,
)
from bst.model import load_run
from bst.scoring import model_score_fn

import tensorflow as tf  # isort: skip

log = logging.getLogger("bst.evaluate")

CURVE_KS = tuple(range(1, 21))  # NDCG@K curve
COLD_KS = (10, 50)  # cold-start protocol: held-out targets are hard, so @50 too
COLD_METRICS = ("hr@10", "ndcg@10", "hr@50", "mrr")
HEAD_SHARE = 0.1  # "head" = the 10 % most popular catalog items
TABLE_KEYS = REPORT_METRICS
PLOTS = {
    "ndcg_at_k": "ndcg_at_k.png",
    "by_history_length": "by_history_length.png",
    "popularity": "popularity.png",
}

# Full-ranking ML-1M figures from the literature (leave-one-out, full catalog). Values
# are (low, high); a single published number has low == high.
PUBLISHED = (
    {"name": "SASRec", "ndcg@10": (0.13, 0.17)},
    {"name": "BERT4Rec", "ndcg@10": (0.15, 0.15)},
    {"name": "SASRec + full cross-entropy", "ndcg@10": (0.18, 0.18)},
    {"name": "HSTU-large", "ndcg@10": (0.189, 0.189)},
    {"name": "popularity", "ndcg@10": (0.018, 0.018), "hr@10": (0.037, 0.037)},
)
PUBLISHED_NOTE = "published, not measured here"

PROTOCOL = (
    "Leave-one-out by time: each user's last event is the test target and the one before "
    "it the validation target (events with equal timestamps keep their file order); the "
    "history is every event before the target. The model ranks the **full catalog** "
    "(every movie of the training vocabulary, no sampled negatives), **excluding the "
    "movies already in the user's history** (except the target itself, so a re-watch can "
    "be hit). **Ties are pessimistic**: a movie scored equal to the target counts as "
    "ranked above it. A target never seen in training (**OOV**) cannot be scored and "
    "**counts as a miss**. HR@K = share of users whose target is in the top K (= Recall@K "
    "with one target), NDCG@K = mean of 1/log2(rank + 1) for ranks <= K, MRR = mean of "
    "1/rank without cutoff, coverage@10 = share of catalog movies in at least one user's "
    "top 10. Baselines are fitted on the training events only and ranked the same way."
)


# --- figures -----------------------------------------------------------------------


def ndcg_curve(ranks: np.ndarray, ks: Sequence[int] = CURVE_KS) -> list[float]:
    """NDCG@K for each K in ``ks`` from 1-based ranks (``inf`` = miss)."""
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if len(ranks) == 0:
        return [math.nan] * len(ks)
    finite = np.isfinite(ranks)
    gain = np.zeros_like(ranks)
    gain[finite] = 1.0 / np.log2(ranks[finite] + 1.0)
    return [float(np.where(ranks <= k, gain, 0.0).mean()) for k in ks]


def popularity_ranks(counts: np.ndarray) -> np.ndarray:
    """0-based training-popularity rank of each item index (0 = most popular), int64 ``[N]``.

    Equal counts are ordered by index (stable); PAD and OOV get -1.
    """
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[: F.NUM_RESERVED] = -np.inf
    order = np.argsort(-counts, kind="stable")  # reserved indices last
    ranks = np.empty(len(counts), dtype=np.int64)
    ranks[order] = np.arange(len(counts))
    ranks[: F.NUM_RESERVED] = -1
    return ranks


def popularity_profile(top: np.ndarray, pop_rank: np.ndarray) -> dict[str, float | int]:
    """How popular the recommended items are, as training-popularity percentiles.

    ``median_percentile`` is the median rank of the recommended items as a share of the
    catalog (0 = the most popular movie; the whole catalog has 0.5), ``head_share`` the
    share of recommendation slots filled from the 10 % most popular movies (the whole
    catalog: 0.1).
    """
    catalog = int((pop_rank >= 0).sum())
    items = top[top >= F.NUM_RESERVED]
    if catalog == 0 or items.size == 0:
        return {"median_percentile": math.nan, "head_share": math.nan, "distinct_items": 0}
    pct = pop_rank[items] / catalog
    return {
        "median_percentile": float(np.median(pct)),
        "head_share": float((pct < HEAD_SHARE).mean()),
        "distinct_items": int(len(np.unique(items))),
    }


# --- plots (matplotlib's object API: no pyplot, no global backend) ------------------


def _figure(width: float, height: float):
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_ndcg_curve(
    curves: dict[str, list[float]], title: str, published: Sequence[dict] = ()
) -> bytes:
    """NDCG@K for K = 1..20 per model; ``published`` NDCG@10 rows as labelled markers at K=10."""
    fig = _figure(8.4 if published else 6.4, 4.8)
    ax = fig.add_subplot()
    for name, values in curves.items():
        ax.plot(
            CURVE_KS,
            values,
            marker="o",
            markersize=3,
            label=name,
            lw=2.2 if name == MODEL_NAME else 1.2,
        )
    if published:
        centers = [sum(row["ndcg@10"]) / 2 for row in published]
        top = max(max(max(v) for v in curves.values()), max(r["ndcg@10"][1] for r in published))
        gap = 0.05 * top  # labels at least this far apart vertically
        label_y, last = {}, -math.inf
        for i in sorted(range(len(published)), key=centers.__getitem__):
            last = label_y[i] = max(centers[i], last + gap)
        for i, row in enumerate(published):
            low, high = row["ndcg@10"]
            ax.errorbar(
                [10], [centers[i]], yerr=[[centers[i] - low]], fmt="x", color="gray", capsize=3,
                label="ML-1M NDCG@10, published, not measured here" if i == 0 else None,
            )  # fmt: skip
            ax.annotate(  # in a column right of the plot, never on a measured line
                f"{row['name']} (published)",
                (10, centers[i]),
                xytext=(1.03, label_y[i]),
                textcoords=("axes fraction", "data"),
                annotation_clip=False,
                fontsize=7,
                color="gray",
                va="center",
                arrowprops={"arrowstyle": "-", "color": "lightgray", "lw": 0.6},
            )
    ax.set_xlabel("K (cutoff)")
    ax.set_ylabel("NDCG@K")
    ax.set_xticks([1, 5, 10, 15, 20])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize="small")
    return _png(fig)


def plot_by_length(by_length: dict[str, list[dict]], title: str) -> bytes:
    fig = _figure(7.2, 4.2)
    ax = fig.add_subplot()
    names = list(by_length)
    keep = [i for i, r in enumerate(by_length[names[0]]) if r["users"]]  # no empty buckets
    first = [by_length[names[0]][i] for i in keep]
    x = np.arange(len(first))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        values = [by_length[name][j]["ndcg@10"] for j in keep]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [f"{r['bucket']}\n({r['users']} users)" for r in first])
    ax.set_xlabel("events in the history before the target")
    ax.set_ylabel("NDCG@10")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _png(fig)


def plot_popularity(tops: dict[str, np.ndarray], pop_rank: np.ndarray, title: str) -> bytes:
    catalog = int((pop_rank >= 0).sum())
    fig = _figure(10.0, 4.2)
    hist_ax, cdf_ax = fig.subplots(1, 2)
    bins = np.linspace(0.0, 1.0, 21)
    grid = np.linspace(0.0, 1.0, 201)
    uniform = "every movie equally often (the catalog)"
    hist_ax.stairs(np.full(20, 1 / 20), bins, color="black", ls="--", label=uniform)
    cdf_ax.plot(grid, grid, color="black", ls="--", label=uniform)
    for name, top in tops.items():
        items = top[top >= F.NUM_RESERVED]
        if items.size == 0 or catalog == 0:
            continue
        pct = np.sort(pop_rank[items] / catalog)
        share, _ = np.histogram(pct, bins=bins)
        hist_ax.stairs(share / len(pct), bins, label=name, lw=2.2 if name == MODEL_NAME else 1.2)
        cdf = np.searchsorted(pct, grid, side="right") / len(pct)
        cdf_ax.plot(grid, cdf, label=name, lw=2.2 if name == MODEL_NAME else 1.2)
    hist_ax.set_title(f"Where the top-{COVERAGE_K} picks fall", fontsize="medium")
    hist_ax.set_xlabel("movie's training-popularity rank (share of catalog, most popular left)")
    hist_ax.set_ylabel(f"share of all top-{COVERAGE_K} picks (per 5 % of the catalog)")
    cdf_ax.set_title("The same, cumulative", fontsize="medium")
    cdf_ax.set_xlabel("movie's training-popularity rank (share of catalog)")
    cdf_ax.set_ylabel(f"share of top-{COVERAGE_K} picks at or above this rank")
    for ax in (hist_ax, cdf_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return _png(fig)


# --- report ------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, tuple | list):
        low, high = value
        return f"{low:.3f}" if low == high else f"{low:.2f}–{high:.2f}"
    return f"{value:.4f}"


def format_report(result: dict) -> str:
    """The Markdown report of a :func:`evaluate` result."""
    split, keys = result["split"], TABLE_KEYS
    lines = [
        f"# Evaluation of `{result['run_dir']}` on the {split} split",
        "",
        f"{result['users']} users, {result['catalog_items']} catalog movies, "
        f"{result['model'][MODEL_NAME]['oov_targets']} OOV targets (counted as misses); "
        f"dataset: {result['dataset']}.",
        "",
        "## Protocol",
        "",
        PROTOCOL,
        "",
        "## Model vs baselines",
        "",
        "| model | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    rows = {MODEL_NAME: result["model"][MODEL_NAME], **result["baselines"]}
    for name, metrics in rows.items():
        label = f"**{name}**" if name == MODEL_NAME else f"{name} (baseline)"
        lines.append(f"| {label} | " + " | ".join(_cell(metrics.get(k)) for k in keys) + " |")
    for row in result["published"]:
        label = f"{row['name']}, ML-1M ({PUBLISHED_NOTE})"
        lines.append(f"| {label} | " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
    if not result["dataset"].startswith("MovieLens-1M"):
        lines += [
            "",
            f"The published rows are ML-1M figures; this run's data is {result['dataset']}, "
            "so they are context, not a comparison.",
        ]
    lines += [
        "",
        "Published rows: full-ranking ML-1M figures from the papers (leave-one-out, full "
        "catalog); only the cells the sources report are filled.",
        "",
        f"![NDCG@K]({PLOTS['ndcg_at_k']})",
        "",
        "## By history length (HR@10, NDCG@10)",
        "",
    ]
    names = list(result["by_history_length"])
    buckets = result["by_history_length"][MODEL_NAME]
    lines.append(
        "| history length | users | "
        + " | ".join(f"{n} NDCG@10" for n in names)
        + f" | {MODEL_NAME} HR@10 |"
    )
    lines.append("|---" * (len(names) + 3) + "|")
    for i, bucket in enumerate(buckets):
        cells = [_cell(result["by_history_length"][n][i]["ndcg@10"]) for n in names]
        lines.append(
            f"| {bucket['bucket']} | {bucket['users']} | "
            + " | ".join(cells)
            + f" | {_cell(bucket['hr@10'])} |"
        )
    lines += [
        "",
        f"![by history length]({PLOTS['by_history_length']})",
        "",
        "## By the target movie's training ratings (NDCG@10)",
        "",
        "Rare targets are where ids alone know little: 0 = never rated in training.",
        "",
    ]
    names = list(result["by_target_count"])
    buckets = result["by_target_count"][MODEL_NAME]
    lines.append("| training ratings | users | " + " | ".join(f"{n}" for n in names) + " |")
    lines.append("|---" * (len(names) + 2) + "|")
    for i, bucket in enumerate(buckets):
        cells = [_cell(result["by_target_count"][n][i]["ndcg@10"]) for n in names]
        lines.append(f"| {bucket['bucket']} | {bucket['users']} | " + " | ".join(cells) + " |")
    cold = result.get("cold_start")
    if cold:
        lines += [
            "",
            "## Cold start: targets held out of training",
            "",
            f"{cold['movies']} movies with an overview were held out of training entirely "
            f"(`data.cold_fraction`); {cold['users']} users have one as their target. The "
            "model embeds them from genres, year and overview; the baselines have no "
            "training events of them, so they rank them last.",
            "",
            "| model | users | " + " | ".join(f"{m}" for m in COLD_METRICS) + " |",
            "|---" * (len(COLD_METRICS) + 2) + "|",
        ]
        for name, m in cold["models"].items():
            cells = " | ".join(_cell(m[k]) for k in COLD_METRICS)
            lines.append(f"| {name} | {m['users']} | {cells} |")
    lines += [
        "",
        f"## Popularity of the top-{COVERAGE_K} recommendations",
        "",
        "Training-popularity rank of the recommended movies as a share of the catalog "
        "(0 = the most popular movie). The whole catalog has median 0.5 and a head share "
        f"of {HEAD_SHARE:.1f} (the {HEAD_SHARE:.0%} most popular movies).",
        "",
        "| model | median popularity percentile | head share | distinct movies recommended |",
        "|---|---|---|---|",
    ]
    for name, prof in result["popularity_bias"].items():
        lines.append(
            f"| {name} | {_cell(prof['median_percentile'])} | {_cell(prof['head_share'])} | "
            f"{prof['distinct_items']} |"
        )
    lines += ["", f"![popularity]({PLOTS['popularity']})", ""]
    seconds = result["seconds"]
    lines.append("Timing: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + ".")
    return "\n".join(lines) + "\n"


# --- TensorBoard -------------------------------------------------------------------


def log_to_tensorboard(result: dict, pngs: dict[str, bytes], logdir: Path, step: int) -> None:
    """Scalars (model in ``logdir``, each baseline in ``logdir/<name>``) and the plots."""
    split = result["split"]
    rows = {MODEL_NAME: result["model"][MODEL_NAME], **result["baselines"]}
    for name, metrics in rows.items():
        folder = logdir if name == MODEL_NAME else logdir / name
        writer = tf.summary.create_file_writer(str(folder))
        with writer.as_default(step=step):
            for key, value in metrics.items():
                if key in ("users", "catalog_items"):
                    continue
                tf.summary.scalar(f"{split}/{key}", float(value))
            for bucket in result["by_history_length"][name]:
                if bucket["users"]:
                    tf.summary.scalar(
                        f"{split}_by_history_length/ndcg@10/{bucket['bucket']}", bucket["ndcg@10"]
                    )
            prof = result["popularity_bias"][name]
            for key in ("median_percentile", "head_share"):
                tf.summary.scalar(f"{split}_popularity/{key}", prof[key])
            if name == MODEL_NAME:
                for key, png in pngs.items():
                    image = tf.image.decode_png(png, channels=4)[tf.newaxis]  # (1, H, W, 4)
                    tf.summary.image(f"{split}_plots/{key}", image)
        writer.flush()
        writer.close()


# --- the evaluation ----------------------------------------------------------------


_FORMAT_NAMES = {
    "ml1m": "MovieLens-1M",
    "ml-100k": "MovieLens-100K",
    "ml-10m": "MovieLens-10M",
    "ml-csv": "MovieLens (CSV release)",
    "sasrec": "MovieLens-1M (SASRec benchmark file)",
}


def _dataset_name(cfg, prepared) -> str:
    """What the run was prepared from, as the report names it."""
    if cfg.data.synthetic:
        return "synthetic (tiny test data)"
    made = prepared.manifest.get("config", {})
    fmt, dataset = made.get("format", "ml1m"), made.get("dataset", "")
    if fmt == "interactions":
        return f"interactions table ({Path(cfg.data.data_dir).name or cfg.data.data_dir})"
    return dataset if dataset and fmt == "ml-csv" else _FORMAT_NAMES.get(fmt, fmt)


def cold_start(all_ranks: dict[str, np.ndarray], targets: np.ndarray, prepared) -> dict | None:
    """The cold-start protocol's figures (``--cold-fraction``): each model's HR/NDCG on the
    users whose target is a movie held out of training. None when nothing was held out."""
    if not prepared.cold_movies:
        return None
    cold = np.asarray(targets) >= prepared.num_trained_items
    return {
        "movies": prepared.cold_movies,
        "users": int(cold.sum()),
        "models": {n: summarize(r[cold], ks=COLD_KS) for n, r in all_ranks.items()},
    }


def evaluate(run_dir: str | Path, split: str = TEST, batch_size: int | None = None) -> dict:
    """Evaluate a finished run and its baselines on ``split``; write :func:`eval_dir`.

    Returns:
        The dict written to ``eval/metrics.json``: ``model`` ({"BST": metrics}),
        ``baselines`` (name → metrics), ``by_history_length`` and ``ndcg_curve`` (name →
        rows / values), ``popularity_bias``, ``published``, ``protocol``, ``seconds``, ...
    """
    if split not in (TEST, VALIDATION):
        raise UsageError(f"split must be 'test' or 'validation', got {split!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} not found")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    cfg, model, prepared = load_run(run_dir)
    data = load_eval_data(prepared.folder, split)
    if data.num_users == 0:
        raise DataError(f"no users with a {split} event in {prepared.folder}")
    seconds["load"] = time.perf_counter() - started

    started = time.perf_counter()
    score_fn, order = model_score_fn(model, cfg, split, data)  # a chunk of users at a time
    metrics, ranks, top = evaluate_scores(
        score_fn, data, batch_size, KS, order=order, progress=f"{MODEL_NAME} on {split}"
    )
    seconds["model"] = time.perf_counter() - started
    log.info(
        "%s on %s: NDCG@10 %.4f, HR@10 %.4f",
        MODEL_NAME,
        split,
        metrics["ndcg@10"],
        metrics["hr@10"],
    )

    all_ranks, tops = {MODEL_NAME: ranks}, {MODEL_NAME: top}
    baselines: dict[str, dict] = {}
    popularity = None
    started = time.perf_counter()
    for baseline in all_baselines():
        baseline.fit(prepared.folder)
        popularity = baseline.popularity if popularity is None else popularity
        b_metrics, b_ranks, b_top = evaluate_scores(
            baseline.scorer(data), data, batch_size, KS, progress=f"{baseline.name} on {split}"
        )
        baselines[baseline.name] = b_metrics
        all_ranks[baseline.name], tops[baseline.name] = b_ranks, b_top
        log.info("%s on %s: NDCG@10 %.4f", baseline.name, split, b_metrics["ndcg@10"])
    seconds["baselines"] = time.perf_counter() - started
    log.info(
        "ranked %d users against %d movies: model %.1f s, baselines %.1f s",
        data.num_users,
        data.num_items - F.NUM_RESERVED,
        seconds["model"],
        seconds["baselines"],
    )

    lengths = data.history_lengths
    train_counts = prepared.train_item_counts()
    pop_rank = popularity_ranks(popularity)
    result = {
        "run_dir": str(run_dir),
        "split": split,
        "dataset": _dataset_name(cfg, prepared),
        "users": data.num_users,
        "catalog_items": data.num_items - F.NUM_RESERVED,
        "protocol": PROTOCOL,
        "model": {MODEL_NAME: metrics},
        "baselines": baselines,
        "by_history_length": {n: by_history_length(r, lengths) for n, r in all_ranks.items()},
        "by_target_count": {
            n: by_target_count(r, data.targets, train_counts) for n, r in all_ranks.items()
        },
        "ndcg_curve": {
            "k": list(CURVE_KS),
            **{n: ndcg_curve(r) for n, r in all_ranks.items()},
        },
        "popularity_bias": {n: popularity_profile(t, pop_rank) for n, t in tops.items()},
        "cold_start": cold_start(all_ranks, data.targets, prepared),
        "published": [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}
            | {"note": PUBLISHED_NOTE}
            for row in PUBLISHED
        ],
        "seconds": seconds,
    }

    started = time.perf_counter()
    title = f"{split} split, {data.num_users} users, full ranking"
    curves = {k: v for k, v in result["ndcg_curve"].items() if k != "k"}
    pngs = {
        "ndcg_at_k": plot_ndcg_curve(
            curves,
            f"NDCG@K, {title}",
            PUBLISHED if result["dataset"].startswith("MovieLens-1M") else (),
        ),
        "by_history_length": plot_by_length(
            result["by_history_length"], f"NDCG@10 by history length, {title}"
        ),
        "popularity": plot_popularity(
            tops,
            pop_rank,
            f"Popularity of the top-{COVERAGE_K} recommendations vs the catalog ({split})",
        ),
    }
    out = eval_dir(run_dir, split)
    out.mkdir(parents=True, exist_ok=True)
    for key, png in pngs.items():
        (out / PLOTS[key]).write_bytes(png)
    seconds["plots"] = time.perf_counter() - started
    seconds = {k: round(v, 2) for k, v in seconds.items()}
    result["seconds"] = seconds
    (out / "report.md").write_text(format_report(result), encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps(result, indent=2, sort_keys=True, allow_nan=True) + "\n", encoding="utf-8"
    )
    log_to_tensorboard(result, pngs, run_dir / "logs" / "eval", step=_train_epochs(run_dir))
    return result


def eval_dir(run_dir: str | Path, split: str) -> Path:
    """Where :func:`evaluate` writes ``split``'s report: ``<run>/eval/<split>/``."""
    return Path(run_dir) / "eval" / split


def former_eval_dir(run_dir: str | Path, split: str) -> Path:
    """Where bst wrote ``split``'s report before ``eval/<split>/``: ``<run>/eval/`` for
    the test split, ``<run>/eval-<split>/`` for another."""
    return Path(run_dir) / ("eval" if split == TEST else f"eval-{split}")


def find_report(run_dir: str | Path, split: str = TEST) -> Path:
    """The folder holding ``split``'s evaluation of a run: ``eval/<split>/``, or the
    folder an earlier bst wrote it to (:func:`former_eval_dir`)."""
    for folder in (eval_dir(run_dir, split), former_eval_dir(run_dir, split)):
        if (folder / "metrics.json").is_file():
            return folder
    raise UsageError(
        f"no evaluation of the {split} split in {run_dir}: run python -m bst.evaluate "
        f"--run-dir {run_dir} --split {split}"
    )


def read_report(run_dir: str | Path, split: str = TEST) -> dict:
    """``split``'s ``metrics.json`` as :func:`evaluate` wrote it (either layout)."""
    return json.loads((find_report(run_dir, split) / "metrics.json").read_text(encoding="utf-8"))


def _train_epochs(run_dir: Path) -> int:
    """The run's epoch count (the step of train's own ``test/`` scalars), else 0."""
    try:
        return int(json.loads((run_dir / "metrics.json").read_text()).get("epochs", 0))
    except (OSError, ValueError, TypeError):
        return 0


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m bst.evaluate``: arguments as in :func:`bst.cli.evaluate_parser`."""
    with cli_errors():
        args = cli.parse("evaluate", argv)
        cli.setup_logging(args.verbose)
        result = evaluate(args.run_dir, args.split, args.users_per_batch)
    rows = {MODEL_NAME: result["model"][MODEL_NAME], **result["baselines"]}
    print("\n" + results_table(result["split"], result["users"], rows))
    took = result["seconds"]
    print(
        f"ranked {result['users']:,} users against {result['catalog_items']:,} movies in "
        f"{sum(took.values()):.0f} s ("
        + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in took.items())
        + ")"
    )
    print(f"report: {eval_dir(args.run_dir, result['split']) / 'report.md'}")
    return result


if __name__ == "__main__":
    main()
