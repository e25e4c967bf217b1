"""Loaded SavedModel versions: signatures, metadata and warm-up, as TF Serving loads them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from bst.errors import UsageError
from bst.serving.batching import Batcher
from bst.serving.codec import Signature, dumps, signature_of

log = logging.getLogger("bst.serve")


log = logging.getLogger("bst.serve")

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many


class ModelDirError(UsageError):
    """``--model-dir`` is missing, holds no version folder, or no version loads."""


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
            self._metadata[model_name] = dumps(body)
        return self._metadata[model_name]


def _signature_defs(path: Path) -> dict[str, Any]:
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
        count, checked = 0, set()
        for raw in tf.data.TFRecordDataset(str(records)).take(MAX_WARMUP_RECORDS):
            entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            if not entry.HasField("predict_log"):
                continue  # classify/regress logs have no meaning here
            request = entry.predict_log.request
            signature = signature_of(servable.signatures, request.model_spec.signature_name)
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
