"""Shared fixtures: tiny synthetic ML-1M files, a prepared folder, and the real data if present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import config
from bst.data.synthetic import generate

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    """``$BST_DATA_DIR`` if set, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("BST_DATA_DIR") or REPO.parent / "shared" / "data")


def real_ml1m() -> Path:
    root = real_data_root()
    for candidate in (root / "ml-1m", root):
        if (candidate / "ratings.dat").is_file():
            return candidate
    pytest.skip(f"real MovieLens-1M files not found under {root} (set BST_DATA_DIR)")


def real_sasrec() -> Path:
    folder = real_data_root() / "ml-1m-sasrec"
    if not (folder / "ml-1m.txt").is_file():
        pytest.skip(f"SASRec benchmark file not found in {folder} (set BST_DATA_DIR)")
    return folder


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, users=30, movies=20, seed=1, min_len=4, max_len=15)
    return out


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, synthetic_dir) -> Path:
    from bst.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "p"
    prepare(synthetic_dir, out, num_shards=2)
    return out


@pytest.fixture()
def tiny_cfg(prepared_dir) -> config.Config:
    return config.replace(
        config.tiny(), {"data.prepared_dir": str(prepared_dir), "model.max_len": 6}
    )


def write_dat(folder: Path, name: str, lines: list[str], encoding: str = "latin-1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def tiny_on_files(data_dir: Path, run_dir: Path, *flags: str, export_dir: str = "") -> list[str]:
    """``bst.train`` arguments: the ``tiny`` preset on raw files in ``data_dir`` (not
    generated), writing ``run_dir``, exporting to ``export_dir`` ("" = no export)."""
    return [
        "--preset",
        "tiny",
        "--set",
        "data.synthetic=false",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run_dir),
        *(["--model-dir", export_dir] if export_dir else ["--no-export"]),
        *flags,
    ]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished ``python -m bst.train --preset tiny`` run (trained once per session)."""
    from bst import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train.main(
        ["--preset", "tiny", "--run-dir", str(run_dir), "--model-dir", str(run_dir / "saved")]
    )
    return run_dir


def served_and_expected_top_k(cfg, model, prepared, loaded, k: int = 5, batch: int = 12):
    """The first ``batch`` test histories as movie-id strings, the servable's top ``k``
    for them and the in-memory model's top ``k`` from the same inputs the servable
    builds (only movie ids known; seen movies and the reserved rows excluded)."""
    import numpy as np
    import tensorflow as tf

    from bst import features as F
    from bst.model import model_inputs
    from bst.pipeline import make_dataset

    vocab = np.array(["", "[UNK]", *prepared.vocabs[F.MOVIE_ID]])
    features, _ = next(iter(make_dataset(cfg, "test", batch_size=batch, shuffle=False)))
    ids = features[F.MOVIE_ID].numpy()
    unknown = np.where(ids > 0, F.UNKNOWN, F.PAD).astype(np.int32)
    inputs = {F.MOVIE_ID: ids, F.TIME_GAP: unknown, F.RATING: unknown}
    inputs.update({n: np.full(len(ids), F.UNKNOWN, np.int32) for n in F.PROFILE_FEATURES})
    scores = model(model_inputs(inputs), training=False)["scores"].numpy()
    scores[:, : F.NUM_RESERVED] = -np.inf
    for row in range(len(ids)):
        scores[row, ids[row][ids[row] > 0]] = -np.inf
    expected = vocab[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    out = loaded.signatures["serving_default"](history=tf.constant(vocab[ids]))
    return vocab[ids], out["movie_ids"].numpy().astype(str)[:, :k], expected


def brute_force_metrics(score_rows, histories, targets) -> dict[str, float]:
    """HR@10, NDCG@10 and MRR counted one user and one movie at a time, independently of
    bst.metrics: a target's rank is 1 + the movies (not reserved, not in the history
    unless it is the target) scoring at least as high (ties count against it); a target
    that is padding or unknown counts as never ranked."""
    import math

    from bst import features as F

    hits = ndcg = mrr = 0.0
    for row, history, target in zip(score_rows, histories, targets, strict=True):
        target = int(target)
        if target < F.NUM_RESERVED:
            continue
        seen = {int(i) for i in history} - {target}
        rank = 1 + sum(
            1
            for item in range(F.NUM_RESERVED, len(row))
            if item != target and item not in seen and row[item] >= row[target]
        )
        hits += rank <= 10
        ndcg += 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0
        mrr += 1.0 / rank
    users = len(targets)
    return {"hr@10": hits / users, "ndcg@10": ndcg / users, "mrr": mrr / users}
