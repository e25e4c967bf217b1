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

from bst import cli

if __name__ == "__main__":
    cli.early("serve")  # --help and mistakes answer before TensorFlow starts

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence

import bst  # noqa: F401  (Keras 2 before TensorFlow)

import tensorflow as tf  # isort: skip
import uvicorn  # isort: skip


from bst.errors import UsageError, cli_errors
from bst.serving.rest import bind_socket, create_app, is_loopback
from bst.serving.servable import ModelDirError

log = logging.getLogger("bst.serve")


def set_tf_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Size TensorFlow's thread pools (0 keeps TF's choice); call before any TF op runs.

    The servable is a chain of small ops: on a few cores, splitting each op over
    threads costs more than it saves, so ``intra_op=1`` (one thread per op, the
    requests themselves running side by side) cuts single-request latency; see
    the serving benchmark in the README.

    Raises:
        UsageError: a negative count, or TensorFlow already running (too late).
    """
    for name, value in (("intra_op", intra_op), ("inter_op", inter_op)):
        if value < 0:
            raise UsageError(f"thread counts must be >= 0. Received: {name}={value}")
    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as err:
        raise UsageError(f"TensorFlow's threads can only be sized before it starts: {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bst.serve``: arguments as in :func:`bst.cli.serve_parser`."""
    with cli_errors(ModelDirError, interrupted="server stopped"):
        args = cli.parse("serve", argv)
        cli.setup_logging(args.verbose)
        return serve(args)


def serve(args: argparse.Namespace) -> int:
    """Bind, load the newest version, serve until stopped (errors as :class:`cli_errors`)."""
    set_tf_threads(args.intra_op_threads, args.inter_op_threads)
    try:
        sock = bind_socket(args.host, args.port)  # first: a busy port fails before the model loads
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    try:
        app = create_app(
            args.model_dir,
            args.model_name,
            max_batch=args.max_batch,
            max_body_bytes=args.max_body_bytes,
            poll_seconds=args.poll_seconds,
            batching=args.batching,
        )
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    if not is_loopback(host):
        log.warning("listening on %s: reachable from the network, with no authentication", host)
    version = app.state.manager.current.version
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = _Server(config)
    # said once the server is up and Ctrl+C is handled, so the line means "ready"
    server.ready_line = (
        f"serving {args.model_dir} version {version} at "
        f"http://{host}:{port}/v1/models/{args.model_name} (Ctrl+C stops)"
    )
    server.run(sockets=[sock])
    if signal.SIGINT in server.stopped_by:
        raise KeyboardInterrupt  # after the graceful shutdown: cli_errors → exit 130
    if signal.SIGTERM in server.stopped_by:
        print("terminated; server stopped", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGINT/SIGTERM without re-raising the
    signal inside its event loop (which logs a lifespan traceback); the caller sees which
    signal stopped it in ``stopped_by``."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.stopped_by: list[int] = []
        self.ready_line = ""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)  # inside capture_signals: handlers are set
        if self.ready_line and self.started:
            log.info("%s", self.ready_line)

    def handle_exit(self, sig: int, frame) -> None:
        self.stopped_by.append(sig)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


if __name__ == "__main__":
    main()
