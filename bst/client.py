"""A client for the exported model behind TF Serving's REST API.

Works against ``tensorflow/serving`` (see ``serving/README.md``) and against
``python -m bst.serve`` alike; standard library only, so it imports no
TensorFlow::

    from bst.client import BSTClient

    client = BSTClient("http://127.0.0.1:8501")
    client.recommend([["1193", "661", "914"]])
    # [{"movie_ids": [...], "titles": [...], "scores": [...]}]
    client.recommend([["1193"]], profiles=[{"gender": "F", "age": "25"}])
    client.score([["1193"]], [["661", "914"]])  # [[s_661, s_914]]

Requests are dense tensors, so the client pads each request's rows to one
length with ``""`` (the model ignores ``""``). It also starts every history
with one ``""``: with ``--enable_batching`` and ``pad_variable_length_inputs``,
TF Serving pads shorter requests with their tensor's first element, which is
then ``""`` instead of a real movie. Scores of padded candidates are cut off.

``recommend`` reads the model's metadata once to pick its signature: profile
inputs declared by ``serving_default`` are always sent (``""`` when unknown),
else profiles go to ``with_profile`` (``bst.export``'s layout). If the model is
replaced by one with other inputs, the next 400 makes it read them again.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from bst.features import PROFILE_FEATURES

HISTORY = "history"
CANDIDATES = "candidates"
DEFAULT_SIGNATURE = "serving_default"
PROFILE_SIGNATURE = "with_profile"  # bst.export's signature with the profile inputs


class ServingError(RuntimeError):
    """The server refused a request, or could not be reached.

    Attributes:
        status: int or None. The HTTP status (None when no answer came).
        message: str. The server's ``{"error": ...}`` message, or why no answer came.
        url: str. The URL requested.
    """

    def __init__(self, message: str, status: int | None, url: str):
        super().__init__(
            f"{message} (HTTP {status} from {url})" if status else f"{message} ({url})"
        )
        self.message = message
        self.status = status
        self.url = url


class BSTClient:
    """Calls one model's REST endpoints; one keep-alive connection per thread.

    Args:
        base_url: str. The server, e.g. ``"http://127.0.0.1:8501"``.
        model_name: str. The model's name in the URLs. Defaults to "bst".
        timeout: float. Seconds to wait for a connection or an answer. Defaults to 10.
    """

    def __init__(self, base_url: str, model_name: str = "bst", timeout: float = 10.0):
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"`base_url` must be http(s)://host:port. Received: {base_url!r}")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.model_name = model_name
        self.timeout = float(timeout)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        # version (None: newest) -> signature name -> its input names, from metadata()
        self._signatures: dict[int | None, dict[str, set[str]]] = {}

    # ------------------------------------------------------------------ endpoints

    def status(self) -> dict:
        """``GET /v1/models/<name>``: ``{"model_version_status": [{"version", "state", ...}]}``."""
        return self._request("GET", self._model_path())

    def metadata(self, version: int | None = None) -> dict:
        """``GET /v1/models/<name>[/versions/N]/metadata``: the signatures, TF Serving's JSON."""
        return self._request("GET", self._model_path(version) + "/metadata")

    def predict(
        self,
        instances: list,
        signature_name: str | None = None,
        version: int | None = None,
    ) -> list:
        """A raw row-format predict; returns ``predictions``."""
        body: dict[str, Any] = {"instances": instances}
        if signature_name:
            body["signature_name"] = signature_name
        try:
            answer = self._request("POST", self._model_path(version) + ":predict", body)
        except ServingError as err:
            if err.status == 400:
                self._signatures.clear()  # the model may have changed: re-read its inputs
            raise
        return answer["predictions"]

    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        profiles: Sequence[Mapping[str, Any] | None] | None = None,
        version: int | None = None,
    ) -> list[dict]:
        """Top-K movies for each history (time order, oldest first), seen movies excluded.

        Args:
            histories: one list of raw movie ids per person.
            profiles: None, or one dict per person with any of ``gender``, ``age``,
                ``occupation``, ``zip`` (missing ones are sent as ``""``, unknown).
            version: int or None. A specific model version; None for the newest.

        Returns:
            One ``{"movie_ids": [...], "titles": [...], "scores": [...]}`` per history.
        """
        if profiles is not None and len(profiles) != len(histories):
            raise ValueError(
                f"`profiles` must have one entry per history. Received: {len(profiles)} "
                f"profiles for {len(histories)} histories"
            )
        if not histories:
            return []
        rows = _pad([[str(m) for m in h] for h in histories], lead=True)
        cached = version in self._signatures
        try:
            predictions = self.predict(*self._recommend_request(rows, profiles, version), version)
        except ServingError as err:
            if err.status != 400 or not cached:
                raise
            # Built from signatures read earlier: the model may have been replaced by one
            # with other inputs. predict() dropped them; ask again with fresh ones.
            predictions = self.predict(*self._recommend_request(rows, profiles, version), version)
        return [{k: p[k] for k in ("movie_ids", "titles", "scores") if k in p} for p in predictions]

    def _recommend_request(
        self,
        rows: list[list[str]],
        profiles: Sequence[Mapping[str, Any] | None] | None,
        version: int | None,
    ) -> tuple[list[dict], str]:
        signature, profile_inputs = self._recommend_signature(profiles is not None, version)
        instances = []
        for i, row in enumerate(rows):
            instance: dict[str, Any] = {HISTORY: row}
            profile = (profiles[i] if profiles is not None else None) or {}
            unknown = set(profile) - set(profile_inputs)
            if unknown:
                raise ValueError(
                    f"profiles[{i}] has unknown keys {sorted(unknown)}; expected some of "
                    f"{sorted(profile_inputs)}"
                )
            for name in profile_inputs:
                value = profile.get(name)
                instance[name] = "" if value is None else str(value)
            instances.append(instance)
        return instances, signature

    def score(
        self,
        histories: Sequence[Sequence[str]],
        candidates: Sequence[Sequence[str]],
        version: int | None = None,
    ) -> list[list[float]]:
        """The model's score of each candidate movie for each history (``score`` signature)."""
        if len(candidates) != len(histories):
            raise ValueError(
                f"`candidates` must have one list per history. Received: {len(candidates)} "
                f"for {len(histories)} histories"
            )
        if not histories:
            return []
        history_rows = _pad([[str(m) for m in h] for h in histories], lead=True)
        candidate_rows = _pad([[str(m) for m in c] for c in candidates], lead=False)
        instances = [
            {HISTORY: h, CANDIDATES: c} for h, c in zip(history_rows, candidate_rows, strict=True)
        ]
        predictions = self.predict(instances, "score", version)
        out = []
        for row, wanted in zip(predictions, candidates, strict=True):
            scores = row["scores"] if isinstance(row, dict) else row
            out.append([float(s) for s in scores[: len(wanted)]])
        return out

    # ------------------------------------------------------------------ plumbing

    def _recommend_signature(
        self, with_profile: bool, version: int | None
    ) -> tuple[str, list[str]]:
        """The signature to ask and the profile inputs it declares."""
        signatures = self._signature_inputs(version)
        default = signatures.get(DEFAULT_SIGNATURE, {HISTORY})
        declared = _profile_names(default)
        if declared or not with_profile:
            return DEFAULT_SIGNATURE, declared
        if PROFILE_SIGNATURE in signatures:
            return PROFILE_SIGNATURE, _profile_names(signatures[PROFILE_SIGNATURE])
        raise ValueError(
            f"model {self.model_name!r} at {self.base_url} takes no profile inputs (its "
            f"signatures: {', '.join(sorted(signatures))}); call recommend() without profiles"
        )

    def _signature_inputs(self, version: int | None) -> dict[str, set[str]]:
        if version not in self._signatures:
            meta = self.metadata(version)
            defs = meta.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
            self._signatures[version] = {name: set(d.get("inputs", {})) for name, d in defs.items()}
        return self._signatures[version]

    def _model_path(self, version: int | None = None) -> str:
        path = f"{self._prefix}/v1/models/{quote(self.model_name, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        return path

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.base_url.removesuffix(self._prefix) + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt > 0)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._local.conn = None
                if attempt:  # a kept-alive connection the server had closed: retry once
                    raise ServingError("connection closed by the server", None, url) from None
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                self._local.conn = None
                reason = "timed out" if isinstance(err, socket.timeout) else str(err)
                raise ServingError(f"cannot reach the server: {reason}", None, url) from None
        try:
            answer = json.loads(payload) if payload else {}
        except ValueError:
            answer = {"error": payload.decode("utf-8", "replace")[:500]}
        if response.status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise ServingError(message or response.reason, response.status, url)
        return answer

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> BSTClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _profile_names(inputs: set[str]) -> list[str]:
    """A signature's profile inputs: every input but the history (MovieLens' in their
    usual order, then the others sorted)."""
    known = [n for n in PROFILE_FEATURES if n in inputs]
    return known + sorted(set(inputs) - set(known) - {HISTORY})


def _pad(rows: list[list[str]], lead: bool) -> list[list[str]]:
    """Rows padded on the left with ``""`` to one length (plus one leading ``""`` if ``lead``)."""
    width = max((len(r) for r in rows), default=0) + (1 if lead else 0)
    width = max(width, 1)
    return (
        [[""] * (width - len(r)) + r for r in rows]
        if lead
        else [r + [""] * (width - len(r)) for r in rows]
    )
