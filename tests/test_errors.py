"""User mistakes end in one line and exit 2 (Ctrl-C in exit 130), never a traceback, and
lose nothing already written: one test per class of mistake, across the CLIs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bst import config, serve
from bst import evaluate as ev
from bst import recommend as rec
from bst import train as train_cli
from bst.data import download as dl
from bst.data.movielens import load_movielens, read_ratings
from bst.errors import DataError, UsageError, cli_errors, writable_dir
from pipelines import prepare as prepare_cli
from tests.conftest import write_dat

REPO = Path(__file__).resolve().parents[1]
MOVIES = ["1::Toy Story (1995)::Animation", "2::Heat (1995)::Action"]
USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---------------------------------------------------------------- integers and timestamps


@pytest.mark.parametrize(
    "line, message",
    [
        ("1::1::5::1e30", "line 2: expected an integer Timestamp, got '1e30'"),
        ("12345678901234567890::1::5::978300760", "at most 18 digits (int64)"),
        ("1::-4::5::978300760", "line 2: expected a non-negative integer MovieID, got '-4'"),
        ("1::1::5::99999999999", "line 2: expected a Timestamp (Unix seconds up to 2100-01-01)"),
        ("1::1::5::-1", "line 2: expected a non-negative integer Timestamp, got '-1'"),
        ("1::1::5::2.5", "line 2: expected an integer Timestamp, got '2.5'"),
    ],
)
def test_out_of_range_integers_name_file_line_and_value(tmp_path, line, message):
    path = write_dat(tmp_path, "ratings.dat", ["1::2::3::978302109", line])
    with pytest.raises(DataError) as err:
        read_ratings(path)
    assert str(err.value).startswith("ratings.dat line 2: ") and message in str(err.value)


def test_large_but_valid_values_keep_their_exact_value(tmp_path):
    path = write_dat(tmp_path, "ratings.dat", ["999999999999999999::2::3::4102444800"])
    out = read_ratings(path)
    assert out["user_id"].tolist() == [999999999999999999]
    assert out["timestamp"].tolist() == [4102444800]


# ---------------------------------------------------------------- the data folder


@pytest.mark.parametrize("nested", [False, True])
def test_partial_data_folder_names_the_missing_file_and_never_downloads(
    tmp_path, monkeypatch, nested
):
    folder = tmp_path / "data"
    files = folder / "ml-1m" if nested else folder
    write_dat(files, "users.dat", USERS)
    write_dat(files, "ratings.dat", ["1::1::5::978300760"])

    def no_download(*args, **kwargs):
        raise AssertionError("must not download over a user's own files")

    monkeypatch.setattr(dl, "download", no_download)
    for call in (dl.ensure_movielens, load_movielens):
        with pytest.raises(DataError) as err:
            call(folder)
        assert f"movies.dat is missing in {files}" in str(err.value)
        assert "found users.dat, ratings.dat" in str(err.value) or "found ratings.dat" in str(
            err.value
        )


def test_zip_over_the_size_limit_is_refused_before_writing(tmp_path):
    import zipfile

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-1m/ratings.dat", b"0" * 200_000)
    with pytest.raises(DataError) as err:
        dl.safe_extract(archive, tmp_path / "out", max_bytes=100_000)
    # 200,000 bytes against a 100,000-byte limit, in units a person can read
    assert (
        "refusing to extract: it unpacks to 195 KiB (largest member 'ml-1m/ratings.dat', "
        "195 KiB), 97.7 KiB over the 97.7 KiB limit"
    ) in str(err.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- train flags and config


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--set", "train.batch_size=0"], "train.batch_size must be >= 1 or -1 (auto), got 0"),
        (["--set", "model.max_len=0"], "model.max_len must be in [1, 100000], got 0"),
        (["--set", "train.learning_rate=-1"], "train.learning_rate must be in (0, 10], got -1.0"),
        (["--set", "train.learning_rate=nan"], "train.learning_rate must be in (0, 10], got nan"),
        (["--set", "model.dropout=1"], "model.dropout must be in [0, 1), got 1.0"),
        (["--set", "train.max_minutes=-5"], "train.max_minutes must be >= 0"),
        (["--set", "model.num_heads=3"], "model.num_heads (3) must divide model.dim (16)"),
        (["--set", "train.schedule=step"], "train.schedule must be one of cosine, linear"),
        (["--data-dir", "elsewhere"], "--data-dir elsewhere: the tiny preset trains on synthetic"),
        (["--format", "sasrec"], "--format sasrec: the tiny preset trains on synthetic"),
        (["--set", "data.data_dir=elsewhere"], "data.data_dir='elsewhere' is set but"),
        (
            [
                *("--set", "model.loss=sampled", "--set", "model.negatives=in-batch"),
                *("--set", "model.mask_seen=true"),
            ],
            "model.mask_seen=true does not apply to model.negatives=in-batch",
        ),
        (["--set", "model.negatives=popular"], "model.negatives must be one of shared, in-batch"),
        (
            [
                *("--set", "data.synthetic=false", "--format", "sasrec"),
                *("--set", "model.rating_head=true"),
            ],
            "model.rating_head=true with data.format=sasrec: the SasRec file has no ratings",
        ),
    ],
)
def test_train_refuses_impossible_values_before_writing_anything(tmp_path, capsys, flags, message):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["--preset", "tiny", "--run-dir", str(run_dir), "--no-export", *flags])
    assert exit_.value.code == 2
    assert message in one_error_line(capsys)
    assert not run_dir.exists()  # nothing written, config.json least of all


def test_validate_accepts_every_preset():
    assert len(config.PRESETS) == 3  # tiny, ml1m, ml1m-long
    for name in config.PRESETS:
        assert config.validate(config.preset(name)) == config.preset(name)


@pytest.mark.parametrize("where", ["file", "under a file", "in /proc"])
def test_run_dir_that_cannot_be_a_folder(tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me\n")
    run_dir = {"file": blocker, "under a file": blocker / "run", "in /proc": "/proc/bst-run"}[where]
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["--preset", "tiny", "--run-dir", str(run_dir), "--no-export"])
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert "run folder" in line and str(run_dir) in line
    assert blocker.read_text() == "keep me\n"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="cannot write into run folder"):
            writable_dir(folder, "run folder")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_prepare_out_that_cannot_be_a_folder(tmp_path, capsys, synthetic_dir, where):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me\n")
    out = blocker if where == "file" else blocker / "prepared"
    with pytest.raises(SystemExit) as exit_:
        prepare_cli.main(["--data-dir", str(synthetic_dir), "--out", str(out)])
    assert exit_.value.code == 2
    assert str(blocker) in one_error_line(capsys)
    assert blocker.read_text() == "keep me\n"


@pytest.mark.parametrize("shards", ["0", "-3", "5000"])
def test_prepare_refuses_impossible_shard_counts_before_writing(
    tmp_path, capsys, synthetic_dir, shards
):
    out = tmp_path / "prepared"
    with pytest.raises(SystemExit) as exit_:
        prepare_cli.main(
            ["--data-dir", str(synthetic_dir), "--out", str(out), "--num-shards", shards]
        )
    assert exit_.value.code == 2
    assert f"--num-shards must be in [1, 4096], got {shards}" in one_error_line(capsys)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_prepare_help_answers_before_tensorflow_starts():
    """`python -m pipelines.prepare --help` in a fresh process: no TensorFlow import."""
    code = (
        "import sys\n"
        "from pipelines import prepare\n"
        "try:\n    prepare.parse(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


# ---------------------------------------------------------------- damaged run folders


@pytest.fixture()
def damaged_run(trained_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    for name in ("config.json", "model.weights.h5"):
        run_dir.mkdir(exist_ok=True)
        shutil.copy(trained_run / name, run_dir / name)
    return run_dir


def _recommend(run_dir):
    return rec.main(["--run-dir", str(run_dir), "--user", "1"])


def _evaluate(run_dir):
    return ev.main(["--run-dir", str(run_dir)])


@pytest.mark.parametrize("command", [_recommend, _evaluate], ids=["recommend", "evaluate"])
@pytest.mark.parametrize("damage", ["truncated weights", "corrupt config", "config not an object"])
def test_damaged_run_folder_is_one_line_naming_the_file(damaged_run, capsys, command, damage):
    if damage == "truncated weights":
        path = damaged_run / "model.weights.h5"
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path = damaged_run / "config.json"
        path.write_text('{"preset": "tiny", "model": {' if damage == "corrupt config" else "[1]")
    with pytest.raises(SystemExit) as exit_:
        command(damaged_run)
    assert exit_.value.code == 2
    assert str(path) in one_error_line(capsys)


def test_config_load_names_the_bad_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"preset": "tiny", "train": {"batch_size": 0}}))
    with pytest.raises(
        UsageError, match=r"config.json: train.batch_size must be >= 1 or -1 \(auto\), got 0"
    ):
        config.load(path)


# ---------------------------------------------------------------- serve flags


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--port", "-1"], "--port must be in 0..65535"),
        (["--max-batch", "0"], "--max-batch must be >= 1"),
        (["--poll-seconds", "nan"], "--poll-seconds must be in 0..86400"),
    ],
)
def test_serve_flag_values(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        serve.main(["--model-dir", str(tmp_path), *flags])
    assert exit_.value.code == 2
    assert message in one_error_line(capsys)


# ---------------------------------------------------------------- Ctrl-C


def test_cli_errors_maps_ctrl_c_to_130(capsys):
    with pytest.raises(SystemExit) as exit_, cli_errors(interrupted="resume with the same command"):
        raise KeyboardInterrupt
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted; resume with the same command"


def _start(args: list[str], log_path: Path, marker: str, seconds: float = 240):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "w")  # noqa: SIM115 - closed by the caller through proc
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
        # A suite started in the background of a non-interactive shell inherits SIGINT
        # ignored, and Python then keeps it ignored: give the child the default, so
        # Ctrl-C reaches it however the suite was started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + seconds
    while marker not in log_path.read_text():
        assert proc.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)
    return proc, log


@pytest.mark.slow
def test_ctrl_c_in_train_is_one_line_exit_130_and_keeps_the_backup(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "bst.train", "--preset", "tiny", "--run-dir", str(run_dir)]
    args += ["--no-export", "--set", "train.epochs=500", "--set", "train.patience=500"]
    proc, log = _start(args, tmp_path / "train.log", "epoch 1: state backed up")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    log.close()
    text = (tmp_path / "train.log").read_text()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == "interrupted; resume with the same command"
    assert (run_dir / "backup").is_dir()  # as after a kill: the same command resumes


@pytest.mark.slow
def test_ctrl_c_in_serve_is_one_line_exit_130(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from servable import write_fake_model

    base = tmp_path / "bst"
    write_fake_model(base, 1, k=3)
    args = [sys.executable, "-m", "bst.serve", "--model-dir", str(base), "--port", "0"]
    proc, log = _start(args, tmp_path / "serve.log", "Ctrl+C stops")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == "interrupted; server stopped"


def test_in_batch_negatives_turn_the_default_mask_seen_off_in_the_saved_config():
    """``model.mask_seen`` (on by default) does not apply to in-batch negatives: the
    resolved config says it is off, instead of claiming a masking that never ran. Shared
    negatives keep it."""
    from bst import cli

    in_batch = ["--set", "model.loss=sampled", "--set", "model.negatives=in-batch"]
    args = cli.parse("train", ["--preset", "tiny", *in_batch])
    assert args.cfg.model.loss == "sampled" and args.cfg.model.mask_seen is False
    shared = cli.parse("train", ["--preset", "tiny", "--set", "model.loss=sampled"]).cfg
    assert shared.model.negatives == "shared" and shared.model.mask_seen is True
    assert cli.parse("train", ["--preset", "tiny"]).cfg.model.mask_seen is True


@pytest.mark.parametrize(
    "size, text",
    [
        (0, "0 bytes"),
        (1, "1 bytes"),
        (1023, "1,023 bytes"),
        (1024, "1.0 KiB"),
        (100_000, "97.7 KiB"),
        (24 * 2**20, "24.0 MiB"),
        (2 << 30, "2.0 GiB"),
        (300 * 2**30, "300 GiB"),
    ],
)
def test_sizes_are_never_rounded_to_zero(size, text):
    assert dl.size_text(size) == text
