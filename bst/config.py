"""Typed, frozen configuration: presets (``tiny``, ``ml1m``, ``ml1m-long``) and ``--set a.b=value``
overrides.

A run's resolved config is saved as JSON beside it (``config.json``) and can be
loaded back with :func:`from_dict`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from bst.errors import UsageError

DEFAULT_CACHE = Path("~/.cache/bst")


# The names of bst.data.formats' tables (checked equal there), for validation here.
FORMAT_NAMES = (
    "auto", "ml1m", "ml-10m", "ml-100k", "ml-csv", "sasrec", "interactions",
    "ml-1m", "ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small",
)  # fmt: skip
DATASET_NAMES = (
    "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small",
)  # fmt: skip


def default_data_dir() -> Path:
    """Where raw data lives: ``$BST_DATA_DIR`` or ``~/.cache/bst``."""
    return Path(os.environ.get("BST_DATA_DIR") or DEFAULT_CACHE).expanduser()


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is prepared.

    Attributes:
        data_dir: folder with the raw files (any format below, or a GroupLens release's
            folder inside it); empty means ``$BST_DATA_DIR`` or ``~/.cache/bst``
            (downloading ``dataset``, ML-1M by default, there).
        format: ``auto`` (detected from the files), ``ml1m``, ``ml-10m``, ``ml-100k``,
            ``ml-csv`` (ML-20M/25M/32M/latest/latest-small; those names work too),
            ``sasrec`` (``user item`` lines) or ``interactions`` (a generic table;
            :mod:`bst.data.formats` lists what each reads).
        dataset: a GroupLens release to use, downloading it into ``data_dir`` when it is
            not there: ``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-20m``, ``ml-25m``,
            ``ml-32m``, ``ml-latest``, ``ml-latest-small``; empty = what ``data_dir`` holds.
        user_column, item_column, time_column, rating_column: column names of a generic
            ``interactions`` table (``users``/``items`` tables name their id columns the
            same); ``rating_column=''`` reads no ratings.
        title_column, genres_column, year_column: the ``items`` table's columns.
        time_unit: the generic table's integer times: ``auto`` (milliseconds when a
            value is past 2100 in seconds), ``s`` or ``ms``.
        side_data_dir: for ``sasrec``: a folder with ``movies.dat``/``users.dat`` to join
            side features through the id-mapping files; empty = none.
        prepared_dir: where ``pipelines.prepare`` writes its outputs; empty means
            ``<run_dir>/prepared`` for training.
        synthetic: generate synthetic ML-1M-format files instead of reading real ones.
        synthetic_users / synthetic_movies: size of the synthetic data.
        num_shards: TFRecord shards per split.
        runner: how the prepare step runs: ``in-memory`` (pandas on this machine, the
            default) or ``beam`` (an Apache Beam pipeline on the DirectRunner; the extra
            ``.[beam]``; formats ``ml1m`` and ``ml-csv``). ``pipelines.prepare --runner
            beam`` also takes Beam's own options, for other runners.
        enriched: optional CSV from ``pipelines.enrich`` (movie overviews).
        catalogs: movie catalogs (CSV with TMDB's columns) to join to ``movies.dat`` by
            fuzzy title matching before preparing (``bst.train --catalog``): the join
            writes ``<run_dir>/enriched/movies_enriched.csv`` and its report there, and
            that table becomes ``enriched`` (so a saved config holds both; a command
            line may give only one). Empty = no join. ``--set`` takes them
            comma-separated.
        cold_fraction: the cold-start protocol: this fraction of the rated movies that
            have an overview is held out of training entirely (their training events are
            removed; validation and test keep them), and they enter the catalog as
            content-only movies, embedded from genres, year and overview. 0 (the
            default) = off. Needs overviews (``catalogs`` or ``enriched``).
        all_windows: cut training histories longer than ``model.max_len`` into several
            windows (True) or keep only the newest window (False, as SASRec does).
        cache: keep featurized examples in memory after the first epoch.
        bucket_by_length: batch training histories of similar length together and cut
            their common left padding (same results, less computation).
    """

    data_dir: str = ""
    format: str = "auto"
    dataset: str = ""
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"
    rating_column: str = "rating"
    title_column: str = "title"
    genres_column: str = "genres"
    year_column: str = "year"
    time_unit: str = "auto"
    side_data_dir: str = ""
    prepared_dir: str = ""
    synthetic: bool = False
    synthetic_users: int = 60
    synthetic_movies: int = 40
    num_shards: int = 4
    runner: str = "in-memory"
    enriched: str = ""
    catalogs: tuple[str, ...] = ()
    cold_fraction: float = 0.0
    all_windows: bool = True
    cache: bool = True
    bucket_by_length: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """The BST model.

    Attributes:
        max_len: events per sequence (older ones are cut, shorter ones padded on the left).
        dim: width of embeddings and transformer blocks.
        num_blocks: transformer blocks.
        num_heads: attention heads; must divide ``dim``.
        ff_mult: feed-forward width as a multiple of ``dim``.
        dropout: dropout rate in embeddings and blocks.
        attention_dropout: dropout rate on the attention weights.
        feature_dropout: probability of replacing an optional feature (time gap, rating,
            profile, text) by UNKNOWN during training, so requests without it work.
        loss: ``auto`` (the default): ``softmax`` while a full batch's logits fit
            ``train.logits_mib``, ``sampled`` past it, and on a CPU whose full-softmax
            step measures 1.25x the sampled one's or more (slow matrix products;
            :func:`bst.loss_choice.choose_loss`); ``bst.train`` logs which and why, and the saved
            config holds it; ``softmax``: cross-entropy over the full
            catalog (over chunks of tokens past ``train.logits_mib``: the same loss);
            ``sampled``: a sampled softmax (``model.negatives``, log-Q corrected).
        negatives: the ``sampled`` loss's negatives: ``shared`` (the default:
            ``num_negatives`` distinct movies drawn from the catalog each step by
            training popularity ** 0.75, shared by every position of the batch) or
            ``in-batch`` (TFRS ``Retrieval``: at most ``num_negatives`` positions of the
            batch, whose targets are each other's negatives).
        num_negatives: negatives of the ``sampled`` loss (see ``negatives``).
        mask_seen: at each position, the movies the history already holds are not
            negatives of the softmax (evaluation and serving never rank them), unless one
            is the target. With ``softmax`` and shared ``sampled`` negatives; ``bst.train``
            turns it off for ``in-batch`` negatives (and refuses ``--set
            model.mask_seen=true`` with them).
        id_dropout: in training, drop each movie's id embedding from its token with this
            probability (one draw per movie and step), so genres, year and overview learn
            to carry a movie alone, as they must for a movie nobody has rated (the
            cold-start protocol, ``bst.export --add-movies``). 0 = off.
        text: embed each movie's overview when the prepared folder has them (false:
            the same folder, the same held-out movies, no text; for comparisons).
        rating_head: add the BST rating-prediction head.
    """

    max_len: int = 200
    dim: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    ff_mult: int = 1
    dropout: float = 0.2
    attention_dropout: float = 0.0
    feature_dropout: float = 0.3
    loss: str = "auto"
    negatives: str = "shared"
    num_negatives: int = 2048
    mask_seen: bool = True
    id_dropout: float = 0.0
    text: bool = True
    rating_head: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Optimization and run control.

    Attributes:
        batch_size: global batch size (split across replicas); -1 (the default) = 128,
            or smaller on small data so an epoch has at least 24 steps
            (:func:`bst.optim.auto_batch_size`; the saved config holds the number).
        epochs: maximum epochs.
        learning_rate: peak learning rate, reached after the warm-up.
        schedule: after the warm-up, ``cosine`` (to ``final_lr_fraction`` of the peak at the
            end of the planned run), ``linear`` (the same, in a straight line) or ``constant``.
        warmup_fraction: linear warm-up over this fraction of the planned steps ...
        warmup_steps: ... but at most this many steps.
        final_lr_fraction: the learning rate at the end of the planned run, as a fraction of
            the peak.
        ema: keep an exponential moving average of the weights with this momentum (its
            horizon is about ``1 / (1 - ema)`` steps; over the first steps the momentum is
            ``(1 + t) / (10 + t)`` when that is smaller, so the average forgets the
            initial weights); validation, early stopping and the saved, evaluated and
            exported weights are the average's. 0 = off, the default: at 0.999 the best
            validation NDCG@10 was the same on ML-1M (each mark reached sooner) and lower
            on a 10 % user subsample (docs/experiments.md).
        weight_decay: AdamW weight decay (decoupled, every weight); 0 = Adam. The default
            0.1 was chosen on validation NDCG@10, on ML-1M and on a 10 % user subsample
            (docs/experiments.md).
        patience: early-stopping patience in epochs on validation NDCG@10; -1 (the default)
            = a fifth of the planned epochs, at least 10, so that a run over few, short
            epochs (small data) is not stopped long before its learning rate has decayed.
        seed: seed for shuffling, initialization and feature dropout.
        mixed_precision: use mixed_float16 (GPU) / mixed_bfloat16 (TPU).
        bf16_logits: compute the catalog-wide logits matmul of the loss from bfloat16
            inputs (float32 accumulation; the softmax and loss stay float32), faster for
            that matmul (docs/results.md). Used where bfloat16 is fast (a GPU, a TPU, a CPU with
            AVX512-BF16 or AMX); elsewhere it is turned off, and the saved config says so.
        steps_per_epoch: training steps between two validations (each such epoch is
            validated, backed up and counted by early stopping and the budget). -1 (the
            default) = a pass over the training data, cut into equal parts of at most
            500 steps when it is longer (so a long pass is still validated every so
            often; ``train.epochs`` then counts passes, and the saved config holds the
            epochs and steps of the parts); 0 = one pass, however long; N = N steps.
        max_minutes: a wall-clock budget (0 = none) of the whole run, a killed and
            resumed run's earlier processes included (``bst.clock``): training stops after
            the epoch that would make the next one overrun it, or at the step where what
            is left would not cover a validation (when one epoch is longer than the
            budget); the epoch so ended is validated, and the best validated weights are
            restored. The planned run (what the schedule decays over, in steps) is the
            epochs that fit in it, or the steps that fit when not one epoch does.
            -1 (the default) = 30 minutes on a CPU (60 for the ``ml1m-long`` preset), no
            budget on a GPU or TPU.
        logits_mib: the most memory (MiB) the full softmax's (tokens x catalog) logits,
            softmax and seen mask may take at once: while a full batch's fit, one pass
            (ML-1M's do); past it, ``model.loss=auto`` switches to the
            sampled loss and ``model.loss=softmax`` runs over chunks of tokens that fit
            (the same value and gradient, the softmax computed twice); ``bst.train``
            logs which. 0 = no bound (one pass, and ``auto`` is ``softmax``).
        val_users: with more validation users than this, each epoch's validation (and
            early stopping) ranks a fixed random sample of this many (by a hash of the
            user ids with ``train.seed``: the same users whichever runner prepared the
            folder; logged); the final test ranks every user. 0 = every user.
        jit_compile: XLA-compile the training step: ``auto`` (on GPU/TPU only: on a CPU it
            is slower, docs/results.md), ``true`` or ``false``.
    """

    batch_size: int = -1
    epochs: int = 200
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    warmup_steps: int = 500
    final_lr_fraction: float = 0.02
    weight_decay: float = 0.1
    ema: float = 0.0
    patience: int = -1
    seed: int = 42
    mixed_precision: bool = False
    bf16_logits: bool = True
    steps_per_epoch: int = -1
    max_minutes: float = -1.0
    jit_compile: str = "auto"
    logits_mib: int = 2048
    val_users: int = 10_000


@dataclass(frozen=True)
class Config:
    """Everything a run needs."""

    preset: str = "ml1m"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def tiny() -> Config:
    """Seconds on a CPU: synthetic data, seq_len 8, dim 16. For tests and demos."""
    return Config(
        preset="tiny",
        data=DataConfig(synthetic=True, synthetic_users=60, synthetic_movies=40, num_shards=2),
        model=ModelConfig(max_len=8, dim=16, num_blocks=1, num_heads=2, ff_mult=2, dropout=0.1),
        train=TrainConfig(batch_size=16, epochs=3, learning_rate=5e-3, patience=3, max_minutes=0.0),
    )


def ml1m() -> Config:
    """The real MovieLens-1M run."""
    return Config(preset="ml1m")


def ml1m_long() -> Config:
    """The stretch run: ``ml1m`` twice as wide (dim 128), over a 60-minute CPU budget
    (``train.max_minutes=-1``; no budget on a GPU or TPU, as for ``ml1m``)."""
    return Config(preset="ml1m-long", model=ModelConfig(dim=128))


PRESETS = {"tiny": tiny, "ml1m": ml1m, "ml1m-long": ml1m_long}

# train.max_minutes=-1 on a CPU, by preset (bst.devices.resolve); others get 30 minutes.
CPU_BUDGET_MINUTES = {"ml1m": 30.0, "ml1m-long": 60.0}


def preset(name: str) -> Config:
    try:
        return PRESETS[name]()
    except KeyError:
        raise UsageError(
            f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}"
        ) from None


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line, or JSON) to ``kind``."""
    if get_origin(kind) is tuple:  # tuple[str, ...]: a JSON list, or "a,b" from --set
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{key} expects a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise UsageError(f"{key} expects true or false, got {value!r}")
        try:
            return kind(text)
        except ValueError:
            raise UsageError(f"{key} expects {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"{key} expects {kind.__name__}, got {value!r}")
    return value


def replace(cfg: Any, updates: Mapping[str, Any], prefix: str = "") -> Any:
    """Copy of the dataclass ``cfg`` with dotted-key ``updates`` applied and type-checked."""
    hints = get_type_hints(type(cfg))
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        full = f"{prefix}{head}"
        if head not in hints:
            known = ", ".join(f"{prefix}{k}" for k in hints)
            raise UsageError(f"unknown config key {full!r}; known: {known}")
        kind = hints[head]
        is_section = dataclasses.is_dataclass(kind)
        if rest:
            if not is_section:
                raise UsageError(f"{full} is not a section; cannot set {prefix}{key}")
            nested.setdefault(head, {})[rest] = value
        elif is_section:
            if not isinstance(value, Mapping):
                raise UsageError(f"{full} is a section; set its fields, e.g. {full}.<name>=...")
            nested.setdefault(head, {}).update(value)
        else:
            flat[head] = _coerce(value, kind, full)
    for head, sub in nested.items():
        flat[head] = replace(getattr(cfg, head), sub, prefix=f"{prefix}{head}.")
    return dataclasses.replace(cfg, **flat)


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["model.dim=32", ...]`` → ``{"model.dim": "32"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value (e.g. model.num_blocks=2), got {item!r}")
        out[key.strip()] = value
    return out


def from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuild a Config from :meth:`Config.to_dict` output (e.g. a run's config.json)."""
    base = preset(data.get("preset", "ml1m"))
    return replace(base, data)


def load(path: str | Path) -> Config:
    """A run's saved ``config.json``, validated; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path} is not a valid config (corrupt JSON: {err})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a valid config: expected a JSON object")
    try:
        return validate(from_dict(data))
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None


# Allowed values of the choice fields, and (low, high, low_open, high_open) ranges of the
# numeric ones: a bad value is one line naming the key, what is allowed and what it got.
CHOICES = {
    "data.format": FORMAT_NAMES,
    "data.dataset": ("", *DATASET_NAMES),
    "data.time_unit": ("auto", "s", "ms"),
    "data.runner": ("in-memory", "beam"),
    "model.loss": ("auto", "softmax", "sampled"),
    "model.negatives": ("shared", "in-batch"),
    "train.schedule": ("cosine", "linear", "constant"),
    "train.jit_compile": ("auto", "true", "false"),
}
_INF = float("inf")
RANGES = {
    "data.synthetic_users": (2, _INF, False, False),
    "data.synthetic_movies": (2, _INF, False, False),
    "data.num_shards": (1, 4096, False, False),
    "data.cold_fraction": (0.0, 0.5, False, False),
    "model.max_len": (1, 100_000, False, False),
    "model.dim": (1, 65_536, False, False),
    "model.num_blocks": (1, 1_000, False, False),
    "model.num_heads": (1, 65_536, False, False),
    "model.ff_mult": (1, 1_000, False, False),
    "model.dropout": (0.0, 1.0, False, True),
    "model.attention_dropout": (0.0, 1.0, False, True),
    "model.feature_dropout": (0.0, 1.0, False, True),
    "model.id_dropout": (0.0, 1.0, False, True),
    "model.num_negatives": (1, _INF, False, False),
    "train.logits_mib": (0, _INF, False, False),
    "train.val_users": (0, _INF, False, False),
    "train.epochs": (1, _INF, False, False),
    "train.learning_rate": (0.0, 10.0, True, False),
    "train.warmup_fraction": (0.0, 1.0, False, False),
    "train.warmup_steps": (0, _INF, False, False),
    "train.final_lr_fraction": (0.0, 1.0, False, False),
    "train.weight_decay": (0.0, 1.0, False, False),
    "train.ema": (0.0, 1.0, False, True),
    "train.patience": (-1, _INF, False, False),
    "train.seed": (0, 2**31 - 1, False, False),
    "train.steps_per_epoch": (-1, _INF, False, False),
}


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == _INF:
        return f"> {low:g}" if low_open else f">= {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def validate(cfg: Config) -> Config:
    """``cfg`` if every field is usable, else a :class:`UsageError` naming the first bad one.

    Checked before any data is read or written, so a bad value costs nothing.
    """
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise UsageError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    for key, (low, high, low_open, high_open) in RANGES.items():
        value = _get(cfg, key)
        ok = value == value and (value > low if low_open else value >= low)  # NaN fails
        ok = ok and (value < high if high_open else value <= high)
        if not ok:
            raise UsageError(
                f"{key} must be {interval(low, high, low_open, high_open)}, got {value!r}"
            )
    if not (cfg.train.batch_size == -1 or cfg.train.batch_size >= 1):
        raise UsageError(
            f"train.batch_size must be >= 1 or -1 (auto), got {cfg.train.batch_size!r}"
        )
    minutes = cfg.train.max_minutes
    if not (minutes == -1 or 0 <= minutes < _INF):
        raise UsageError(
            f"train.max_minutes must be >= 0 (0 = no budget) or -1 (auto), got {minutes!r}"
        )
    if cfg.model.dim % cfg.model.num_heads:
        raise UsageError(
            f"model.num_heads ({cfg.model.num_heads}) must divide model.dim ({cfg.model.dim})"
        )
    if cfg.data.synthetic and cfg.data.data_dir:
        raise UsageError(
            f"data.data_dir={cfg.data.data_dir!r} is set but data.synthetic=true generates "
            "the data: add --set data.synthetic=false to train on that folder, or drop it"
        )
    if cfg.data.synthetic and cfg.data.format not in ("auto", "ml1m", "ml-1m"):
        raise UsageError(
            f"data.format={cfg.data.format!r} with data.synthetic=true: synthetic data is in "
            "ML-1M format; add --set data.synthetic=false to read a sasrec file"
        )
    if cfg.data.catalogs and cfg.data.synthetic:
        raise UsageError(
            "data.catalogs with data.synthetic=true: synthetic movies have made-up titles "
            "that no catalog lists; add --set data.synthetic=false and --data-dir"
        )
    if cfg.data.cold_fraction and not (cfg.data.catalogs or cfg.data.enriched):
        raise UsageError(
            f"--cold-fraction (data.cold_fraction) {cfg.data.cold_fraction:g} holds out "
            "movies that have an overview: give --catalog or --enriched too"
        )
    if cfg.data.synthetic and cfg.data.dataset:
        raise UsageError(
            f"data.dataset={cfg.data.dataset!r} with data.synthetic=true: add --set "
            "data.synthetic=false to use the release"
        )
    if cfg.model.rating_head and cfg.data.format == "sasrec":
        raise UsageError(
            "model.rating_head=true with data.format=sasrec: the SasRec file has no "
            "ratings to learn from; set model.rating_head=false"
        )
    if cfg.data.side_data_dir and cfg.data.format not in ("auto", "sasrec"):
        raise UsageError(
            "data.side_data_dir is only used with data.format=sasrec "
            "(ML-1M files carry their own users.dat and movies.dat)"
        )
    return cfg
