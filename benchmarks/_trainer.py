"""Shared by the step benchmarks: the ``ml1m`` preset's trainer on prepared real ML-1M."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("BST_DATA_DIR") or REPO.parent / "shared" / "data") / "ml-1m"


def ml1m_trainer(data_dir: str, prepared: str | None, overrides: list[str], optimizer=None):
    """``(cfg, prepared, trainer)``: the ``ml1m`` preset plus ``--set`` overrides, compiled
    with ``optimizer`` (default: the run's own, :func:`bst.optim.make_optimizer`).
    Prepares ``data_dir`` into ``prepared`` (default a temporary folder reused across
    runs) when that has no manifest yet."""
    import bst  # noqa: F401  (Keras 2 before TensorFlow)
    from bst import config
    from bst.data.prepare import is_prepared, prepare
    from bst.data.prepared import Prepared
    from bst.model import Tables, build_model
    from bst.optim import make_optimizer
    from bst.task import BSTTrainer
    from bst.train import resolve_batch_size

    prepared_dir = Path(prepared or Path(tempfile.gettempdir()) / "bst-bench-prepared")
    if not is_prepared(prepared_dir):
        prepare(data_dir, prepared_dir)
    cfg = config.replace(
        config.ml1m(),
        {"data.prepared_dir": str(prepared_dir), **config.parse_overrides(overrides)},
    )
    data = Prepared.open(prepared_dir)
    cfg = resolve_batch_size(cfg, data)
    trainer = BSTTrainer(build_model(cfg, Tables.from_prepared(data, cfg.model.text)), cfg)
    trainer.compile(
        optimizer=optimizer(cfg) if optimizer else make_optimizer(cfg, trainer.planned_steps)
    )
    return cfg, data, trainer
