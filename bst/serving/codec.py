"""TF Serving's REST JSON <-> tensors: request validation, responses, error messages."""

from __future__ import annotations

import base64
import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

log = logging.getLogger("bst.serve")

DEFAULT_SIGNATURE = "serving_default"


_TYPE_NAMES = {str: "String", bool: "Bool", int: "Number", float: "Number", dict: "Object"}


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


class RequestError(Exception):
    """A request TF Serving would refuse; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def dumps(obj: Any) -> bytes:
    # allow_nan: NaN/Infinity tokens, as TF Serving writes them.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_body(message: str) -> bytes:
    return dumps({"error": message})


def json_repr(value: Any) -> str:
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
                f"JSON Value: {json_repr(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {len(shape)} (rows of different lengths?)"
            )
        if _leaf_ok(value, dtype):
            return value
        if dtype == tf.string and _is_b64(value):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise ValueError(
                    f"JSON Value: {json_repr(value)} Unable to base64 decode"
                ) from None
        raise ValueError(
            f"JSON Value: {json_repr(value)} Type: {_json_type(value)} is not of expected "
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


def signature_of(signatures: dict[str, Signature], name: str) -> Signature:
    """The signature a request names ("" = ``serving_default``), or TF Serving's 400."""
    key = name or DEFAULT_SIGNATURE
    if key not in signatures:
        raise RequestError(
            f'Serving signature name: "{key}" not found in signature def (this model has: '
            f"{', '.join(sorted(signatures))})"
        )
    return signatures[key]


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


def row_tensors(signature: Signature, instances: Any, max_batch: int) -> dict[str, tf.Tensor]:
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


def columnar_tensors(signature: Signature, value: Any, max_batch: int) -> dict[str, tf.Tensor]:
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


def row_response(outputs: dict[str, np.ndarray]) -> dict:
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


def columnar_response(outputs: dict[str, np.ndarray]) -> dict:
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        return {"outputs": _output_json(value, name)}
    return {"outputs": {n: _output_json(outputs[n], n) for n in sorted(outputs)}}


TF_ERROR_STATUS = {
    tf.errors.InvalidArgumentError: 400,
    tf.errors.FailedPreconditionError: 400,
    tf.errors.OutOfRangeError: 400,
    tf.errors.NotFoundError: 404,
    tf.errors.ResourceExhaustedError: 429,
    tf.errors.UnimplementedError: 501,
    tf.errors.UnavailableError: 503,
}


def tf_message(err: tf.errors.OpError) -> str:
    """The useful line of a TF runtime error, without the stack and node decorations."""
    skip = ("Graph execution error", "Detected at node", "<stack traces")
    lines = [
        line.strip()
        for line in (err.message or str(err)).splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith(skip)
    ]
    return " ".join(lines) or type(err).__name__
