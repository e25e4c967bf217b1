"""Merging concurrent predict requests for one signature into one model call."""

from __future__ import annotations

import logging
import threading

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst.serving.codec import Signature

log = logging.getLogger("bst.serve")


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
