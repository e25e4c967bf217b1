"""The exported SavedModel: versions, atomic writes, signatures, parity with the in-memory model."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from bst import export as export_cli
from bst import features as F
from bst.model import load_run, model_inputs
from bst.pipeline import make_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved") / "bst"
    first = export_cli.main(["--run-dir", str(trained_run), "--out", str(base), "--k", "5"])
    return base, first


def test_versions_increase_and_nothing_half_written(exported, trained_run):
    base, first = exported
    assert first == base / "1"
    second = export_cli.export(trained_run, base, k=5)
    assert second == base / "2"
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no temporary folders left
    assert (first / "assets.extra" / "tf_serving_warmup_requests").is_file()
    shutil.rmtree(second)


def test_same_top_k_as_the_in_memory_model(exported, trained_run):
    base, first = exported
    cfg, model, prepared = load_run(trained_run)
    loaded = tf.saved_model.load(str(first))
    vocab = np.array(["", "[UNK]", *prepared.vocabs[F.MOVIE_ID]])
    features, _ = next(iter(make_dataset(cfg, "test", batch_size=12, shuffle=False)))
    ids = features[F.MOVIE_ID].numpy()
    # in memory, with the same "only movie ids" inputs the servable builds
    unknown = np.where(ids > 0, F.UNKNOWN, F.PAD).astype(np.int32)
    inputs = {F.MOVIE_ID: ids, F.TIME_GAP: unknown, F.RATING: unknown}
    inputs.update({n: np.full(len(ids), F.UNKNOWN, np.int32) for n in F.PROFILE_FEATURES})
    scores = model(model_inputs(inputs), training=False)["scores"].numpy()
    scores[:, : F.NUM_RESERVED] = -np.inf
    for row in range(len(ids)):
        scores[row, ids[row][ids[row] > 0]] = -np.inf
    expected = vocab[np.argsort(-scores, axis=1, kind="stable")[:, :5]]
    out = loaded.signatures["serving_default"](history=tf.constant(vocab[ids]))
    got = out["movie_ids"].numpy().astype(str)
    assert (got == expected).mean() > 0.95  # float ties may swap neighbours
    assert (got[:, 0] == expected[:, 0]).all()
    history = set(vocab[ids[0]]) - {""}
    assert not history & set(got[0])


def test_signature_contract_with_saved_model_cli(exported):
    _, first = exported
    import sys
    from pathlib import Path

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


def test_padding_unknown_ids_and_score(exported, trained_run):
    _, first = exported
    _, _, prepared = load_run(trained_run)
    vocab = prepared.vocabs[F.MOVIE_ID]
    loaded = tf.saved_model.load(str(first))
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


def test_padding_and_batch_company_do_not_change_scores(exported, trained_run):
    """The servable reads only the columns some row needs: a history padded far past
    max_len, or batched with shorter ones, scores as it does alone."""
    _, first = exported
    cfg, _, prepared = load_run(trained_run)
    vocab = prepared.vocabs[F.MOVIE_ID]
    score = tf.saved_model.load(str(first)).signatures["score"]
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
        export_cli.main(["--run-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "config.json not found" in capsys.readouterr().err
