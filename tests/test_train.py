"""python -m bst.train end to end on the tiny preset: outputs, TensorBoard, resume after SIGKILL,
two-worker MultiWorkerMirroredStrategy."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bst import config
from bst import train as train_cli
from bst.metrics import load_eval_data
from bst.model import load_run
from bst.scoring import rank_metrics
from tests.conftest import REPO, brute_force_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(trained_run) -> tuple[Path, dict]:
    return trained_run, json.loads((trained_run / "metrics.json").read_text())


def test_outputs(tiny_run):
    """metrics.json holds what the saved weights score, the baselines as fitted alone, the
    config that ran, and the report shows the same numbers."""
    run_dir, result = tiny_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"] == "tiny" and Path(config["data"]["prepared_dir"]).is_dir()
    cfg, model, prepared = load_run(run_dir)  # config.json and model.weights.h5 load back
    assert train_cli.weights_digest(model) == result["weights_sha256"]
    test_data = load_eval_data(prepared, "test")
    again = rank_metrics(model, cfg, "test", test_data)
    for key in ("hr@1", "hr@10", "ndcg@10", "ndcg@20", "mrr", "coverage@10", "users"):
        assert result["test"][key] == pytest.approx(again[key], abs=1e-6), key
    # popularity by hand: training-event counts, ranked by brute force
    counts = Counter(int(i) for s in prepared.sequences.train() for i in s if i >= 2)
    row = [counts.get(i, 0) for i in range(test_data.num_items)]
    popularity = brute_force_metrics(
        [row] * len(test_data.targets), test_data.histories, test_data.targets
    )
    for key in ("hr@10", "ndcg@10", "mrr"):
        assert result["baselines"]["popularity"][key] == pytest.approx(popularity[key]), key
    assert 1 <= result["epochs"] <= cfg.train.epochs and result["train_seconds"] > 0
    assert result["machine"]["logical_cpus"] >= 1 and result["machine"]["tensorflow"]
    assert result["validation"]["best_epoch"] <= result["epochs"]
    report = (run_dir / "report.md").read_text()
    assert f"| BST | {result['test']['hr@1']:.4f} | {result['test']['hr@5']:.4f} |" in report
    assert Path(result["exported"]) == run_dir / "saved" / "1"
    assert (run_dir / "saved" / "1" / "saved_model.pb").is_file()


def test_with_a_moving_average_the_saved_weights_are_the_best_validated_ones(tmp_path):
    """train.ema: validation ranks the average; what is saved and tested is the best
    epoch's average, scoring on validation what that epoch's line said."""
    cfg = config.replace(
        config.tiny(), {"train.ema": 0.9, "train.epochs": 4, "train.patience": 100}
    )
    result = train_cli.train(cfg, tmp_path / "run")
    cfg, model, prepared = load_run(tmp_path / "run")
    again = rank_metrics(model, cfg, "validation", load_eval_data(prepared, "validation"))
    best = result["validation"]
    assert again["ndcg@10"] == pytest.approx(best["best_ndcg@10"], abs=1e-6)
    row = result["history"][best["best_epoch"] - 1]
    assert row["val_ndcg@10"] == pytest.approx(again["ndcg@10"], abs=1e-6)


def test_beats_popularity_on_planted_structure(tiny_run):
    """The synthetic users mostly walk a ring of movies: order carries the answer, so even
    the 3-epoch tiny model must leave popularity far behind on the test split."""
    _, result = tiny_run
    model, popular = result["test"], result["baselines"]["popularity"]
    assert model["users"] == popular["users"] > 0
    assert model["ndcg@10"] >= popular["ndcg@10"] + 0.15, (model, popular)
    assert model["ndcg@10"] >= 1.5 * popular["ndcg@10"], (model, popular)
    assert model["hr@10"] > popular["hr@10"], (model, popular)


def scalars(logdir: Path) -> dict[str, list[float]]:
    import tensorflow as tf

    out: dict[str, list[float]] = {}
    for path in logdir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name in ("scalars", ""):
                    number = (
                        tf.make_ndarray(value.tensor)
                        if value.HasField("tensor")
                        else value.simple_value
                    )
                    out.setdefault(value.tag, []).append(float(number))
    return out


def tensorboard_steps(logdir: Path, tag: str) -> dict[int, float]:
    """``{step: value}`` of one scalar tag in ``logdir``'s event files."""
    import tensorflow as tf

    out = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    out[int(event.step)] = float(tf.make_ndarray(value.tensor))
    return out


