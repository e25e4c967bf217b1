"""The REST API: URL routing and handlers (RestHandler), the Starlette app and a test server thread."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from bst.errors import UsageError
from bst.serving.codec import (
    TF_ERROR_STATUS,
    RequestError,
    Signature,
    columnar_response,
    columnar_tensors,
    dumps,
    error_body,
    json_repr,
    row_response,
    row_tensors,
    signature_of,
    tf_message,
)
from bst.serving.manager import ModelManager
from bst.serving.servable import Servable

log = logging.getLogger("bst.serve")


# TF Serving's URL grammar (http_rest_api_util.cc), case-insensitive like its RE2 patterns.
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)


# The deepest JSON any request may have, checked before parsing (so no recursion can blow
# up): {"instances": [{"name": value}]} puts a rank-R input R - 1 + 3 levels deep, the
# columnar form R + 2. Anything deeper cannot be a valid request for any signature.
_EXTRA_LEVELS = 3
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_MAX_VERSION_DIGITS = 18  # int64, like TF Serving's version numbers


def json_depth(body: bytes) -> int:
    """How deeply ``body``'s arrays/objects nest, without parsing it (strings skipped)."""
    if body.count(b"[") + body.count(b"{") <= 1:
        return body.count(b"[") + body.count(b"{")
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, np.uint8)
    delta = np.where((steps == ord("[")) | (steps == ord("{")), 1, -1)
    return int(np.cumsum(delta).max())


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
            return err.status, error_body(err.message)
        except tf.errors.OpError as err:
            status = next((s for k, s in TF_ERROR_STATUS.items() if isinstance(err, k)), 500)
            return status, error_body(tf_message(err))
        except Exception as err:  # a bug here must not take the server down
            log.exception("error handling %s %s", method, path)
            return 500, error_body(f"Internal error: {type(err).__name__}: {err}")

    def _spec(self, match: re.Match) -> tuple[str, int | None]:
        name = match.group(1) or ""
        if match.group(3):
            raise RequestError(
                f"Version labels are not supported by bst.serve (got label {match.group(3)!r}): "
                "use /versions/<number>"
            )
        digits = match.group(2)
        if digits and len(digits.lstrip("0")) > _MAX_VERSION_DIGITS:
            shown = digits if len(digits) <= 40 else f"{digits[:20]}...({len(digits)} digits)"
            raise RequestError(f"Servable not found for request: Specific({name}, {shown})", 404)
        version = int(digits) if digits else None
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
        return dumps(self.manager.status(name, version))

    def metadata(self, name: str, version: int | None) -> bytes:
        return self._servable(name, version).metadata_json(self.model_name)

    def predict(self, name: str, version: int | None, method: str, body: bytes) -> bytes:
        if method != "predict":
            raise RequestError(
                f"bst.serve implements :predict only, not :{method} (the model has no "
                "classify/regress signatures)"
            )
        servable = self._servable(name, version)
        deepest = (
            max(
                (s.shape.rank or 0)
                for sig in servable.signatures.values()
                for s in sig.inputs.values()
            )
            + _EXTRA_LEVELS
        )
        depth = json_depth(body)
        if depth > deepest:
            raise RequestError(
                f"JSON Parse error: the request nests {depth} levels deep; this model's "
                f"inputs (rank <= {deepest - _EXTRA_LEVELS}) allow at most {deepest}"
            )
        doc = self._parse(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise RequestError("'signature_name' key must be a string value.")
        signature = signature_of(servable.signatures, signature_name)
        has_rows, has_columns = "instances" in doc, "inputs" in doc
        if has_rows and has_columns:
            raise RequestError(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
            )
        if has_rows:
            tensors = row_tensors(signature, doc["instances"], self.max_batch)
            return dumps(row_response(self._run(servable, signature, tensors)))
        if has_columns:
            tensors = columnar_tensors(signature, doc["inputs"], self.max_batch)
            return dumps(columnar_response(self._run(servable, signature, tensors)))
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
            raise RequestError(f"JSON Value: {json_repr(doc)} Is not object")
        return doc


# --------------------------------------------------------------------------- HTTP (Starlette)


ALLOWED_METHODS = ("GET", "HEAD", "POST")
ALLOW_HEADER = ", ".join(ALLOWED_METHODS)


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

    if max_batch < 1:
        raise UsageError(f"`max_batch` must be positive. Received: max_batch={max_batch}")
    if max_body_bytes < 1:
        raise UsageError(f"`max_body_bytes` must be positive. Received: {max_body_bytes}")
    manager = ModelManager(model_dir, poll_seconds)
    manager.load_initial()
    handler = RestHandler(manager, model_name, max_batch, batching)
    workers = threads or 8  # mostly waiting on TF (which has its own threads) or a batch
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bst-serve")
    too_large = error_body(
        f"Request body is larger than this server's --max-body-bytes {max_body_bytes}"
    )

    async def endpoint(request):
        method = request.method
        path = request.scope["path"]
        if method not in ALLOWED_METHODS:
            return Response(
                error_body(f"Method {method} not allowed; this API answers {ALLOW_HEADER}"),
                405,
                headers={"Allow": ALLOW_HEADER},
                media_type="application/json",
            )
        if method == "POST":
            try:
                body = await _read_body(request, max_body_bytes)
            except _BodyTooLarge:
                return Response(too_large, 413, media_type="application/json")
            except ClientDisconnect:
                log.info(
                    "%s %s: the client disconnected before sending its whole body", method, path
                )
                return Response(b"", 400)  # nobody is listening any more
            loop = asyncio.get_running_loop()
            # Parsing, inference and serialization run off the event loop, in one hop.
            status, payload = await loop.run_in_executor(
                executor, handler.handle, method, path, body
            )
        else:  # status and metadata are cheap: answer on the loop (HEAD: as GET, no body)
            status, payload = handler.handle("GET", path, b"")
            if method == "HEAD":
                headers = {"Content-Length": str(len(payload))}
                return Response(None, status, headers=headers, media_type="application/json")
        return Response(payload, status, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        manager.start()
        try:
            yield
        finally:
            manager.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
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
        self.sock = bind_socket(host, port)
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


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind_socket(host: str, port: int) -> socket.socket:
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
