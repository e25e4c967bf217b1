"""Train BST: ``python -m bst.train``.

    python -m bst.train --preset tiny --run-dir runs/tiny            # seconds, synthetic data
    python -m bst.train --preset ml1m --data-dir ../shared/data/ml-1m --run-dir runs/ml1m
    python -m bst.train --preset ml1m --set model.num_blocks=3 --set train.learning_rate=5e-4
    python -m bst.train --preset tiny --run-dir runs/tiny --fresh --no-export

Prepares the data when ``<run-dir>/prepared`` (or ``data.prepared_dir``) is missing,
trains with full-ranking validation HR@10/NDCG@10 after every epoch and early
stopping on validation NDCG@10 (best weights restored), then evaluates on the test
split next to the popularity baseline. Writes into the run folder:

* ``config.json``: the resolved config; ``metrics.json``: test metrics, baselines,
  epochs, train seconds;
* ``logs/``: TensorBoard events (per-step loss and learning rate, per-epoch
  validation metrics, hparams, movie embeddings in the projector);
* ``backup/``: training state after each epoch (with the plan, the seconds trained and
  ``backup/config.json``, the config it belongs to), so a killed run resumes from its
  last completed epoch, on the rest of its time budget, when the same command is run
  again; another config is refused (``--fresh`` discards the backup);
* ``model.weights.h5``: the best weights.

Devices: ``--tpu NAME`` uses TPUStrategy; ``TF_CONFIG`` listing several workers uses
MultiWorkerMirroredStrategy; several GPUs use MirroredStrategy; otherwise the
default strategy. ``train.mixed_precision`` switches to mixed float16 (GPU) or
bfloat16 (TPU).
"""

from __future__ import annotations

from bst import cli

if __name__ == "__main__":
    cli.early("train")  # --help and mistakes answer before TensorFlow starts

import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import config as config_lib
from bst import features as F
from bst import machine
from bst.baselines import all_baselines
from bst.callbacks import (
    AverageWeights,
    BackupLogger,
    PlannedEarlyStopping,
    Progress,
    RankingCallback,
    StepLogger,
    TimeBudget,
    read_history,
    write_hparams,
    write_projector,
)
from bst.clock import RunClock
from bst.config import Config
from bst.data.download import size_text
from bst.data.prepare import ensure_prepared
from bst.data.prepared import Prepared
from bst.devices import (
    accelerator,
    is_chief,
    make_strategy,
    resolve,
    set_precision,
    strategy_name,
    task_info,
)
from bst.errors import UsageError, cli_errors, writable_dir
from bst.export import export
from bst.loss_choice import choose_loss, time_loss_step
from bst.metrics import (
    KS,
    MODEL_NAME,
    SELECTION_METRIC,
    TABLE_METRICS,
    evaluate_scores,
    format_table,
    load_eval_data,
    results_table,
)
from bst.model import Tables, build_model, weights_digest
from bst.optim import (
    LARGEST_BATCH,
    MIN_STEPS_PER_EPOCH,
    SchedulePlanner,
    auto_batch_size,
    epoch_parts,
    make_optimizer,
)
from bst.pipeline import make_dataset
from bst.scoring import rank_metrics
from bst.task import BSTTrainer, logits_bytes_per_entry, loss_chunk

import tensorflow as tf  # isort: skip

log = logging.getLogger("bst.train")

HISTORY_FILE = "history.jsonl"


def count_train_windows(prepared: Prepared, max_len: int, all_windows: bool) -> int:
    """Training examples per epoch: one per user, or one per ``max_len`` window."""
    return sum(
        (math.ceil((len(s) - 1) / max_len) if all_windows else 1)
        for s in prepared.sequences.train()
        if len(s) >= 2
    )


def resolve_batch_size(cfg: Config, prepared: Prepared) -> Config:
    """``cfg`` with ``train.batch_size=-1`` made concrete for ``prepared``'s training data
    (:func:`bst.optim.auto_batch_size`, logged); any other value unchanged."""
    if cfg.train.batch_size != -1:
        return cfg
    windows = count_train_windows(prepared, cfg.model.max_len, cfg.data.all_windows)
    batch = auto_batch_size(windows)
    log.info(
        "batch size %d (train.batch_size=-1: %d, or smaller so that %d training examples "
        "make at least %d steps an epoch)",
        batch,
        LARGEST_BATCH,
        windows,
        MIN_STEPS_PER_EPOCH,
    )
    return config_lib.replace(cfg, {"train.batch_size": batch})