def test_tensorboard_events(tiny_run):
    run_dir, result = tiny_run
    values = scalars(run_dir / "logs")
    for tag in (
        "train/loss",
        "train/learning_rate",
        "validation/hr@10",
        "validation/ndcg@10",
        "test/ndcg@10",
    ):
        assert tag in values, sorted(values)
        assert all(math.isfinite(v) for v in values[tag])
    assert len(values["validation/ndcg@10"]) == result["epochs"]
    tags = set()
    import tensorflow as tf

    for path in (run_dir / "logs").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.metadata.plugin_data.plugin_name for v in event.summary.value)
    assert "hparams" in tags
    projector = run_dir / "logs" / "projector"
    assert (projector / "projector_config.pbtxt").is_file()
    lines = (projector / "metadata.tsv").read_text().splitlines()
    assert lines[0] == "title\tmovie_id" and lines[1].split("\t")[0].startswith(
        ("Synthetic", "Movie", "Cit")
    )


def test_bad_override_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(
            [
                "--preset",
                "tiny",
                "--run-dir",
                str(tmp_path),
                "--set",
                "model.blocks=2",
                "--no-export",
            ]
        )
    assert exit_.value.code == 2
    assert "unknown config key 'model.blocks'" in capsys.readouterr().err


def command(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bst.train",
        "--preset",
        "tiny",
        "--run-dir",
        str(run_dir),
        "--no-export",
        *extra,
    ]


def cosine_rate(step: int, total: int, peak: float, low: float) -> float:
    """The learning rate of step number ``step`` (from 1) by hand: a linear warm-up over
    5 % of ``total`` (at least 1 step, at most 500), then a cosine from ``peak`` down to
    ``low * peak`` at step ``total``."""
    warmup = min(max(round(0.05 * total), 1), 500)
    if step <= warmup:
        return peak * step / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_resumes_after_sigkill(tmp_path):
    run_dir = tmp_path / "run"
    args = command(run_dir, "--set", "train.epochs=6", "--set", "train.patience=100")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.time() + 240
        while "epoch 2: state backed up" not in log_path.read_text() and time.time() < deadline:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = log_path.read_text()
    assert "epoch 2: state backed up" in first and "epoch 6:" not in first
    second = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    epochs = [
        int(line.split("epoch ")[1].split(":")[0])
        for line in second.stderr.splitlines()
        if " epoch " in line and "val HR@10" in line
    ]
    done = max(
        int(line.split("epoch ")[1].split(":")[0])
        for line in first.splitlines()
        if "backed up" in line
    )
    # resumed, not restarted: from the epoch after the last logged backup, or one later
    # when the kill landed after an epoch's backup was written but before its log line
    assert epochs and epochs[0] in (done + 1, done + 2), (done, epochs)
    assert epochs[-1] == 6
    result = json.loads((run_dir / "metrics.json").read_text())
    # the resumed model learnt the planted order (a restart from scratch in epoch 3 or a
    # state lost in the resume would not leave popularity this far behind)
    popular = result["baselines"]["popularity"]["ndcg@10"]
    assert result["test"]["ndcg@10"] > popular + 0.1, (result["test"], popular)
    # the schedule resumed at the right step: every epoch's learning rate (before and
    # after the kill) is the one an uninterrupted run's schedule gives at that step
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    steps = history[0]["step"]
    assert [row["step"] for row in history] == [steps * e for e in range(1, 7)]
    assert result["planned_steps"] == 6 * steps
    cfg = config.load(run_dir / "config.json").train
    for row in history:
        expected = cosine_rate(row["step"], 6 * steps, cfg.learning_rate, cfg.final_lr_fraction)
        assert row["learning_rate"] == pytest.approx(expected, rel=1e-5), row


