"""A development server with TensorFlow Serving's REST API: ``python -m bst.serve``.

    python -m bst.serve --model-dir saved_models/bst [--port 8501] [--host 127.0.0.1]

For machines without Docker: it serves the newest integer version under
``--model-dir`` the way ``tensorflow/serving`` does, so a client written against
one works against the other (see ``serving/README.md`` for the real thing).
Endpoints (``bst`` is ``--model-name``):

* ``GET  /v1/models/bst[/versions/N]`` → ``{"model_version_status": [...]}``
* ``GET  /v1/models/bst[/versions/N]/metadata`` → ``{"model_spec": ..., "metadata":
  {"signature_def": {"signature_def": {...}}}}``
* ``POST /v1/models/bst[/versions/N]:predict`` with ``{"signature_name": ...,
  "instances": [...]}`` (row format → ``{"predictions": [...]}``) or
  ``{"inputs": {...}}`` (columnar → ``{"outputs": ...}``).

Errors answer ``{"error": "<what was wrong>"}`` with TF Serving's status codes
(400 bad request, 404 unknown model or version, 413 body over
``--max-body-bytes``) and the server keeps serving.

Where it follows TF Serving, and where it differs:

* Versions: a background poller (every ``--poll-seconds``) loads a newer
  version fully (including the warm-up requests in
  ``assets.extra/tf_serving_warmup_requests``) before swapping it in, then drops
  the old one, like TF Serving's default policy (``latest { num_versions: 1 }``):
  a request for an unloaded version gets 404. Folders whose name is not an
  integer or that lack ``saved_model.pb`` are ignored; a version that fails to
  load is logged, reported with state ``END`` and its error by the status
  endpoint, and retried only when its files change. If the newest folder is
  removed, the server falls back to the newest remaining one.
* Dense tensors only, as in TF Serving: rows of different lengths (ragged
  ``history``) are rejected with 400; pad them with ``""`` yourself.
* Convenience (not TF Serving): an input the signature declares with shape
  ``[batch]`` and dtype string (the profile features) may be left out of a
  request; it is filled with ``""``. Every other input is required.
* Stricter than TF Serving: unknown input names in the columnar format are an
  error (TF Serving ignores them); batches over ``--max-batch`` rows and bodies
  over ``--max-body-bytes`` are refused.
* Batching (on unless ``--no-batching``; TF Serving's ``--enable_batching``
  without its wait, as a lone request runs at once): concurrent predict
  requests for one signature are merged into one model call, histories of
  different lengths left-padded with ``""`` (see ``Batcher``). On the tiny
  trained model this about doubles throughput with 8 concurrent clients.
* Threads: ``--intra-op-threads`` / ``--inter-op-threads`` size TensorFlow's
  pools like TF Serving's ``--tensorflow_intra_op_parallelism`` /
  ``--tensorflow_inter_op_parallelism`` (0, the default, is TF's choice). On a
  small CPU ``--intra-op-threads 1`` lowers latency: this model is a chain of
  small ops that lose more to splitting across threads than they gain.
* Floats are written in their shortest round-trip form (``0.3``, not
  ``0.30000001192092896``), ``NaN``/``Infinity``/``-Infinity`` as TF Serving does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import bst  # noqa: F401  (Keras 2 before TensorFlow)

import tensorflow as tf  # isort: skip

log = logging.getLogger("bst.serve")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many

# TF Serving's URL grammar (http_rest_api_util.cc), case-insensitive like its RE2 patterns.
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)

_TYPE_NAMES = {str: "String", bool: "Bool", int: "Number", float: "Number", dict: "Object"}


class ModelDirError(ValueError):
    """``--model-dir`` is missing, holds no version folder, or no version loads."""


class RequestError(Exception):
    """A request TF Serving would refuse; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------- model


