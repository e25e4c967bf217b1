"""The one rule for SavedModel version folders: ``<base>/<integer>/saved_model.pb``.

TF Serving serves the integer-named subfolders of a model's base path; a folder
counts as a version when its name is ASCII digits (at most 18 of them, so it
fits TF Serving's int64) and it holds ``saved_model.pb`` (or ``.pbtxt``).
``bst.export`` writes the next one, ``bst.serve`` and ``bst.recommend`` read the
newest. No TensorFlow here.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_DIGITS = 18  # 10**18 - 1 < 2**63: every version fits int64
GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")


def version_number(name: str) -> int | None:
    """The version a folder name stands for (``"3"`` → 3), else None (``"x"``, ``"٣"``, ``".export-1"``)."""
    if name.isascii() and name.isdigit() and len(name) <= MAX_DIGITS:
        return int(name)
    return None


def is_savedmodel(path: str | Path) -> bool:
    return any((Path(path) / name).is_file() for name in GRAPH_FILES)


def find_versions(base: str | Path, complete: bool = True) -> dict[int, Path]:
    """Version number → folder under ``base`` ({} when ``base`` is missing).

    ``complete=False`` also lists version-named folders without a SavedModel
    graph (for :func:`next_version`, which must not reuse their numbers).
    """
    found: dict[int, Path] = {}
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        number = version_number(entry.name)
        if number is None or not entry.is_dir():
            continue
        if complete and not is_savedmodel(entry.path):
            continue
        found[number] = Path(entry.path)
    return found


def newest_version(base: str | Path) -> Path | None:
    """The highest complete version folder under ``base``, or None."""
    versions = find_versions(base)
    return versions[max(versions)] if versions else None


def next_version(base: str | Path) -> int:
    """One more than every version-named folder under ``base`` (complete or not)."""
    return max(find_versions(base, complete=False), default=0) + 1


# Where an export records what it was made from (TF Serving ignores assets.extra/ files
# other than its warm-up requests): the run, its preset and data, the catalog
# fingerprint (:attr:`bst.data.prepared.Prepared.catalog_fingerprint`) and the weights.
ORIGIN_FILE = Path("assets.extra") / "bst_origin.json"


def read_origin(version_dir: str | Path) -> dict | None:
    """The export's origin record, or None for a SavedModel without one (an older export,
    or not bst's)."""
    import json

    path = Path(version_dir) / ORIGIN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_origin(origin: dict | None) -> str:
    """One phrase for logs: ``run runs/ml1m (preset ml1m, 3,706 movies)``."""
    if not origin:
        return "an export without an origin record"
    data = "synthetic data" if origin.get("synthetic") else f"{origin.get('movies', '?'):,} movies"
    return f"run {origin.get('run_dir', '?')} (preset {origin.get('preset', '?')}, {data})"