def resolve_epochs(cfg: Config, windows: int) -> Config:
    """``cfg`` with ``train.steps_per_epoch=-1`` made concrete for ``windows`` training
    examples: a pass over them, or equal parts of it when it is longer than
    :data:`bst.optim.MAX_EPOCH_STEPS` steps (``train.epochs`` then multiplied, so it still
    counts passes); logged. 0 becomes the pass's steps; any other value is kept."""
    pass_steps = max(1, math.ceil(windows / cfg.train.batch_size))
    if cfg.train.steps_per_epoch > 0:
        return cfg
    if cfg.train.steps_per_epoch == 0:
        return config_lib.replace(cfg, {"train.steps_per_epoch": pass_steps})
    steps, parts = epoch_parts(pass_steps)
    if parts > 1:
        log.info(
            "a pass over the training data is %d steps: validated every %d steps, %d "
            "epochs a pass (train.steps_per_epoch=-1; train.epochs=%d passes = %d epochs)",
            pass_steps,
            steps,
            parts,
            cfg.train.epochs,
            cfg.train.epochs * parts,
        )
    return config_lib.replace(
        cfg, {"train.steps_per_epoch": steps, "train.epochs": cfg.train.epochs * parts}
    )


def _check_rating_head(cfg: Config, prepared: Prepared) -> None:
    """``model.rating_head`` predicts whole stars 1-5: refused on data with another scale
    or no ratings, where it would learn from nothing or from the wrong numbers."""
    scale = prepared.manifest.get("rating_scale", list(range(1, F.NUM_RATINGS + 1)))
    if cfg.model.rating_head and list(scale) != list(range(1, F.NUM_RATINGS + 1)):
        what = f"ratings on the scale {scale}" if scale else "no ratings"
        raise UsageError(
            f"model.rating_head predicts ratings of 1 to 5 stars, but this data has {what}: "
            "set model.rating_head=false"
        )


