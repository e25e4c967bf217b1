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
