"""The exported SavedModel: versions, atomic writes, signatures, parity with the in-memory model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bst import export as export_cli
from bst import features as F
from bst.model import load_run
from tests.conftest import served_and_expected_top_k

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved") / "bst"
    first = export_cli.main(
        ["--run-dir", str(trained_run), "--model-dir", str(base), "--top-k", "5"]
    )
    return base, first


@pytest.fixture(scope="module")
def run(trained_run):
    """(config, model, prepared) of the trained run, loaded once for the module."""
    return load_run(trained_run)


@pytest.fixture(scope="module")
def loaded(exported):
    """The first exported version, loaded once for the module."""
    return tf.saved_model.load(str(exported[1]))


def test_versions_increase_and_nothing_half_written(exported, trained_run, capsys):
    base, first = exported
    assert first == base / "1"
    # the same weights again: no copy, unless --force
    again = export_cli.main(
        ["--run-dir", str(trained_run), "--model-dir", str(base), "--top-k", "5"]
    )
    assert again == first and "nothing written" in capsys.readouterr().out
    assert sorted(p.name for p in base.iterdir()) == ["1"]
    second = export_cli.main(
        ["--run-dir", str(trained_run), "--model-dir", str(base), "--top-k", "5", "--force"]
    )
    assert second == base / "2"
    # no temporary folders (or their owner files) left
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert (first / "assets.extra" / "tf_serving_warmup_requests").is_file()
    shutil.rmtree(second)


def test_origin_record_names_run_catalog_and_weights(exported, trained_run):
    from bst.data.prepared import Prepared
    from bst.model import weights_digest
    from bst.versions import read_origin

    _, first = exported
    origin = read_origin(first)
    cfg, model, prepared = load_run(trained_run)
    assert origin["run_dir"] == str(trained_run.resolve()) and origin["preset"] == "tiny"
    assert origin["synthetic"] is True and origin["k"] == 5
    assert origin["catalog_sha256"] == Prepared.open(cfg.data.prepared_dir).catalog_fingerprint
    assert origin["weights_sha256"] == weights_digest(model)


def test_stale_export_temporaries_of_dead_processes_are_removed(exported, trained_run, tmp_path):
    import json as json_
    import socket

    base = tmp_path / "bst"
    base.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname()
    for name, owner in (
        (".export-dead", {"host": host, "pid": int(dead)}),
        (".export-alive", {"host": host, "pid": os.getpid()}),
        (".export-other-host", {"host": "elsewhere", "pid": int(dead)}),
    ):
        (base / name / "model").mkdir(parents=True)
        (base / f"{name}.owner").write_text(json_.dumps(owner))
    (base / ".export-no-owner").mkdir()  # not provably ours: kept
    export_cli.export(trained_run, base, k=5)
    assert sorted(p.name for p in base.iterdir()) == [
        ".export-alive",
        ".export-alive.owner",
        ".export-no-owner",
        ".export-other-host",
        ".export-other-host.owner",
        "1",
    ]


def test_same_top_k_as_the_in_memory_model(run, loaded):
    cfg, model, prepared = run
    histories, got, expected = served_and_expected_top_k(cfg, model, prepared, loaded)
    assert (got == expected).mean() > 0.95  # float ties may swap neighbours
    assert (got[:, 0] == expected[:, 0]).all()
    assert not (set(histories[0]) - {""}) & set(got[0])


def test_signature_contract_with_saved_model_cli(exported):
    _, first = exported
    beside = Path(sys.executable).parent / "saved_model_cli"
    cli = str(beside) if beside.is_file() else shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not on PATH")
    text = subprocess.run(
        [cli, "show", "--all", "--dir", str(first)], capture_output=True, text=True, check=True
    ).stdout
    for name in ("serving_default", "score", "with_profile"):
        assert f"signature_def['{name}']" in text
    block = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['history']" in block and "DT_STRING" in block
    for output in ("movie_ids", "titles", "scores"):
        assert f"outputs['{output}']" in block
    score = text.split("signature_def['score']")[1].split("signature_def[")[0]
    assert "inputs['candidates']" in score and "inputs['history']" in score


def test_padding_unknown_ids_and_score(run, loaded):
    _, _, prepared = run
    vocab = prepared.vocabs[F.MOVIE_ID]
    serve = loaded.signatures["serving_default"]
    a = serve(history=tf.constant([[vocab[0], vocab[1]]]))["movie_ids"].numpy()
    b = serve(history=tf.constant([["", vocab[0], "nope", "", vocab[1], ""]]))["movie_ids"].numpy()
    np.testing.assert_array_equal(a, b)  # "" pads anywhere and unknown ids are ignored
    empty = serve(history=tf.constant([["", ""]]))["movie_ids"].numpy()
    assert empty.shape == (1, 5)
    scores = loaded.signatures["score"](
        history=tf.constant([[vocab[0]]]), candidates=tf.constant([[vocab[2], "nope"]])
    )["scores"].numpy()
    assert scores[0, 1] == export_cli.UNKNOWN_SCORE and scores[0, 0] > export_cli.UNKNOWN_SCORE
    profile = loaded.signatures["with_profile"](
        history=tf.constant([[vocab[0]]]),
        gender=tf.constant(["F"]),
        age=tf.constant(["25"]),
        occupation=tf.constant([""]),
        zip=tf.constant(["94110"]),
    )
    assert profile["movie_ids"].shape == (1, 5)


def test_padding_and_batch_company_do_not_change_scores(run, loaded):
    """The servable reads only the columns some row needs: a history padded far past
    max_len, or batched with shorter ones, scores as it does alone."""
    cfg, _, prepared = run
    vocab = prepared.vocabs[F.MOVIE_ID]
    score = loaded.signatures["score"]
    long = list(vocab[: cfg.model.max_len + 3])  # longer than max_len: the newest count
    short = [vocab[4], vocab[7]]
    candidates = tf.constant([vocab[:6]] * 2)

    def scores(rows):
        width = max(len(r) for r in rows)
        padded = [[""] * (width - len(r)) + list(r) for r in rows]
        return score(history=tf.constant(padded), candidates=candidates[: len(rows)])[
            "scores"
        ].numpy()

    alone = [scores([long])[0], scores([short])[0]]
    np.testing.assert_allclose(scores([[""] * 40 + short])[0], alone[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores([long, short]), np.stack(alone), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores([long[-cfg.model.max_len :]])[0], alone[0], atol=1e-5)
    assert not np.allclose(alone[0], alone[1])


def test_missing_run_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        export_cli.main(["--run-dir", str(tmp_path), "--model-dir", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "config.json not found" in capsys.readouterr().err


def test_a_profile_is_tokenized_the_same_on_all_three_paths(run, trained_run, tmp_path):
    """prepare (the TFRecords), bst.recommend (in process) and the servable map a person's
    raw profile to the same indices, zip prefix and "no gender, no profile" included."""
    from bst.data import records
    from bst.recommend import InProcess

    cfg, model, prepared = run
    module = export_cli.ExportModule(model, prepared, cfg.model.max_len, k=3)
    in_process = InProcess(trained_run)
    users = prepared.users.head(6)
    profiles = [{n: str(row[n]) for n in F.PROFILE_FEATURES} for _, row in users.iterrows()] + [
        {"gender": "", "age": "25", "occupation": "4", "zip": "94110"},  # no gender
        {"gender": "F", "age": "", "occupation": "4", "zip": ""},  # empty values
        {"gender": "M", "age": "35", "occupation": "7", "zip": " 12345-6789 "},
    ]
    # 1. prepare: the profile fields of each user's training record
    written = {}
    for raw in tf.data.TFRecordDataset(prepared.shards("train")):
        ex = records.parse(raw)
        uid = ex[F.USER_ID].numpy().decode()
        written[uid] = {n: ex[n].numpy().decode() for n in F.PROFILE_FEATURES}
    lookups = {n: export_cli._lookup(prepared.vocabs[n], n) for n in F.PROFILE_FEATURES}
    for uid, profile in zip(users["user_id"], profiles, strict=False):
        tokens = {
            n: v[0].numpy().decode()
            for n, v in records.profile_tokens(
                *[tf.constant([profile[n]]) for n in F.PROFILE_FEATURES]
            ).items()
        }
        assert written[str(uid)] == tokens
    for profile in profiles:
        # 2. bst.recommend, in process
        got = {n: int(v) for n, v in in_process.profile_features(profile).items()}
        # 3. the servable's with_profile path
        values = {n: tf.constant([profile[n]]) for n in F.PROFILE_FEATURES}
        served = {n: int(v[0]) for n, v in module._profile(1, values).items()}
        assert got == served, profile
        tokens = records.profile_tokens(*values.values())
        expected = {n: int(lookups[n](tokens[n])[0]) for n in F.PROFILE_FEATURES}
        assert got == expected, profile
    no_gender = records.profile_tokens(
        *[tf.constant([profiles[-3][n]]) for n in F.PROFILE_FEATURES]
    )
    assert [no_gender[n][0].numpy().decode() for n in F.PROFILE_FEATURES] == ["?", "?", "?", "941"]
    long_zip = records.profile_tokens(*[tf.constant([profiles[-1][n]]) for n in F.PROFILE_FEATURES])
    assert long_zip[F.ZIP][0].numpy().decode() == "123"
