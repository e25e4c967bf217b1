"""The version manager: loads the newest version, polls for new ones, swaps them in."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from bst.serving.codec import RequestError
from bst.serving.servable import ModelDirError, Servable, load_servable
from bst.versions import describe_origin, find_versions, read_origin

log = logging.getLogger("bst.serve")


@dataclass
class _VersionState:
    state: str  # AVAILABLE or END (TF Serving's ModelVersionStatus.State)
    error_code: str = "OK"
    error_message: str = ""


class ModelManager:
    """Keeps the newest loadable version of one model loaded; polls for new ones.

    Args:
        base_dir: str or Path. The model base folder holding ``<int version>/``.
        poll_seconds: float. Seconds between scans; 0 disables the poller.
            Defaults to 2.
    """

    def __init__(self, base_dir: str | Path, poll_seconds: float = 2.0):
        self.base_dir = Path(base_dir)
        self.poll_seconds = float(poll_seconds)
        self._current: Servable | None = None
        self._states: dict[int, _VersionState] = {}
        self._failed: dict[int, tuple] = {}  # version -> fingerprint of the files that failed
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Servable | None:
        return self._current

    def load_initial(self) -> Servable:
        """Load the newest version now; raises ``ModelDirError`` with a one-line reason."""
        if not self.base_dir.is_dir():
            raise ModelDirError(f"--model-dir {self.base_dir}: no such folder")
        if not find_versions(self.base_dir):
            raise ModelDirError(
                f"--model-dir {self.base_dir}: no version folder (an integer name holding "
                "saved_model.pb); export a model first with `python -m bst.export`"
            )
        self.poll(report=False)
        failed = sorted((v, s) for v, s in self._states.items() if s.error_code != "OK")
        if self._current is None:
            reason = failed[-1][1].error_message if failed else "unknown error"
            raise ModelDirError(f"--model-dir {self.base_dir}: cannot load any version: {reason}")
        for version, state in failed:
            log.error("cannot load version %d: %s", version, state.error_message)
        return self._current

    def poll(self, report: bool = True) -> bool:
        """One scan: load the newest version if it is not the one served. True if swapped.

        A version that fails to load is logged (if ``report``), recorded for
        ``status`` and skipped until its files change.
        """
        with self._poll_lock:
            versions = find_versions(self.base_dir)
            current = self._current
            for version in sorted(versions, reverse=True):
                if current is not None and version == current.version:
                    return False
                if current is not None and version < current.version and current.path.exists():
                    return False  # never downgrade while the served version is still there
                path = versions[version]
                fingerprint = _fingerprint(path)
                if self._failed.get(version) == fingerprint:
                    continue  # already failed with these very files
                try:
                    servable = load_servable(path, version)
                except Exception as err:  # any load failure keeps the old version serving
                    message = f"{type(err).__name__}: {err}".splitlines()[0]
                    if report:
                        log.error("cannot load version %d from %s: %s", version, path, message)
                    self._failed[version] = fingerprint
                    with self._lock:
                        self._states[version] = _VersionState("END", "UNKNOWN", message)
                    continue
                self._failed.pop(version, None)
                report_origin(path, version)
                with self._lock:
                    if current is not None:
                        self._states[current.version] = _VersionState("END")
                    self._states[version] = _VersionState("AVAILABLE")
                    self._current = servable
                if current is not None:
                    log.info(
                        "now serving version %d (unloaded version %d)", version, current.version
                    )
                return True
            return False

    def get(self, model_name: str, version: int | None) -> Servable:
        """The servable for a request, or ``RequestError(404)`` in TF Serving's words."""
        servable = self._current
        if servable is None:
            raise RequestError(f"Servable not found for request: Latest({model_name})", 404)
        if version is not None and version != servable.version:
            raise RequestError(
                f"Servable not found for request: Specific({model_name}, {version})", 404
            )
        return servable

    def status(self, model_name: str, version: int | None) -> dict:
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise RequestError(f"Could not find version {version} of model {model_name}", 404)
            states = {version: states[version]}
        if not states:
            raise RequestError(f"Could not find any versions of model {model_name}", 404)
        return {
            "model_version_status": [
                {
                    "version": str(v),
                    "state": s.state,
                    "status": {"error_code": s.error_code, "error_message": s.error_message},
                }
                for v, s in sorted(states.items(), reverse=True)
            ]
        }

    def start(self) -> None:
        if self.poll_seconds <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bst-serve-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must survive anything the file system does
                log.exception("model poll failed")


def report_origin(path: Path, version: int) -> None:
    """Log where a version comes from; warn loudly about a synthetic-data demo model."""
    origin = read_origin(path)
    if origin is not None and origin.get("synthetic"):
        log.warning(
            "version %d is a DEMO model trained on synthetic data (%s): its movie ids are not "
            "MovieLens movies",
            version,
            describe_origin(origin),
        )
    else:
        log.info("version %d: %s", version, describe_origin(origin))


def _fingerprint(path: Path) -> tuple:
    """Sizes and mtimes of a version's files: a failed load is retried when they change."""
    out = []
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(root, name))
                out.append((os.path.join(root, name), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))
