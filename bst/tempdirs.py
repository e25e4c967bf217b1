"""Temporary folders that a later run can clean up after a ``kill -9``.

Every command that writes a folder atomically (prepare, export, extraction) builds it
as a hidden sibling first and renames it into place. A kill in between would leave the
sibling forever, so each one gets an owner file beside it (``<tmp>.owner``: host and
pid). :func:`clean_stale` removes only temporaries whose owner file names this host
and a process that no longer runs: ones it can prove are its own and dead. A folder
without an owner file (someone else's, or an older bst's) is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_SUFFIX = ".owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new hidden folder ``parent/<prefix>XXXX`` with its owner file beside it."""
    parent = Path(parent)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    tmp.with_name(tmp.name + OWNER_SUFFIX).write_text(json.dumps(owner) + "\n")
    return tmp


def remove_temp_dir(tmp: str | Path) -> None:
    """Remove ``tmp`` (if still there) and its owner file."""
    tmp = Path(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.with_name(tmp.name + OWNER_SUFFIX).unlink(missing_ok=True)


def clean_stale(parent: str | Path, prefix: str) -> int:
    """Remove ``parent/<prefix>*`` temporaries left by dead processes of this host; returns
    how many were removed (each is logged)."""
    parent = Path(parent)
    if not parent.is_dir():
        return 0
    host, removed = socket.gethostname(), 0
    for owner_file in sorted(parent.glob(f"{prefix}*{OWNER_SUFFIX}")):
        try:
            owner = json.loads(owner_file.read_text())
            pid, owner_host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not provably ours
        if owner_host != host or _alive(pid):
            continue
        tmp = owner_file.with_name(owner_file.name[: -len(OWNER_SUFFIX)])
        log.info("removing %s, left by process %d that no longer runs", tmp, pid)
        remove_temp_dir(tmp)
        removed += 1
    return removed