class StepTime:
    """A run's time source that moves only with training steps: 1 s a step in the first
    two epochs, 1.25 s from the third on (so the plan changes mid-run), and validation
    takes no time; the plan and the budget then do not depend on how fast the machine
    is. ``plans[epoch]`` is the plan an epoch began with. With ``kill_at``, the run dies
    (as under SIGKILL, without its end-of-training steps) after that many steps in this
    process."""

    def __init__(self, kill_at: int | None = None):
        import tensorflow as tf

        owner = self

        class Tick(tf.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                owner.epoch = epoch
                owner.plans[epoch + 1] = int(self.model.planned_steps.numpy())

            def on_train_batch_end(self, batch, logs=None):
                owner.t += 1.0 if owner.epoch < 2 else 1.25
                owner.steps += 1
                if owner.kill_at is not None and owner.steps >= owner.kill_at:
                    raise Killed

        self.t, self.steps, self.epoch, self.kill_at = 0.0, 0, 0, kill_at
        self.plans: dict[int, int] = {}
        self.callback = Tick()

    def __call__(self) -> float:
        return self.t


class Killed(Exception):
    pass


def _budgeted(tmp_path, name, minutes, **changes):
    cfg = config.replace(
        config.tiny(),
        {
            "train.epochs": 12,
            "train.patience": 100,
            "train.max_minutes": minutes,
            "train.steps_per_epoch": 8,
            "data.prepared_dir": str(tmp_path / "prepared"),  # prepared once, shared
            **changes,
        },
    )
    return cfg, tmp_path / name


def _run(cfg, run_dir, kill_at=None, **kwargs):
    clock = StepTime(kill_at)
    try:
        result = train_cli.train(
            cfg, run_dir, now=clock, extra_callbacks=[clock.callback], **kwargs
        )
    finally:
        _run.plans = clock.plans
    return result


def test_a_budgeted_run_killed_mid_epoch_resumes_on_the_same_plan_and_stops_as_if_whole(
    tmp_path,
):
    """train.max_minutes is the whole run's: killed in its 4th epoch and run again, a run
    has only the rest of its budget, each epoch begins with the uninterrupted run's plan
    (the backup holds the plan its epoch ended with), each epoch's learning rate is the
    uninterrupted run's, and it stops after the same epoch."""
    steps = 8  # train.steps_per_epoch
    cfg, whole_dir = _budgeted(tmp_path, "whole", 1.0)  # 60 s: 6 epochs of 8 then 10 s
    whole = _run(cfg, whole_dir)
    whole_plans = _run.plans
    assert whole["history"][0]["step"] == steps
    assert whole["stopped_by"] == "time budget" and whole["epochs"] == 6
    assert whole_plans[1] != whole_plans[6]  # the plan changed as the epochs slowed

    cfg, run_dir = _budgeted(tmp_path, "resumed", 1.0)
    with pytest.raises(Killed):
        _run(cfg, run_dir, kill_at=3 * steps + 3)  # 3 steps into epoch 4
    assert _run.plans == {e: whole_plans[e] for e in (1, 2, 3, 4)}
    killed = json.loads((run_dir / "backup" / "config.json").read_text())
    assert killed == json.loads(cfg.to_json())  # the backup says which config it belongs to
    assert [row["epoch"] for row in train_cli.read_history(run_dir / "history.jsonl")] == [1, 2, 3]
    resumed = _run(cfg, run_dir)
    assert _run.plans == {e: whole_plans[e] for e in range(4, 7)}  # restored, not re-planned

    # the best epoch is the whole run's best, not only the resumed process's
    values = [row["val_ndcg@10"] for row in resumed["history"]]
    assert resumed["validation"]["best_ndcg@10"] == pytest.approx(max(values))
    assert resumed["validation"]["best_epoch"] == 1 + values.index(max(values))
    assert resumed["epochs"] == whole["epochs"] and resumed["stopped_by"] == "time budget"
    assert resumed["planned_steps"] == whole["planned_steps"]
    assert resumed["train_seconds"] == whole["train_seconds"]  # one clock over both processes
    for a, b in zip(whole["history"], resumed["history"], strict=True):
        assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
        assert a["elapsed_seconds"] == b["elapsed_seconds"], (a, b)
        assert a["learning_rate"] == pytest.approx(b["learning_rate"], rel=1e-6), (a, b)
    # TensorBoard's train/learning_rate at a step is the rate history.jsonl gives for
    # the epoch that ended with that step (step 40 ends epoch 5)
    logged = tensorboard_steps(run_dir / "logs" / "train", "train/learning_rate")
    assert logged[40] == pytest.approx(resumed["history"][4]["learning_rate"], rel=1e-6)
    # after the warm-up the learning rate only fell: it never jumped back up on resume
    rates = [row["learning_rate"] for row in resumed["history"]]
    assert all(later <= earlier for earlier, later in zip(rates[1:-1], rates[2:], strict=True)), (
        rates
    )


def test_a_stopped_run_under_another_config_is_refused_and_fresh_starts_afresh(tmp_path):
    cfg, run_dir = _budgeted(tmp_path, "run", 0.0)
    with pytest.raises(Killed):
        _run(cfg, run_dir, kill_at=10)
    other = config.replace(cfg, {"train.learning_rate": 1e-3, "model.dim": 32})
    with pytest.raises(train_cli.UsageError) as refused:
        _run(other, run_dir)
    message = str(refused.value)
    assert "model.dim 16 -> 32" in message and "train.learning_rate 0.005 -> 0.001" in message
    assert "--fresh" in message and "--run-dir" in message and "\n" not in message
    assert (run_dir / "backup").is_dir()  # nothing lost: the same command still resumes
    result = _run(other, run_dir, fresh=True)
    assert [row["epoch"] for row in result["history"]] == list(range(1, result["epochs"] + 1))
    assert json.loads((run_dir / "config.json").read_text())["model"]["dim"] == 32


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_identical_weights(tmp_path):
    run_dir = tmp_path / "mw"
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        out = open(tmp_path / f"worker{index}.log", "w")
        procs.append(
            (
                subprocess.Popen(
                    command(run_dir, "--set", "train.epochs=2"),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                    env=env,
                ),
                out,
            )
        )
    for proc, out in procs:
        try:
            proc.wait(timeout=400)
        finally:
            out.close()
            if proc.poll() is None:
                proc.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], [text[-2000:] for text in logs]
    chief = json.loads((run_dir / "metrics.json").read_text())
    other = json.loads((run_dir / "workers" / "worker-1.json").read_text())
    assert chief["strategy"] == "MultiWorkerMirroredStrategy" and chief["replicas"] == 2
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert chief["test"] == other["test"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--preset", "tiny", "--run-dir", "runs/demo"], "runs/demo/saved_models/bst"),
        (["--preset", "ml1m", "--run-dir", "runs/x"], "saved_models/bst"),
        (["--preset", "tiny", "--model-dir", "elsewhere"], "elsewhere"),
        (["--preset", "tiny", "--no-export"], ""),
        # the former spellings still work
        (["--preset", "tiny", "--export-dir", "elsewhere"], "elsewhere"),
        (["--preset", "tiny", "--export-dir", ""], ""),
    ],
)
def test_a_synthetic_demo_never_exports_over_the_real_model(monkeypatch, argv, expected):
    seen = {}
    monkeypatch.setattr(
        train_cli,
        "train",
        lambda cfg, run_dir, tpu, export_dir, fresh: seen.update(export_dir=export_dir),
    )
    train_cli.main(argv)
    assert seen["export_dir"] == expected