@dataclass
class Signature:
    """One loaded signature: its concrete function and declared inputs/outputs."""

    name: str
    function: Any  # the loaded ConcreteFunction
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]
    fillable: frozenset[str] = frozenset()  # string [batch] inputs a request may leave out
    flat_order: tuple[str, ...] | None = None  # input names in the function's flat order

    @classmethod
    def from_function(cls, name: str, fn: Any) -> Signature:
        inputs = dict(fn.structured_input_signature[1])
        outputs = fn.structured_outputs
        if not isinstance(outputs, dict):
            raise ValueError(f"signature {name!r} does not return a dict of tensors")
        fillable = frozenset(
            n for n, s in inputs.items() if s.dtype == tf.string and s.shape.rank == 1
        )
        order = tuple(getattr(getattr(fn, "function_type", None), "parameters", ()) or ())
        if set(order) != set(inputs) or not hasattr(fn, "_call_flat"):
            order = None
        return cls(name, fn, inputs, dict(outputs), fillable, order)

    def check_flat_call(self, tensors: dict[str, tf.Tensor]) -> None:
        """Use the flat call only if it answers exactly like the keyword call."""
        if self.flat_order is None:
            return
        fast = self(tensors)
        slow = {k: v.numpy() for k, v in self.function(**tensors).items()}
        if fast.keys() != slow.keys() or any(
            not np.array_equal(fast[k], slow[k], equal_nan=fast[k].dtype.kind == "f") for k in fast
        ):
            log.warning("signature %r: flat call disagrees; using keyword calls", self.name)
            self.flat_order = None

    def __call__(self, tensors: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
        fn = self.function
        if self.flat_order is not None:
            # The flat call skips ~0.2 ms of Python argument binding per request; the
            # order is the function's own (function_type), checked at load time.
            outputs = fn._call_flat([tensors[n] for n in self.flat_order], fn.captured_inputs)
        else:
            outputs = fn(**tensors)
        return {name: value.numpy() for name, value in outputs.items()}


@dataclass
class Servable:
    """A loaded version: signatures to run and the metadata to describe them."""

    version: int
    path: Path
    signatures: dict[str, Signature]
    signature_defs: dict[str, Any]  # SignatureDef protos as JSON dicts (TF Serving's shape)
    loaded: Any = field(repr=False)  # the restored object; keeps the functions' variables alive
    _metadata: dict[str, bytes] = field(default_factory=dict, repr=False)
    _batchers: dict[str, Batcher] = field(default_factory=dict, repr=False)
    _batchers_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(
        self, signature: Signature, tensors: dict[str, tf.Tensor], max_batch: int | None
    ) -> dict[str, np.ndarray]:
        """Run one request, merged with concurrent ones when ``max_batch`` is set."""
        if not max_batch:
            return signature(tensors)
        batcher = self._batchers.get(signature.name)
        if batcher is None:
            with self._batchers_lock:
                batcher = self._batchers.get(signature.name)
                if batcher is None:
                    batcher = self._batchers[signature.name] = Batcher(signature, max_batch)
        return batcher.run(tensors)

    def metadata_json(self, model_name: str) -> bytes:
        if model_name not in self._metadata:
            body = {
                "model_spec": {
                    "name": model_name,
                    "signature_name": "",
                    "version": str(self.version),
                },
                "metadata": {"signature_def": {"signature_def": self.signature_defs}},
            }
            self._metadata[model_name] = _dumps(body)
        return self._metadata[model_name]


def find_versions(base_dir: str | Path) -> dict[int, Path]:
    """Integer-named subfolders of ``base_dir`` that hold a ``saved_model.pb``."""
    base = Path(base_dir)
    found = {}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(base):
            if entry.is_dir() and entry.name.isdigit() and entry.name.isascii():
                path = Path(entry.path)
                if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
                    found[int(entry.name)] = path
    return found


def _signature_defs(path: Path) -> dict[str, Any]:
    from google.protobuf import json_format, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        model.ParseFromString((path / "saved_model.pb").read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), model)
    graphs = [g for g in model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ValueError(f"{path}: no MetaGraph tagged 'serve'")
    return {
        name: json_format.MessageToDict(
            sig, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for name, sig in sorted(graphs[0].signature_def.items())
    }


def load_servable(path: str | Path, version: int) -> Servable:
    """Load one SavedModel version and run its warm-up requests; raises on any failure."""
    path = Path(path)
    start = time.perf_counter()
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    signatures = {name: Signature.from_function(name, fn) for name, fn in loaded.signatures.items()}
    servable = Servable(version, path, signatures, _signature_defs(path), loaded)
    warmed = _warm_up(servable)
    log.info(
        "loaded version %d from %s in %.2fs (signatures: %s; %d warm-up requests)",
        version,
        path,
        time.perf_counter() - start,
        ", ".join(sorted(signatures)),
        warmed,
    )
    return servable


def _warm_up(servable: Servable) -> int:
    """Replay ``assets.extra/tf_serving_warmup_requests`` like TF Serving; else one tiny call."""
    records = servable.path / WARMUP_FILE
    if records.is_file():
        try:
            from tensorflow_serving.apis import prediction_log_pb2
        except ImportError:
            prediction_log_pb2 = None
        if prediction_log_pb2 is not None:
            count, checked = 0, set()
            for raw in tf.data.TFRecordDataset(str(records)).take(MAX_WARMUP_RECORDS):
                entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
                if not entry.HasField("predict_log"):
                    continue  # classify/regress logs have no meaning here
                request = entry.predict_log.request
                signature = _signature(servable, request.model_spec.signature_name)
                tensors = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
                if tensors.keys() != signature.inputs.keys():
                    raise ValueError(
                        f"{records}: warm-up request {count + 1} for signature "
                        f"{signature.name!r} has inputs {sorted(tensors)}, the signature takes "
                        f"{sorted(signature.inputs)} (TF Serving would not load it either)"
                    )
                if signature.name not in checked:
                    signature.check_flat_call(tensors)
                    checked.add(signature.name)
                signature(tensors)
                count += 1
            return count
    # No warm-up file: one call per signature on a single empty row.
    for signature in servable.signatures.values():
        if all(s.dtype == tf.string and s.shape.rank in (1, 2) for s in signature.inputs.values()):
            tensors = {n: tf.fill([1] * s.shape.rank, "") for n, s in signature.inputs.items()}
            signature.check_flat_call(tensors)
            signature(tensors)
    return 0


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


class _Task:
    __slots__ = ("tensors", "rows", "key", "done", "lead", "result", "error")

    def __init__(self, tensors: dict[str, tf.Tensor], key: tuple | None, rows: int):
        self.tensors, self.key, self.rows = tensors, key, rows
        self.done = threading.Event()
        self.lead = False  # set when this request's thread must run the next batch
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


class Batcher:
    """Merges concurrent requests for one signature into one call, like TF Serving's batching.

    Opportunistic and threadless: the request thread that finds the model idle
    runs its request at once, together with whatever compatible requests are
    waiting; then it hands the turn to the oldest waiting request's thread. A
    lone request thus never waits, and under load the model runs batches.

    Requests merge when their inputs agree on every dimension but the first.
    When every output has a fixed shape past the batch dimension
    (``serving_default``: ``[batch, K]``), string inputs of rank >= 2 and
    different lengths merge too, left-padded with ``""``: bst's padding, which
    the model ignores (it counts positions from the end), so answers do not
    change. Outputs are split back by rows. If a merged call fails, each
    request is run alone so that errors reach their senders.

    Args:
        signature: Signature. The signature to run.
        max_batch: int. Most rows in one merged call.
    """

    def __init__(self, signature: Signature, max_batch: int):
        self.signature = signature
        self.max_batch = int(max_batch)
        self.pad = all(
            s.shape.rank is not None and s.shape.rank >= 1 and s.shape[1:].is_fully_defined()
            for s in signature.outputs.values()
        )
        # String inputs of rank >= 2 (history) may differ in length and are padded.
        self._padded = frozenset(
            n
            for n, s in signature.inputs.items()
            if self.pad and s.dtype == tf.string and (s.shape.rank is None or s.shape.rank >= 2)
        )
        self._names = tuple(sorted(signature.inputs))
        self.calls = 0  # model calls made and requests answered: calls < requests = merging
        self.requests = 0
        self._lock = threading.Lock()
        self._pending: list[_Task] = []
        self._busy = False

    def run(self, tensors: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
        task = _Task(tensors, *self._key(tensors))
        with self._lock:
            self._pending.append(task)
            lead = not self._busy
            self._busy = True
        if not lead:
            task.done.wait()  # answered, or handed the turn
        if task.lead or lead:
            self._lead()
        if task.error is not None:
            raise task.error
        return task.result

    def _key(self, tensors: dict[str, tf.Tensor]) -> tuple[tuple | None, int]:
        """What must agree for two requests to merge (None: never), and the rows."""
        key, rows = [], None
        for name in self._names:
            shape = tuple(tensors[name].shape)
            if not shape or (rows is not None and shape[0] != rows):
                return None, 0  # a scalar, or inconsistent batch sizes (columnar): run alone
            rows = shape[0]
            if name in self._padded:
                key.append((name, len(shape), shape[2:]))
            else:
                key.append((name, shape[1:]))
        return tuple(key), rows or 0

    def _lead(self) -> None:
        """Run one batch from the oldest waiting request, then pass the turn on."""
        with self._lock:
            first = self._pending[0]
            batch, rest, rows = [first], [], first.rows
            for task in self._pending[1:]:
                if (
                    first.key is not None
                    and task.key == first.key
                    and rows + task.rows <= self.max_batch
                ):
                    batch.append(task)
                    rows += task.rows
                else:
                    rest.append(task)
            self._pending = rest
        try:
            self._execute(batch)
        except BaseException as err:  # never leave a request waiting
            for task in batch:
                if task.result is None and task.error is None:
                    task.error = err
        finally:
            with self._lock:
                if self._pending:
                    self._pending[0].lead = True
                    self._pending[0].done.set()  # its thread runs the next batch
                else:
                    self._busy = False
            for task in batch:
                task.lead = False
                task.done.set()

    def _execute(self, batch: list[_Task]) -> None:
        self.requests += len(batch)
        if len(batch) > 1:
            try:
                outputs = self.signature(self._merge(batch))
                total = sum(task.rows for task in batch)
                if all(v.shape[:1] == (total,) for v in outputs.values()):
                    self.calls += 1
                    start = 0
                    for task in batch:
                        end = start + task.rows
                        task.result = {k: v[start:end] for k, v in outputs.items()}
                        start = end
                    return
            except Exception:  # e.g. one bad request: answer each alone, with its own error
                pass
        for task in batch:
            self.calls += 1
            try:
                task.result = self.signature(task.tensors)
            except Exception as err:  # raised again in the request's own thread
                task.error = err

    def _merge(self, batch: list[_Task]) -> dict[str, tf.Tensor]:
        merged = {}
        for name in batch[0].tensors:
            parts = [task.tensors[name] for task in batch]
            if name in self._padded:
                width = max(p.shape[1] for p in parts)
                parts = [
                    p
                    if p.shape[1] == width
                    else tf.pad(
                        p,
                        [[0, 0], [width - p.shape[1], 0]] + [[0, 0]] * (p.shape.rank - 2),
                        constant_values="",
                    )
                    for p in parts
                ]  # (b_i, width, ...) each: left-padded with ""
            merged[name] = tf.concat(parts, axis=0)  # (sum b_i, ...)
        return merged


def _fingerprint(path: Path) -> tuple:
    """Sizes and mtimes of a version's files: a failed load is retried when they change."""
    out = []
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(root, name))
                out.append((os.path.join(root, name), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


# --------------------------------------------------------------------------- JSON <-> tensors


def _dumps(obj: Any) -> bytes:
    # allow_nan: NaN/Infinity tokens, as TF Serving writes them.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error_body(message: str) -> bytes:
    return _dumps({"error": message})


def _json_repr(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, list):
        return "Array"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _dtype_name(dtype: tf.DType) -> str:
    return dtype.name  # "string", "float32": what TF Serving prints via DataTypeString


def _leaf_ok(value: Any, dtype: tf.DType) -> bool:
    t = type(value)
    if dtype == tf.string:
        return t is str
    if dtype == tf.bool:
        return t is bool
    if dtype.is_integer:
        return t is int
    if dtype.is_floating:
        return t is int or t is float
    return False


def _shape_of(value: Any) -> list[int]:
    """TF Serving's GetDenseTensorShape: follow the first element down."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _check_dense(value: Any, shape: list[int], level: int, dtype: tf.DType) -> Any:
    """Validate a nested list against ``shape``; returns it with b64 leaves decoded."""
    if not isinstance(value, list):
        if level != len(shape):
            raise ValueError(
                f"JSON Value: {_json_repr(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {len(shape)} (rows of different lengths?)"
            )
        if _leaf_ok(value, dtype):
            return value
        if dtype == tf.string and _is_b64(value):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise ValueError(
                    f"JSON Value: {_json_repr(value)} Unable to base64 decode"
                ) from None
        raise ValueError(
            f"JSON Value: {_json_repr(value)} Type: {_json_type(value)} is not of expected "
            f"type: {_dtype_name(dtype)}"
        )
    if level >= len(shape):
        raise ValueError(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise ValueError(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f'size: {shape[level]} (rows of different lengths are not allowed: pad with "")'
        )
    if level == len(shape) - 1:  # leaf lists: one C-speed type scan, slow path on mismatch
        types = set(map(type, value))
        if len(types) == 1 and _leaf_ok(value[0], dtype):
            return value
    return [_check_dense(v, shape, level + 1, dtype) for v in value]


def _to_tensor(value: Any, name: str, spec: tf.TensorSpec) -> tf.Tensor:
    """One input's JSON value → a tensor of the declared dtype; checks rank and fixed dims."""
    shape = _shape_of(value)
    value = _check_dense(value, shape, 0, spec.dtype)
    declared = spec.shape
    if declared.rank is not None:
        if len(shape) != declared.rank:
            want = "[" + ",".join(str(d if d is not None else -1) for d in declared) + "]"
            raise ValueError(
                f"input '{name}' must have rank {declared.rank} (shape {want}), got a value of "
                f"shape {shape}"
            )
        for got, want in zip(shape, declared, strict=True):
            if want is not None and got != want:
                raise ValueError(
                    f"input '{name}' must have shape {declared.as_list()}, got {shape}"
                )
    if 0 in shape:
        return tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")
    if len(shape) == 1 and spec.dtype == tf.string and not any(value):
        return _empty_strings(shape[0])  # an unknown profile feature: the common case
    return tf.constant(value, dtype=spec.dtype)


@functools.lru_cache(maxsize=1024)
def _empty_strings(batch: int) -> tf.Tensor:
    return tf.fill([batch], "")  # (B,) of "": immutable, so shared by all requests


def _output_json(array: np.ndarray, name: str) -> Any:
    """A numpy output → JSON-ready nested lists, as TF Serving writes each dtype."""
    if array.dtype == object:  # tf.string
        flat = array.ravel().tolist()
        if name.endswith("_bytes"):  # TF Serving's rule for binary outputs
            flat = [{"b64": base64.b64encode(b).decode("ascii")} for b in flat]
        else:
            flat = [b.decode("utf-8", "replace") for b in flat]
        if array.ndim == 0:
            return flat[0]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape).tolist()
    if array.dtype in (np.float32, np.float16) or array.dtype.name == "bfloat16":
        # Shortest repr of the float32 value, so 0.3f is written 0.3 like TF Serving does.
        return array.astype(np.float32).astype(str).astype(np.float64).tolist()
    return array.tolist()


def _signature(servable: Servable, name: str) -> Signature:
    key = name or DEFAULT_SIGNATURE
    if key not in servable.signatures:
        raise RequestError(
            f'Serving signature name: "{key}" not found in signature def (this model has: '
            f"{', '.join(sorted(servable.signatures))})"
        )
    return servable.signatures[key]


def _missing_error(signature: Signature, missing: set[str], where: str) -> RequestError:
    return RequestError(
        f"Missing named input: {', '.join(sorted(missing))} in {where} (signature "
        f"'{signature.name}' takes: {', '.join(sorted(signature.inputs))})"
    )


def _unknown_error(signature: Signature, unknown: set[str], where: str) -> RequestError:
    return RequestError(
        f"Unknown named input: {', '.join(sorted(unknown))} in {where} (signature "
        f"'{signature.name}' takes: {', '.join(sorted(signature.inputs))})"
    )


def _row_tensors(signature: Signature, instances: Any, max_batch: int) -> dict[str, tf.Tensor]:
    if not isinstance(instances, list):
        raise RequestError("Expecting 'instances' to be a list/array")
    if not instances:
        raise RequestError("No values in 'instances' array")
    if len(instances) > max_batch:
        raise RequestError(
            f"'instances' has {len(instances)} rows, more than this server's --max-batch "
            f"{max_batch}: split the request"
        )
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    inputs = signature.inputs
    columns: dict[str, list] = {}
    if named:
        fill = signature.fillable
        names = set(inputs)
        for name in names:
            columns[name] = []
        for i, row in enumerate(instances):
            if not isinstance(row, dict) or _is_b64(row):
                raise RequestError(f"Expecting object but got list at item {i} of input list")
            keys = row.keys()
            if len(keys) != len(names) or keys != names:
                unknown = keys - names
                if unknown:
                    raise _unknown_error(signature, unknown, f"element {i} of 'instances'")
                missing = names - keys
                if missing - fill:
                    raise _missing_error(signature, missing - fill, f"element {i} of 'instances'")
            for name in names:
                columns[name].append(row.get(name, ""))
    else:
        if len(inputs) > 1:
            raise RequestError(
                "instances is a plain list, but expecting list of objects as multiple input "
                f"tensors required (signature '{signature.name}' takes: "
                f"{', '.join(sorted(inputs))})"
            )
        for i, row in enumerate(instances):
            if isinstance(row, dict) and not _is_b64(row):
                raise RequestError(f"Expecting value/list but got object at item {i} of input list")
        columns[next(iter(inputs))] = instances
    tensors = {}
    for name, rows in columns.items():
        first = _shape_of(rows[0])
        for i, row in enumerate(rows):
            if i and isinstance(row, list) and _shape_of(row) != first:
                raise RequestError(
                    f"Failed to process element: {i} key: {name} of 'instances' list. Error: "
                    f"Expecting shape {first} but got: {_shape_of(row)} (all rows must have "
                    'the same length: pad with "")'
                )
        try:
            tensors[name] = _to_tensor(rows, name, inputs[name])
        except ValueError as err:
            raise RequestError(
                f"Failed to process input '{name}' of 'instances' list. Error: {err}"
            ) from None
    return tensors


def _columnar_tensors(signature: Signature, value: Any, max_batch: int) -> dict[str, tf.Tensor]:
    inputs = signature.inputs
    if not isinstance(value, dict) or _is_b64(value):
        if len(inputs) > 1:
            raise RequestError(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required (signature '{signature.name}' takes: "
                f"{', '.join(sorted(inputs))})"
            )
        value = {next(iter(inputs)): value}
    unknown = value.keys() - inputs.keys()
    if unknown:
        raise _unknown_error(signature, unknown, "'inputs' object")
    missing = inputs.keys() - value.keys()
    if missing - signature.fillable:
        raise _missing_error(signature, missing - signature.fillable, "'inputs' object")
    tensors = {}
    for name, item in value.items():
        try:
            tensors[name] = _to_tensor(item, name, inputs[name])
        except ValueError as err:
            raise RequestError(
                f"Failed to process input '{name}' of 'inputs'. Error: {err}"
            ) from None
    batches = [t.shape[0] for t in tensors.values() if t.shape.rank]
    batch = max(batches, default=1)
    if batch > max_batch:
        raise RequestError(
            f"'inputs' has a batch of {batch} rows, more than this server's --max-batch "
            f"{max_batch}: split the request"
        )
    if missing:
        if not batches:
            raise _missing_error(signature, missing, "'inputs' object")
        for name in missing:
            tensors[name] = _empty_strings(int(batches[0]))
    return tensors


def _row_response(outputs: dict[str, np.ndarray]) -> dict:
    names = sorted(outputs)
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise RequestError(f"Tensor name: {name} has no shape information ")
        size = outputs[name].shape[0]
        if batch is not None and size != batch:
            raise RequestError(
                f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}"
            )
        batch = size
    columns = [_output_json(outputs[n], n) for n in names]
    if len(names) == 1:
        return {"predictions": columns[0]}
    return {
        "predictions": [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    }


def _columnar_response(outputs: dict[str, np.ndarray]) -> dict:
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        return {"outputs": _output_json(value, name)}
    return {"outputs": {n: _output_json(outputs[n], n) for n in sorted(outputs)}}


_TF_ERROR_STATUS = {
    tf.errors.InvalidArgumentError: 400,
    tf.errors.FailedPreconditionError: 400,
    tf.errors.OutOfRangeError: 400,
    tf.errors.NotFoundError: 404,
    tf.errors.ResourceExhaustedError: 429,
    tf.errors.UnimplementedError: 501,
    tf.errors.UnavailableError: 503,
}


def _tf_message(err: tf.errors.OpError) -> str:
    """The useful line of a TF runtime error, without the stack and node decorations."""
    skip = ("Graph execution error", "Detected at node", "<stack traces")
    lines = [
        line.strip()
        for line in (err.message or str(err)).splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith(skip)
    ]
    return " ".join(lines) or type(err).__name__


class RestHandler:
    """The TF Serving REST API over a ``ModelManager``, independent of any HTTP library.

    ``handle(method, path, body)`` returns ``(status, json_bytes)``; it is thread
    safe and never raises for a bad request.
    """

    def __init__(
        self,
        manager: ModelManager,
        model_name: str = "bst",
        max_batch: int = 256,
        batching: bool = True,
    ):
        self.manager = manager
        self.model_name = model_name
        self.max_batch = int(max_batch)
        self.batching = batching

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            if method == "POST":
                match = _PREDICT_RE.fullmatch(path)
                if match:
                    return 200, self.predict(*self._spec(match), match.group(4).lower(), body)
            elif method == "GET":
                match = _STATUS_RE.fullmatch(path)
                if match:
                    name, version = self._spec(match)
                    if match.group(4):
                        return 200, self.metadata(name, version)
                    return 200, self.status(name, version)
            if not path.lower().startswith("/v1/"):
                raise RequestError(f"Not found: {method} {path} (the API lives under /v1/)", 404)
            raise RequestError(f"Malformed request: {method} {path}")
        except RequestError as err:
            return err.status, _error_body(err.message)
        except tf.errors.OpError as err:
            status = next((s for k, s in _TF_ERROR_STATUS.items() if isinstance(err, k)), 500)
            return status, _error_body(_tf_message(err))
        except Exception as err:  # a bug here must not take the server down
            log.exception("error handling %s %s", method, path)
            return 500, _error_body(f"Internal error: {type(err).__name__}: {err}")

    def _spec(self, match: re.Match) -> tuple[str, int | None]:
        name = match.group(1) or ""
        if match.group(3):
            raise RequestError(
                f"Version labels are not supported by bst.serve (got label {match.group(3)!r}): "
                "use /versions/<number>"
            )
        version = int(match.group(2)) if match.group(2) else None
        return name, version

    def _servable(self, name: str, version: int | None) -> Servable:
        if not name:
            raise RequestError("Missing model name in request.")
        if name != self.model_name:
            spec = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise RequestError(f"Servable not found for request: {spec}", 404)
        return self.manager.get(name, version)

    def status(self, name: str, version: int | None) -> bytes:
        if not name:
            raise RequestError("Missing model name in request.")
        if name != self.model_name:
            raise RequestError(f"Could not find any versions of model {name}", 404)
        return _dumps(self.manager.status(name, version))

    def metadata(self, name: str, version: int | None) -> bytes:
        return self._servable(name, version).metadata_json(self.model_name)

    def predict(self, name: str, version: int | None, method: str, body: bytes) -> bytes:
        if method != "predict":
            raise RequestError(
                f"bst.serve implements :predict only, not :{method} (the model has no "
                "classify/regress signatures)"
            )
        doc = self._parse(body)
        servable = self._servable(name, version)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise RequestError("'signature_name' key must be a string value.")
        signature = _signature(servable, signature_name)
        has_rows, has_columns = "instances" in doc, "inputs" in doc
        if has_rows and has_columns:
            raise RequestError(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
            )
        if has_rows:
            tensors = _row_tensors(signature, doc["instances"], self.max_batch)
            return _dumps(_row_response(self._run(servable, signature, tensors)))
        if has_columns:
            tensors = _columnar_tensors(signature, doc["inputs"], self.max_batch)
            return _dumps(_columnar_response(self._run(servable, signature, tensors)))
        raise RequestError("Missing 'inputs' or 'instances' key")

    def _run(
        self, servable: Servable, signature: Signature, tensors: dict[str, tf.Tensor]
    ) -> dict[str, np.ndarray]:
        return servable.run(signature, tensors, self.max_batch if self.batching else None)

    @staticmethod
    def _parse(body: bytes) -> dict:
        if not body.strip():
            raise RequestError("JSON Parse error: The document is empty")
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as err:
            raise RequestError(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
        except ValueError as err:  # not UTF-8
            raise RequestError(f"JSON Parse error: {err}") from None
        if not isinstance(doc, dict):
            raise RequestError(f"JSON Value: {_json_repr(doc)} Is not object")
        return doc


# --------------------------------------------------------------------------- HTTP (Starlette)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    model_dir: str | Path,
    model_name: str = "bst",
    *,
    max_batch: int = 256,
    max_body_bytes: int = 1 << 20,
    poll_seconds: float = 2.0,
    threads: int | None = None,
    batching: bool = True,
):
    """The ASGI app (Starlette) serving ``model_dir``; loads the newest version now.

    Args:
        model_dir: str or Path. Model base folder with ``<int version>/`` SavedModels.
        model_name: str. The name in the URLs. Defaults to "bst".
        max_batch: int. Most rows per predict request. Defaults to 256.
        max_body_bytes: int. Largest request body; larger ones get 413. Defaults to 1 MiB.
        poll_seconds: float. Seconds between scans for a new version (the poller
            runs while the app is started); 0 disables it. Defaults to 2.
        threads: int or None. Threads that parse, run and serialize requests;
            up to this many requests can merge into one batch. Defaults to 8.
        batching: bool. Merge concurrent predict requests into one model call
            (see ``Batcher``), like TF Serving's ``--enable_batching``. Defaults
            to True.

    Raises:
        ModelDirError: ``model_dir`` is missing, has no version, or none loads.

    ``app.state.manager`` is the ``ModelManager`` (``.poll()`` forces a scan).
    """
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    if max_batch < 1:
        raise ValueError(f"`max_batch` must be positive. Received: max_batch={max_batch}")
    if max_body_bytes < 1:
        raise ValueError(f"`max_body_bytes` must be positive. Received: {max_body_bytes}")
    manager = ModelManager(model_dir, poll_seconds)
    manager.load_initial()
    handler = RestHandler(manager, model_name, max_batch, batching)
    workers = threads or 8  # mostly waiting on TF (which has its own threads) or a batch
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bst-serve")
    too_large = _error_body(
        f"Request body is larger than this server's --max-body-bytes {max_body_bytes}"
    )

    async def endpoint(request):
        method = request.method
        path = request.scope["path"]
        if method == "POST":
            try:
                body = await _read_body(request, max_body_bytes)
            except _BodyTooLarge:
                return Response(too_large, 413, media_type="application/json")
            loop = asyncio.get_running_loop()
            # Parsing, inference and serialization run off the event loop, in one hop.
            status, payload = await loop.run_in_executor(
                executor, handler.handle, method, path, body
            )
        else:  # status and metadata are cheap: answer on the loop
            status, payload = handler.handle(method, path, b"")
        return Response(payload, status, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        manager.start()
        try:
            yield
        finally:
            manager.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)], lifespan=lifespan)
    app.state.manager = manager
    app.state.handler = handler
    return app


class ServerThread:
    """Run an app with uvicorn on a loopback port in a background thread (tests, notebooks).

    Example:
        with ServerThread(create_app("saved_models/bst")) as server:
            BSTClient(server.url).recommend([["1193", "661"]])
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.sock = _bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def set_tf_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Size TensorFlow's thread pools (0 keeps TF's choice); call before any TF op runs.

    The servable is a chain of small ops: on a few cores, splitting each op over
    threads costs more than it saves, so ``intra_op=1`` (one thread per op, the
    requests themselves running side by side) cuts single-request latency; see
    the serving benchmark in the README.

    Raises:
        ValueError: a negative count, or TensorFlow already running (too late).
    """
    for name, value in (("intra_op", intra_op), ("inter_op", inter_op)):
        if value < 0:
            raise ValueError(f"thread counts must be >= 0. Received: {name}={value}")
    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as err:
        raise ValueError(f"TensorFlow's threads can only be sized before it starts: {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bst.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="saved_models/bst", help="model base folder")
    parser.add_argument("--port", type=int, default=8501, help="REST port (TF Serving's is 8501)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the server"
    )
    parser.add_argument("--model-name", default="bst", help="model name in the URLs")
    parser.add_argument("--max-batch", type=int, default=256, help="most rows per request")
    parser.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="largest request body (413 above)"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=2.0, help="seconds between new-version scans"
    )
    parser.add_argument(
        "--no-batching",
        dest="batching",
        action="store_false",
        help="run each request alone (default: merge concurrent requests into one call)",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="threads one TF op may use (TF Serving's --tensorflow_intra_op_parallelism; "
        "0 = TF's choice, one per core)",
    )
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=0,
        help="TF ops run at once (TF Serving's --tensorflow_inter_op_parallelism; 0 = TF's choice)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        set_tf_threads(args.intra_op_threads, args.inter_op_threads)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    import uvicorn

    try:
        sock = _bind(args.host, args.port)  # first: a busy port fails before the model loads
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        app = create_app(
            args.model_dir,
            args.model_name,
            max_batch=args.max_batch,
            max_body_bytes=args.max_body_bytes,
            poll_seconds=args.poll_seconds,
            batching=args.batching,
        )
    except (ModelDirError, ValueError) as err:
        sock.close()
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    host, port = sock.getsockname()[:2]
    if not _is_loopback(host):
        log.warning("listening on %s: reachable from the network, with no authentication", host)
    version = app.state.manager.current.version
    log.info(
        "serving %s version %d at http://%s:%d/v1/models/%s (Ctrl+C stops)",
        args.model_dir,
        version,
        host,
        port,
        args.model_name,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    main()