BACKUP_CONFIG = "config.json"  # in backup/: the config (as requested) the backup belongs to


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(before: str, now: str) -> list[str]:
    """``key: before -> now`` for every config field that differs between two
    ``Config.to_json()`` texts."""
    old, new = _flat(json.loads(before)), _flat(json.loads(now))
    return [
        f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def check_backup(requested: str, backup: Path) -> None:
    """Refuses to resume ``backup`` (a stopped run's state) under another config: it
    would train the old state on new settings, or end in a shape error. One line naming
    the fields that differ and the ways out. A backup without its config (written before
    backups recorded it) is resumed as before."""
    saved = backup / BACKUP_CONFIG
    if not saved.is_file():
        return
    differences = config_differences(saved.read_text(encoding="utf-8"), requested)
    if not differences:
        log.info("resuming the stopped run in %s (same config)", backup.parent)
        return
    shown = "; ".join(differences[:6]) + (
        f"; and {len(differences) - 6} more" if len(differences) > 6 else ""
    )
    raise UsageError(
        f"{backup.parent} holds a stopped run with another config ({shown}): run the "
        "command that started it to resume it, add --fresh to discard its backup and "
        "start afresh, or give another --run-dir"
    )


def resolve_loss(cfg: Config, prepared: Prepared, device: str, alone: bool = True) -> Config:
    """``cfg`` with ``model.loss=auto`` made concrete for ``prepared``'s catalog
    (:func:`bst.loss_choice.choose_loss`, logged with the reason); any other value unchanged.
    On a CPU (``device``) training ``alone`` (one replica, one worker: every process
    must choose alike), where the full softmax's logits fit and the catalog is larger
    than the sampled loss's draw, one step of each loss is timed first
    (:func:`bst.loss_choice.time_loss_step`, a few seconds): the choice is this machine's."""
    if cfg.model.loss != "auto":
        return cfg
    catalog = prepared.num_trained_items - F.NUM_RESERVED
    measured = None
    fits = loss_chunk(cfg, catalog) is None
    if device == "cpu" and alone and fits and catalog > cfg.model.num_negatives:
        measured = (
            time_loss_step(cfg, catalog, "softmax"),
            time_loss_step(cfg, catalog, "sampled"),
        )
    loss, why = choose_loss(cfg, catalog, measured)
    log.info("loss: %s (%s)", loss, why)
    return config_lib.replace(cfg, {"model.loss": loss})


def _log_loss_memory(cfg: Config, trainer: BSTTrainer) -> None:
    """Says how the loss runs: the full softmax's logits in one pass or in chunks under
    ``train.logits_mib``, or the sampled loss's negatives."""
    catalog = trainer.num_trained - F.NUM_RESERVED
    per_row = catalog * logits_bytes_per_entry(cfg.train.bf16_logits, cfg.model.mask_seen)
    full = size_text(cfg.train.batch_size * cfg.model.max_len * per_row)
    if trainer.loss_kind == "sampled":
        negatives = trainer.negatives
        log.info(
            "loss: sampled softmax, %s of %d movies, log-Q corrected%s (the full "
            "softmax's logits would take %s a batch)",
            f"{negatives.num} shared negatives drawn each step"
            if negatives is not None
            else f"in-batch negatives (at most {cfg.model.num_negatives} positions)",
            catalog,
            ", seen movies masked" if trainer.mask_seen else "",
            full,
        )
    elif trainer.chunk is None:
        log.info(
            "loss: softmax over %d movies in one pass (a full batch's logits: %s; "
            "train.logits_mib=%d)",
            catalog,
            full,
            cfg.train.logits_mib,
        )
    else:
        log.info(
            "loss: softmax over %d movies in chunks of %d tokens (a full batch's logits "
            "would take %s, over train.logits_mib=%d; the same loss, the softmax "
            "computed twice)",
            catalog,
            trainer.chunk,
            full,
            cfg.train.logits_mib,
        )


def train(
    cfg: Config,
    run_dir: str | Path,
    tpu: str | None = None,
    export_dir: str | None = None,
    fresh: bool = False,
    now: Callable[[], float] = time.perf_counter,
    extra_callbacks: Sequence[tf.keras.callbacks.Callback] = (),
) -> dict:
    """Train, evaluate and write the run folder; returns the metrics dict.

    A backup in ``run_dir`` (a run that was stopped) is resumed when it belongs to the
    same config, refused when not (:func:`check_backup`); ``fresh`` discards it first.
    ``now`` is the run's time source (:class:`bst.clock.RunClock`) and
    ``extra_callbacks`` go first in ``fit``'s list: tests use them to run on a clock that
    counts steps and to stop a run mid-way."""
    cfg = config_lib.validate(cfg)
    run_dir = writable_dir(run_dir, "run folder")
    chief = is_chief()
    where = machine.describe(tf)
    log.info("machine: %s", machine.line(where))
    backup = run_dir / "backup"
    if fresh and chief and backup.exists():
        shutil.rmtree(backup)
        log.info("--fresh: discarded the backup in %s", backup)
    requested = cfg.to_json()  # what the command asked for, before anything is resolved
    check_backup(requested, backup)
    kind, index, workers = task_info()
    strategy = make_strategy(tpu)
    cfg = ensure_prepared(cfg, run_dir, chief=chief)
    prepared = Prepared.open(cfg.data.prepared_dir)
    _check_rating_head(cfg, prepared)
    cfg = resolve_batch_size(cfg, prepared)
    windows = count_train_windows(prepared, cfg.model.max_len, cfg.data.all_windows)
    cfg = resolve_epochs(cfg, windows)
    pass_steps = max(1, math.ceil(windows / cfg.train.batch_size))
    cfg, notes = resolve(cfg, strategy)
    for note in notes:
        log.info(note)
    alone = strategy.num_replicas_in_sync == 1 and workers <= 1
    cfg = resolve_loss(cfg, prepared, accelerator(strategy), alone)  # bf16_logits known
    if chief:
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    policy = set_precision(cfg, strategy)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    item_counts = prepared.train_item_counts()
    steps = cfg.train.steps_per_epoch
    log.info(
        "%d training examples, %d steps/epoch, batch %d, %d replica(s), %s, policy %s",
        windows,
        steps,
        cfg.train.batch_size,
        strategy.num_replicas_in_sync,
        strategy_name(strategy),
        policy,
    )

    with strategy.scope():
        model = build_model(cfg, Tables.from_prepared(prepared, cfg.model.text))
        trainer = BSTTrainer(model, cfg, item_frequency=item_counts)
        trainer.compile(
            optimizer=make_optimizer(cfg, trainer.planned_steps),
            steps_per_execution=1,
            jit_compile=cfg.train.jit_compile == "true",
        )
        _log_loss_memory(cfg, trainer)
        uncached = config_lib.replace(cfg, {"data.cache": False})  # read 2 rows, cache none
        sample, _ = next(iter(make_dataset(uncached, "validation", batch_size=2, shuffle=False)))
        trainer(sample, training=False)  # build now: BackupAndRestore needs built weights

    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(
            cfg, "train", input_context=ctx, repeat=True, drop_remainder=workers > 1
        )
    )
    logdir = run_dir / "logs" if chief else run_dir / "workers" / f"{kind}-{index}" / "logs"
    writer = tf.summary.create_file_writer(str(logdir / "train"))
    write_hparams(cfg, writer, run_dir.name)
    history_path = run_dir / HISTORY_FILE if chief else logdir / HISTORY_FILE
    if not backup.exists() and history_path.exists():
        history_path.unlink()  # a fresh run, not a resume: start the history afresh
    clock = RunClock(trainer.elapsed_seconds, now)
    ranking = RankingCallback(
        cfg, writer, history_path, cfg.train.max_minutes, prepared, clock, pass_steps
    )
    early_stopping = PlannedEarlyStopping(
        cfg.train.patience,
        trainer.planned_steps,
        steps,
        backup=backup,  # every worker reads a resumed run's state; the chief writes it
        monitor=f"val_{SELECTION_METRIC}",
        mode="max",
        restore_best_weights=True,
    )
    budget = TimeBudget(cfg.train.max_minutes, clock, lambda: ranking.validation_seconds)
    average = AverageWeights()  # validate the moving average of the weights (train.ema)
    # At an epoch's end, in this order: validation, early stopping, the plan and the
    # budget on the run's clock, then the backup, which so holds this epoch's plan and
    # the seconds trained up to it.
    callbacks = [
        *extra_callbacks,
        clock,
        Progress(steps),
        average,
        ranking,
        early_stopping,
        average.restore,
        SchedulePlanner(
            trainer.planned_steps, steps, cfg.train.epochs, cfg.train.max_minutes, clock
        ),
        budget,
        clock.record,
        tf.keras.callbacks.BackupAndRestore(str(backup)),
        BackupLogger(backup, requested if chief else None, early_stopping if chief else None),
        StepLogger(writer),
    ]
    history = trainer.fit(
        train_ds,
        epochs=cfg.train.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=2 if sys.stdout.isatty() else 0,
    )
    training_peak = machine.peak_memory_gib()  # before the test split's evaluation
    process_seconds = clock.this_process()
    train_seconds = clock.elapsed()  # the whole run's, resumes included
    epochs = ranking.last_epoch  # counts epochs before a resume too
    this_run = len(history.history.get("loss", []))
    best = early_stopping.best if early_stopping.best is not None else float("nan")

    test_data = load_eval_data(prepared, "test")
    test = rank_metrics(model, cfg, "test", test_data)
    baselines = {}
    for baseline in all_baselines():
        baseline.fit(prepared)
        baselines[baseline.name], _, _ = evaluate_scores(
            baseline.scorer(test_data), test_data, ks=KS
        )
    result = {
        "test": test,
        "baselines": baselines,
        "validation": {
            f"best_{SELECTION_METRIC}": float(best),
            "best_epoch": early_stopping.best_epoch + 1,
            "users": ranking.data.num_users,  # the fixed sample when train.val_users cut it
        },
        "epochs": epochs,
        "stopped_by": (
            "time budget"
            if budget.stopped_epoch
            else "early stopping"
            if early_stopping.stopped_epoch
            else "max epochs"
        ),
        "steps": int(trainer.optimizer.iterations.numpy()),
        "passes": round(int(trainer.optimizer.iterations.numpy()) / pass_steps, 3),
        "stopped_at_step": budget.stopped_step,  # the budget ended an epoch there, or None
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(process_seconds / max(this_run, 1), 1),
        "examples_per_epoch": windows,
        "machine": where,  # the CPU, its vector extensions, TensorFlow and its threads
        # this process's peak resident memory when training ended and at the end
        "peak_memory_gib": {"training": training_peak, "end": machine.peak_memory_gib()},
        "strategy": strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "weights_sha256": weights_digest(model),
        "planned_steps": int(trainer.planned_steps.numpy()),
        "loss": trainer.loss_kind,
        "loss_chunk_tokens": trainer.chunk,  # None: the loss's logits in one pass
        "loss_negatives": trainer.negatives.num if trainer.negatives is not None else None,
        "history": read_history(history_path),
    }
    table = format_table({MODEL_NAME: test, **baselines}, TABLE_METRICS)
    if chief:
        model.save_weights(str(run_dir / "model.weights.h5"))
        if export_dir:
            result["exported"] = str(export(run_dir, export_dir))
        (run_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        (run_dir / "report.md").write_text(f"# Test metrics ({cfg.preset})\n\n{table}\n")
        write_projector(model, prepared, logdir)
        with writer.as_default(step=epochs):
            for key in ("hr@10", "ndcg@10", "mrr"):
                tf.summary.scalar(f"test/{key}", test[key])
        writer.flush()
    else:
        out = run_dir / "workers" / f"{kind}-{index}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print("\n" + results_table("test", test["users"], {MODEL_NAME: test, **baselines}))
    print(
        f"{epochs} epoch{'s' if epochs != 1 else ''}, {train_seconds:.0f} s; run folder: {run_dir}"
    )
    if result.get("exported"):
        print(f"exported the model as {result['exported']}")
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m bst.train``: arguments as in :func:`bst.cli.train_parser`."""
    with cli_errors(interrupted="resume with the same command"):
        args = cli.parse("train", argv)
        cli.setup_logging(args.verbose)
        return train(
            args.cfg, args.run_dir, tpu=args.tpu, export_dir=args.export_dir, fresh=args.fresh
        )


if __name__ == "__main__":
    main()