def test_projector_appears_under_the_parent_of_the_run_folders(trained_run):
    """`tensorboard --logdir runs/` (the README's command) lists the run's projector."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client

    root = str(trained_run.parent)  # the folder holding the run folders, like runs/
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(root)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, root)
    plugin = ProjectorPlugin(
        base_plugin.TBContext(logdir=root, data_provider=provider, multiplexer=mux)
    )
    client = Client(plugin.get_plugin_apps()["/runs"])
    runs = json.loads(client.get("/runs").get_data())
    assert f"{trained_run.name}/logs/projector" in runs, runs


def test_a_budget_shorter_than_one_epoch_ends_at_a_step_with_validated_weights(tmp_path):
    """An epoch of 40 steps of 1 s under a 15 s budget: the plan is the 15 steps that fit
    (not the epoch), the run stops at step 15, that part of the epoch is validated and its
    weights are the ones saved, and the learning rate has decayed to the end of its plan."""
    cfg, run_dir = _budgeted(tmp_path, "short", 0.25, **{"train.steps_per_epoch": 40})
    result = _run(cfg, run_dir)
    assert result["stopped_by"] == "time budget"
    assert result["stopped_at_step"] == 15 and result["steps"] == 15
    assert result["planned_steps"] == 15
    (row,) = result["history"]  # the one, partial epoch was validated
    assert row["step"] == 15 and row["val_ndcg@10"] > 0
    assert result["validation"]["best_epoch"] == 1
    saved = config.load(run_dir / "config.json").train
    assert row["learning_rate"] == pytest.approx(
        cosine_rate(15, 15, saved.learning_rate, saved.final_lr_fraction), rel=1e-5
    )


def test_a_long_pass_is_validated_in_parts_and_epochs_still_count_passes():
    """train.steps_per_epoch=-1: a pass of up to 500 steps is one epoch (ML-1M's 60:
    unchanged); a longer one is cut into equal parts, train.epochs multiplied so it
    still counts passes; 0 is the pass however long; N is kept."""
    from bst.optim import MAX_EPOCH_STEPS

    cfg = config.replace(config.ml1m(), {"train.batch_size": 128})
    same = train_cli.resolve_epochs(cfg, 7_700)  # ML-1M's windows: 61 steps
    assert (same.train.steps_per_epoch, same.train.epochs) == (61, cfg.train.epochs)
    long = train_cli.resolve_epochs(cfg, 1_700 * 128)  # a pass of 1,700 steps
    assert long.train.steps_per_epoch == 425 <= MAX_EPOCH_STEPS
    assert long.train.epochs == 4 * cfg.train.epochs
    whole = config.replace(cfg, {"train.steps_per_epoch": 0})
    assert train_cli.resolve_epochs(whole, 1_700 * 128).train.steps_per_epoch == 1_700
    given = config.replace(cfg, {"train.steps_per_epoch": 30})
    assert train_cli.resolve_epochs(given, 1_700 * 128) == given
