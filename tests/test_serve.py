"""bst.serve (TF Serving's REST API in Python) and bst.client, against the fake model."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tensorflow as tf  # noqa: E402
from servable import MOVIE_IDS, expected_top, write_fake_model  # noqa: E402

from bst import serve  # noqa: E402
from bst.client import BSTClient, ServingError  # noqa: E402
from bst.serving import batching, codec, rest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_BATCH = 8
MAX_BODY = 4096
PROFILE = {"gender": "", "age": "", "occupation": "", "zip": ""}


def call(url: str, path: str, body=None, parse: bool = True) -> tuple[int, object]:
    """One request on a fresh connection; returns (status, parsed JSON body or text)."""
    parts = urlsplit(url)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET" if data is None else "POST", path, body=data)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if not parse:
        return response.status, payload.decode("utf-8", "replace")
    return response.status, json.loads(payload) if payload else None


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("models") / "bst"
    write_fake_model(base, 1, k=3)
    return base


@pytest.fixture(scope="module")
def server(model_base):
    app = rest.create_app(model_base, max_batch=MAX_BATCH, max_body_bytes=MAX_BODY, poll_seconds=0)
    with rest.ServerThread(app) as running:
        yield running


def good_request_works(url: str) -> None:
    status, body = call(url, "/v1/models/bst:predict", {"instances": [{"history": ["10"]}]})
    assert status == 200, body
    assert body["predictions"][0]["movie_ids"] == ["9", "8", "7"]


# ---------------------------------------------------------------- status and metadata


def test_status_has_tf_serving_shape(server):
    expected = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert call(server.url, "/v1/models/bst") == (200, expected)
    assert call(server.url, "/v1/models/bst/versions/1") == (200, expected)
    status, body = call(server.url, "/v1/models/bst/versions/9")
    assert (status, body) == (404, {"error": "Could not find version 9 of model bst"})
    assert call(server.url, "/v1/models/nope")[0] == 404


def test_metadata_has_tf_serving_shape(server):
    status, body = call(server.url, "/v1/models/bst/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "bst", "signature_name": "", "version": "1"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "score"} <= set(defs)
    default = defs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert set(default["inputs"]) == {"history", "gender", "age", "occupation", "zip"}
    history = default["inputs"]["history"]
    assert history["dtype"] == "DT_STRING"
    assert [d["size"] for d in history["tensor_shape"]["dim"]] == ["-1", "-1"]
    assert history["name"].endswith(":0")
    assert [d["size"] for d in default["inputs"]["gender"]["tensor_shape"]["dim"]] == ["-1"]
    scores = default["outputs"]["scores"]
    assert scores["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in scores["tensor_shape"]["dim"]] == ["-1", "3"]
    assert default["outputs"]["movie_ids"]["dtype"] == "DT_STRING"
    assert set(defs["score"]["inputs"]) == {"history", "candidates"}
    assert call(server.url, "/v1/models/bst/versions/1/metadata") == (200, body)
    assert call(server.url, "/v1/models/bst/versions/2/metadata")[0] == 404


# ---------------------------------------------------------------- predict


def test_predict_row_format(server):
    request = {
        "instances": [
            {"history": ["10", "9"]},  # profile left out: filled with ""
            {"history": ["", "1"], "gender": "F", "age": "25", "occupation": "4", "zip": "9"},
        ]
    }
    status, body = call(server.url, "/v1/models/bst:predict", request)
    assert status == 200, body
    assert body == {
        "predictions": [
            {"movie_ids": ["8", "7", "6"], "titles": ["Movie 8", "Movie 7", "Movie 6"],
             "scores": [4.0, 3.5, 3.0]},
            {"movie_ids": ["2", "3", "4"], "titles": ["Movie 2", "Movie 3", "Movie 4"],
             "scores": [4.5, 4.0, 3.5]},
        ]
    }  # fmt: skip
    assert body["predictions"][1] == expected_top(["1"], gender="F")


def test_predict_columnar_format_and_pinned_version(server):
    request = {"inputs": {"history": [["10", "9"], ["", ""]], "gender": ["", "F"]}}
    status, body = call(server.url, "/v1/models/bst/versions/1:predict", request)
    assert status == 200, body
    assert body == {
        "outputs": {
            "movie_ids": [["8", "7", "6"], ["1", "2", "3"]],
            "titles": [["Movie 8", "Movie 7", "Movie 6"], ["Movie 1", "Movie 2", "Movie 3"]],
            "scores": [[4.0, 3.5, 3.0], [5.0, 4.5, 4.0]],
        }
    }


def test_predict_writes_infinity_and_reads_b64(server):
    # 8 of 10 movies seen, k=3: the third slot is a masked movie scored -inf.
    history = [{"b64": base64.b64encode(b"1").decode()}] + MOVIE_IDS[1:8]
    status, body = call(server.url, "/v1/models/bst:predict", {"instances": [{"history": history}]})
    assert status == 200, body
    row = body["predictions"][0]
    assert row["movie_ids"][:2] == ["10", "9"]
    assert row["scores"][:2] == [5.0, 4.5] and row["scores"][2] == -math.inf


def test_score_signature(server):
    row = {
        "signature_name": "score",
        "instances": [{"history": ["1"], "candidates": ["3", "x", "10"]}],
    }
    assert call(server.url, "/v1/models/bst:predict", row) == (
        200,
        {"predictions": [[1.5, 0.0, 5.0]]},
    )
    columnar = {
        "signature_name": "score",
        "inputs": {"history": [["1"]], "candidates": [["10", ""]]},
    }
    assert call(server.url, "/v1/models/bst:predict", columnar) == (200, {"outputs": [[5.0, 0.0]]})


BAD_REQUESTS = [
    ("invalid JSON", "/v1/models/bst:predict", b"{not json", 400, "JSON Parse error"),
    ("empty body", "/v1/models/bst:predict", b"", 400, "document is empty"),
    ("not an object", "/v1/models/bst:predict", [1, 2], 400, "Is not object"),
    ("unknown input", "/v1/models/bst:predict",
     {"instances": [{"history": ["1"], "genre": "x"}]}, 400, "Unknown named input: genre"),
    ("unknown input, columnar", "/v1/models/bst:predict",
     {"inputs": {"history": [["1"]], "genre": ["x"]}}, 400, "Unknown named input: genre"),
    ("numbers for strings", "/v1/models/bst:predict",
     {"instances": [{"history": [1, 2]}]}, 400, "is not of expected type: string"),
    ("ragged rows", "/v1/models/bst:predict",
     {"instances": [{"history": ["1", "2"]}, {"history": ["3"]}]}, 400, "same length"),
    ("ragged columnar", "/v1/models/bst:predict",
     {"inputs": {"history": [["1", "2"], ["3"]]}}, 400, "unexpected size"),
    ("wrong rank", "/v1/models/bst:predict",
     {"inputs": {"history": ["1", "2"]}}, 400, "must have rank 2"),
    ("both formats", "/v1/models/bst:predict",
     {"instances": [{"history": ["1"]}], "inputs": {"history": [["1"]]}}, 400, "only one of"),
    ("neither format", "/v1/models/bst:predict", {"signature_name": ""}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("empty instances", "/v1/models/bst:predict", {"instances": []}, 400, "No values"),
    ("bare list, many inputs", "/v1/models/bst:predict",
     {"instances": [["1"]]}, 400, "expecting list of objects"),
    ("missing required input", "/v1/models/bst:predict",
     {"signature_name": "score", "instances": [{"history": ["1"]}]}, 400,
     "Missing named input: candidates"),
    ("batch over the limit", "/v1/models/bst:predict",
     {"instances": [{"history": ["1"]}] * (MAX_BATCH + 1)}, 400, "--max-batch"),
    ("columnar batch over the limit", "/v1/models/bst:predict",
     {"inputs": {"history": [["1"]] * (MAX_BATCH + 1)}}, 400, "--max-batch"),
    ("body too large", "/v1/models/bst:predict",
     {"instances": [{"history": ["1"] * MAX_BODY}]}, 413, "--max-body-bytes"),
    ("unknown version", "/v1/models/bst/versions/7:predict",
     {"instances": [{"history": ["1"]}]}, 404, "Specific(bst, 7)"),
    ("unknown model", "/v1/models/nope:predict",
     {"instances": [{"history": ["1"]}]}, 404, "Latest(nope)"),
    ("unknown signature", "/v1/models/bst:predict",
     {"signature_name": "nope", "instances": [{"history": ["1"]}]}, 400,
     'Serving signature name: "nope" not found'),
    ("signature name not a string", "/v1/models/bst:predict",
     {"signature_name": 3, "instances": [{"history": ["1"]}]}, 400, "must be a string"),
    ("malformed path", "/v1/modelz/bst", None, 400, "Malformed request"),
    ("classify", "/v1/models/bst:classify", {"examples": []}, 400, ":predict only"),
]  # fmt: skip


@pytest.mark.parametrize(
    "path,body,status,message", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_request_gets_tf_style_error_and_server_keeps_serving(
    server, path, body, status, message
):
    got, answer = call(server.url, path, body)
    assert got == status, answer
    assert set(answer) == {"error"} and message in answer["error"], answer
    good_request_works(server.url)


def _raw(url: str, method: str, path: str, body: bytes | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 2_000 + b"]" * 2_000,  # a RecursionError in json.loads (under MAX_BODY)
        b'{"instances": ' + b"[" * 900 + b'"1"' + b"]" * 900 + b"}",  # ... in the codec
        b'{"instances": [{"history": [[["1"]]]}]}',  # one level deeper than rank 2 allows
    ],
    ids=["2000 levels", "900 levels in instances", "rank + 1"],
)
def test_deep_nesting_is_a_400_with_one_log_line_at_most(server, body, caplog):
    with caplog.at_level("INFO", logger="bst.serve"):
        status, _, payload = _raw(server.url, "POST", "/v1/models/bst:predict", body)
    assert status == 400, payload[:300]
    answer = json.loads(payload)
    assert set(answer) == {"error"} and "nests" in answer["error"], answer
    assert len(caplog.records) <= 1
    good_request_works(server.url)


def test_json_depth_skips_brackets_inside_strings():
    assert rest.json_depth(b'{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert rest.json_depth(b'{"a": "x\\"[[[", "b": 1}') == 1
    assert rest.json_depth(b"7") == 0


@pytest.mark.parametrize(
    "path",
    ["/v1/models/bst/versions/" + "9" * 5000, "/v1/models/bst/versions/" + "9" * 19 + ":predict"],
)
def test_huge_version_number_is_not_found(server, path):
    method = "POST" if path.endswith(":predict") else "GET"
    body = json.dumps({"instances": [{"history": ["1"]}]}).encode() if method == "POST" else None
    status, _, payload = _raw(server.url, method, path, body)
    assert status == 404, payload[:300]
    assert "Servable not found" in json.loads(payload)["error"]


def test_head_is_get_without_a_body_and_options_is_a_json_405(server):
    status, headers, payload = _raw(server.url, "HEAD", "/v1/models/bst")
    got, get_headers, get_payload = _raw(server.url, "GET", "/v1/models/bst")
    assert (status, got) == (200, 200) and payload == b""
    assert headers["content-length"] == str(len(get_payload))
    assert headers["content-type"] == get_headers["content-type"] == "application/json"
    for method in ("OPTIONS", "PUT", "DELETE"):
        status, headers, payload = _raw(server.url, method, "/v1/models/bst")
        assert status == 405 and headers["allow"] == "GET, HEAD, POST"
        assert set(json.loads(payload)) == {"error"}


def test_client_disconnect_mid_body_logs_one_short_line(server, caplog):
    parts = urlsplit(server.url)
    with caplog.at_level("INFO"):
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/models/bst:predict HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inst'
            )
        deadline = time.time() + 10
        while time.time() < deadline and not any(
            "disconnected" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
    lines = [r for r in caplog.records if r.levelname != "DEBUG"]
    assert any("disconnected before sending its whole body" in r.getMessage() for r in lines)
    assert not any(r.exc_info for r in lines) and len(lines) <= 2, [r.getMessage() for r in lines]
    good_request_works(server.url)


# ---------------------------------------------------------------- client


def test_client_recommend_score_status_metadata(server):
    with BSTClient(server.url) as client:
        assert client.status()["model_version_status"][0]["version"] == "1"
        assert "score" in client.metadata()["metadata"]["signature_def"]["signature_def"]
        got = client.recommend([["10", "9"], ["1"], []])  # ragged: the client pads
        assert got == [expected_top(["10", "9"]), expected_top(["1"]), expected_top([])]
        got = client.recommend([["1"], ["1"]], profiles=[{"gender": "F", "age": 25}, None])
        assert got == [expected_top(["1"], gender="F"), expected_top(["1"])]
        assert client.recommend([["10"]], version=1) == [expected_top(["10"])]
        assert client.score([["1"], ["2", "3"]], [["10", "x", "3"], ["1"]]) == [
            [5.0, 0.0, 1.5],
            [0.5],
        ]
        assert client.recommend([]) == []
        with pytest.raises(ServingError) as info:
            client.recommend([["1"]], version=9)
        assert info.value.status == 404 and "Specific(bst, 9)" in info.value.message
        with pytest.raises(ValueError, match="unknown keys"):
            client.recommend([["1"]], profiles=[{"sex": "F"}])


def test_client_imports_no_tensorflow():
    code = "import sys, bst.client; print('tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_client_reports_unreachable_server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ServingError) as info:
        BSTClient(f"http://127.0.0.1:{port}", timeout=5).status()
    assert info.value.status is None and "cannot reach" in info.value.message


# ---------------------------------------------------------------- versions


def test_new_version_is_picked_up_without_restart(tmp_path):
    base = tmp_path / "bst"
    write_fake_model(base, 1, k=3)
    app = rest.create_app(base, poll_seconds=0.1)
    with rest.ServerThread(app) as running, BSTClient(running.url) as client:
        assert client.recommend([["10"]]) == [expected_top(["10"])]
        (base / "not-a-version").mkdir()  # ignored: not an integer
        (base / "7").mkdir()  # ignored: no saved_model.pb
        # Version 2 has the bst.export layout: history-only default + with_profile.
        write_fake_model(base, 2, k=2, profile_signature=True)
        deadline = time.monotonic() + 20
        while client.status()["model_version_status"][0]["version"] != "2":
            assert time.monotonic() < deadline, "version 2 was not picked up"
            time.sleep(0.05)
        assert client.status() == {
            "model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
                {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
            ]
        }  # fmt: skip
        status, body = call(
            running.url, "/v1/models/bst/versions/1:predict", {"instances": [["1"]]}
        )
        assert status == 404 and "Specific(bst, 1)" in body["error"]
        # A single-input signature takes bare values, in both formats.
        assert call(running.url, "/v1/models/bst:predict", {"instances": [["10", "9"]]}) == (
            200,
            {"predictions": [{"movie_ids": ["8", "7"], "titles": ["Movie 8", "Movie 7"],
                              "scores": [4.0, 3.5]}]},
        )  # fmt: skip
        assert call(running.url, "/v1/models/bst:predict", {"inputs": [["10", "9"]]})[1] == {
            "outputs": {"movie_ids": [["8", "7"]], "titles": [["Movie 8", "Movie 7"]],
                        "scores": [[4.0, 3.5]]}
        }  # fmt: skip
        # The client read version 1's signatures; it notices the new ones by itself.
        got = client.recommend([["1"], ["1"]], profiles=[{"gender": "F"}, {}])
        assert got == [expected_top(["1"], k=2, gender="F"), expected_top(["1"], k=2)]

        # A newer version that cannot load is reported, and version 2 keeps serving.
        (base / ".tmp-9").mkdir()
        (base / ".tmp-9" / "saved_model.pb").write_bytes(b"not a SavedModel")
        (base / ".tmp-9").rename(base / "9")
        deadline = time.monotonic() + 20
        while client.status()["model_version_status"][0]["version"] != "9":
            assert time.monotonic() < deadline, "version 9 was not tried"
            time.sleep(0.05)
        broken, serving = client.status()["model_version_status"][:2]
        assert broken["state"] == "END" and broken["status"]["error_code"] == "UNKNOWN"
        assert broken["status"]["error_message"]
        assert serving == {"version": "2", "state": "AVAILABLE",
                           "status": {"error_code": "OK", "error_message": ""}}  # fmt: skip
        assert client.recommend([["10"]]) == [expected_top(["10"], k=2)]


# ---------------------------------------------------------------- batching


def _counting_batcher(gate: threading.Event, calls: list) -> batching.Batcher:
    """A Batcher over a Python signature whose first call waits for ``gate``."""
    import tensorflow as tf

    def function(history):
        calls.append(tuple(history.shape))
        if len(calls) == 1:
            gate.wait(10)
        if tf.reduce_any(history == "bad"):
            raise ValueError("bad row")
        return {"real": tf.reduce_sum(tf.cast(history != "", tf.int32), axis=1, keepdims=True)}

    signature = codec.Signature(
        name="serving_default",
        function=function,
        inputs={"history": tf.TensorSpec([None, None], tf.string)},
        outputs={"real": tf.TensorSpec([None, 1], tf.int32)},
    )
    return batching.Batcher(signature, max_batch=8)


def _wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_batcher_merges_waiting_requests_left_padding_histories():
    import tensorflow as tf

    gate, calls = threading.Event(), []
    batcher = _counting_batcher(gate, calls)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.run, {"history": tf.constant([["1"]])})
        _wait_for(lambda: len(calls) == 1)  # the model is busy with the first request
        two = pool.submit(batcher.run, {"history": tf.constant([["1", "2"], ["", "3"]])})
        one = pool.submit(batcher.run, {"history": tf.constant([["4", "5", "6"]])})
        bad = pool.submit(batcher.run, {"history": tf.constant([["bad"]])})
        _wait_for(lambda: len(batcher._pending) == 3)
        gate.set()
        assert first.result()["real"].tolist() == [[1]]
        assert two.result()["real"].tolist() == [[2], [1]]
        assert one.result()["real"].tolist() == [[3]]
        with pytest.raises(ValueError, match="bad row"):
            bad.result()
    # One call alone, one merged call of 4 rows padded to width 3 that failed on
    # the bad row, then each of the three requests alone (in the order the
    # threads happened to queue them).
    assert calls[:2] == [(1, 1), (4, 3)]
    assert sorted(calls[2:]) == [(1, 1), (1, 3), (2, 2)]
    assert (batcher.requests, batcher.calls) == (4, 4)
    # Merged and answered together when nothing fails:
    gate.clear()
    calls.clear()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.run, {"history": tf.constant([["1"]])})
        _wait_for(lambda: len(calls) == 1)
        rest = [pool.submit(batcher.run, {"history": tf.constant([["7"] * n])}) for n in (1, 2)]
        _wait_for(lambda: len(batcher._pending) == 2)
        gate.set()
        assert [f.result()["real"].tolist() for f in [first, *rest]] == [[[1]], [[1]], [[2]]]
    assert calls == [(1, 1), (2, 2)]


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_concurrent_requests_of_different_lengths(model_base, batching):
    app = rest.create_app(model_base, poll_seconds=0, batching=batching)
    histories = [MOVIE_IDS[:n] for n in range(8)] * 3
    with rest.ServerThread(app) as running, BSTClient(running.url) as client:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda h: client.recommend([h])[0], histories))
    assert got == [expected_top(h) for h in histories]


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize("make", ["missing", "empty", "corrupt"])
def test_cli_bad_model_dir_exits_2_with_one_line(tmp_path, capsys, make):
    folder = tmp_path / "bst"
    if make == "empty":
        folder.mkdir()
        (folder / "notes").mkdir()
    if make == "corrupt":
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(SystemExit) as info:
        serve.main(["--model-dir", str(folder), "--port", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --model-dir") and str(folder) in err[0]


def test_cli_busy_port_exits_2(model_base, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            serve.main(["--model-dir", str(model_base), "--port", str(port)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: cannot listen on 127.0.0.1:{port}")


@pytest.mark.slow
def test_thread_flags_size_tensorflows_pools_in_a_fresh_process():
    code = (
        "from bst import serve; serve.set_tf_threads(1, 2); import tensorflow as tf; "
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["1", "2"], proc.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--intra-op-threads", "-1"],
            "--intra-op-threads must be >= 0 (0 = TensorFlow's choice), got -1",
        ),
        # this test process has long started TensorFlow: too late to size its pools
        (["--intra-op-threads", "1"], "only be sized before it starts"),
    ],
)
def test_cli_thread_flags_fail_with_one_line(model_base, capsys, flags, message):
    tf.constant(0)  # TensorFlow is running
    with pytest.raises(SystemExit) as info:
        serve.main(["--model-dir", str(model_base), "--port", "0", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


# ---------------------------------------------------------------- TF Serving configs


def _config_classes():
    """BatchingParameters and MonitoringConfig built from their .proto definitions.

    tensorflow-serving-api ships ModelServerConfig but not these two, so their
    fields (tensorflow_serving/servables/tensorflow/session_bundle_config.proto,
    tensorflow_serving/config/monitoring_config.proto) are declared here.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    proto = descriptor_pb2.FileDescriptorProto(
        name="bst_test/serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = proto.message_type.add(name="BatchingParameters")
    for number, name, wrapper in [
        (1, "max_batch_size", "Int64Value"),
        (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"),
        (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
    ]:
        batching.field.add(
            name=name, number=number, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )  # fmt: skip
    batching.field.add(
        name="allowed_batch_sizes", number=6, label=F.LABEL_REPEATED, type=F.TYPE_INT64
    )
    batching.field.add(
        name="pad_variable_length_inputs", number=7, label=F.LABEL_OPTIONAL, type=F.TYPE_BOOL
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
    )  # fmt: skip
    pool.Add(proto)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
        for n in ("BatchingParameters", "MonitoringConfig")
    )


def test_serving_configs_parse_as_tf_serving_protos():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    models = text_format.Parse(
        (REPO / "serving" / "models.config").read_text(),
        model_server_config_pb2.ModelServerConfig(),
    )
    (config,) = models.model_config_list.config
    assert (config.name, config.base_path, config.model_platform) == (
        "bst",
        "/models/bst",
        "tensorflow",
    )
    assert config.model_version_policy.latest.num_versions == 1

    batching_cls, monitoring_cls = _config_classes()
    batching = text_format.Parse((REPO / "serving" / "batching.config").read_text(), batching_cls())
    assert batching.max_batch_size.value == 256
    assert 0 < batching.batch_timeout_micros.value <= 10_000
    assert batching.num_batch_threads.value >= 1 and batching.max_enqueued_batches.value >= 1
    assert batching.pad_variable_length_inputs
    monitoring = text_format.Parse(
        (REPO / "serving" / "monitoring.config").read_text(), monitoring_cls()
    )
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


# ---------------------------------------------------------------- real TF Serving


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tf_serving() -> str:
    """'binary' or 'docker', or skip with the reason neither can run here."""
    if shutil.which("tensorflow_model_server"):
        return "binary"
    if not shutil.which("docker"):
        pytest.skip("neither tensorflow_model_server nor docker is on PATH")
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"docker info failed: {err}")
    if info.returncode != 0:
        pytest.skip("tensorflow_model_server is not on PATH and `docker info` fails (no engine)")
    image = subprocess.run(
        ["docker", "image", "inspect", "tensorflow/serving"], capture_output=True, timeout=30
    )
    if image.returncode != 0:
        pytest.skip("docker image tensorflow/serving is absent: `docker pull tensorflow/serving`")
    return "docker"


@pytest.mark.slow
def test_real_tf_serving_answers_like_bst_serve(server, model_base, tmp_path):
    kind = _tf_serving()
    rest = _free_port()
    flags = [
        "--enable_batching",
        "--file_system_poll_wait_seconds=1",
    ]
    if kind == "binary":
        config = (REPO / "serving" / "models.config").read_text()
        config = config.replace('"/models/bst"', json.dumps(str(model_base.resolve())))
        (tmp_path / "models.config").write_text(config)
        command = [
            "tensorflow_model_server",
            f"--port={_free_port()}",
            f"--rest_api_port={rest}",
            f"--model_config_file={tmp_path / 'models.config'}",
            f"--batching_parameters_file={REPO / 'serving' / 'batching.config'}",
            f"--monitoring_config_file={REPO / 'serving' / 'monitoring.config'}",
            *flags,
        ]
        stop = None
    else:
        name = f"bst-test-{os.getpid()}"
        command = [
            "docker", "run", "--rm", "--name", name, "-p", f"127.0.0.1:{rest}:8501",
            "-v", f"{model_base.resolve()}:/models/bst:ro", "-v", f"{REPO / 'serving'}:/config:ro",
            "tensorflow/serving", "--model_config_file=/config/models.config",
            "--batching_parameters_file=/config/batching.config",
            "--monitoring_config_file=/config/monitoring.config", *flags,
        ]  # fmt: skip
        stop = ["docker", "stop", name]
    log = (tmp_path / "tf_serving.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{rest}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "tf_serving.log").read_text()[-3000:]
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                status, body = call(url, "/v1/models/bst")
                if status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            assert time.monotonic() < deadline, "TF Serving did not load the model in 120 s"
            time.sleep(0.5)

        requests = [
            ("/v1/models/bst:predict",
             {"instances": [{"history": ["", "10", "9"], **PROFILE},
                            {"history": ["", "", "1"], **PROFILE, "gender": "F"}]}),
            ("/v1/models/bst:predict",
             {"inputs": {"history": [["10", "9"]], "gender": ["F"], "age": [""],
                         "occupation": [""], "zip": [""]}}),
            ("/v1/models/bst:predict",
             {"signature_name": "score", "instances": [{"history": ["1"], "candidates": ["3", "x"]}]}),
            ("/v1/models/bst:predict",
             {"signature_name": "score", "inputs": {"history": [["1"]], "candidates": [["10"]]}}),
            ("/v1/models/bst/versions/1", None),
        ]  # fmt: skip
        for path, body in requests:
            assert call(url, path, body) == call(server.url, path, body), path
        errors = [
            ("/v1/models/bst:predict", {"instances": [{"history": ["1", "2"], **PROFILE},
                                                      {"history": ["3"], **PROFILE}]}),
            ("/v1/models/bst:predict", {"instances": [{"history": [1], **PROFILE}]}),
            ("/v1/models/bst:predict", b"{not json"),
            ("/v1/models/bst/versions/7:predict", {"instances": [{"history": ["1"], **PROFILE}]}),
            ("/v1/models/nope:predict", {"instances": [{"history": ["1"], **PROFILE}]}),
            ("/v1/models/bst:predict", {"signature_name": "nope", "instances": [{"history": ["1"]}]}),
        ]  # fmt: skip
        for path, body in errors:
            theirs, ours = call(url, path, body), call(server.url, path, body)
            assert theirs[0] == ours[0] and "error" in theirs[1], (path, theirs, ours)
        ours = call(server.url, "/v1/models/bst/metadata")[1]
        theirs = call(url, "/v1/models/bst/metadata")[1]
        assert theirs["model_spec"] == ours["model_spec"]
        for name in ("serving_default", "score"):
            sigs = [m["metadata"]["signature_def"]["signature_def"][name] for m in (theirs, ours)]
            for key in ("inputs", "outputs", "method_name"):
                assert sigs[0][key] == sigs[1][key], (name, key)
        # Concurrent histories of different lengths, batched and padded by TF Serving.
        histories = [MOVIE_IDS[:n] for n in range(8)] * 4
        with BSTClient(url) as client, ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda h: client.recommend([h])[0], histories))
        assert got == [expected_top(h) for h in histories]
        metrics = call(url, "/monitoring/prometheus/metrics", parse=False)
        assert metrics[0] == 200 and ":tensorflow:serving:" in metrics[1]
    finally:
        if stop:
            subprocess.run(stop, capture_output=True, timeout=60)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
