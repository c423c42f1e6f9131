"""``jaxgru train / evaluate / predict`` end to end: real runs, kill and resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgru
from jaxgru import checkpoint, experiment
from jaxgru import config as jaxgru_config
from jaxgru.cli import main

TINY = """
name = "tiny"
seed = 3

[data]
kind = "sine"
samples = {samples}
val_samples = 64
test_samples = 64
window = 12

[model]
layers = [
  {{ type = "GRU", units = 6, dropout = 0.1, recurrent_dropout = 0.1 }},
  {{ type = "Dense", units = 1 }},
]

[train]
loss = "mse"
metrics = ["mae"]
optimizer = "adam"
learning_rate = 0.01
batch_size = 32
epochs = {epochs}

[run]
keep_checkpoints = 2
progress_bar = false
"""


def _config(tmp_path: Path, samples=200, epochs=4, name="tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(samples=samples, epochs=epochs))
    return path


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.oracle
def test_train_end_to_end_writes_a_complete_run(tmp_path, capsys):
    import keras

    run = tmp_path / "run"
    code, out, err = _run(["train", _config(tmp_path), "--set", f'run.dir="{run}"'], capsys)
    assert code == 0, err
    assert f"loss curve:    {run / 'loss_curve.png'}" in out
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]
    assert set(lines[0]) == {"epoch", "loss", "mae", "val_loss", "val_mae"}
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in checkpoint.checkpoint_paths(run / "checkpoints")] == [
        "ckpt-000003.npz", "ckpt-000004.npz",
    ]  # fmt: skip
    assert jaxgru_config.load(run / "config.toml")["train"]["epochs"] == 4
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["loss"] < results["baselines"]["last_value_mse"]
    # The exported model is a real Keras file, and Keras computes what jaxgru computes.
    x = np.random.default_rng(0).normal(size=(3, 12, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = _run(["predict", run, tmp_path / "x.npy"], capsys)
    assert code == 0, err
    ours = np.loadtxt(out.splitlines(), delimiter=",").reshape(3, 1)
    theirs = keras.models.load_model(run / "model.keras")(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    code, out, err = _run(["evaluate", run, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["test"]["loss"] == pytest.approx(results["test"]["loss"], rel=1e-6)
    code, out, err = _run(["evaluate", run], capsys)
    assert code == 0, err
    assert {line.split(":")[0] for line in out.splitlines()} == {
        "val loss", "val mae", "test loss", "test mae", "baselines last_value_mse",
    }  # fmt: skip


def test_predict_reads_csv_and_writes_files_atomically(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        _run(["train", _config(tmp_path, epochs=1), "--set", f"run.dir='{run}'"], capsys)[0] == 0
    )
    series = np.sin(np.arange(12) / 2.0)[:, None]
    np.savetxt(tmp_path / "x.csv", series, delimiter=",", header="value", comments="")
    np.save(tmp_path / "x.npy", series.astype(np.float32))
    for output in ("y.csv", "y.npy"):
        code, _, err = _run(["predict", run, tmp_path / "x.csv", "--output", tmp_path / output],
                            capsys)  # fmt: skip
        assert code == 0, err
    from_npy = experiment.predict_run(run, tmp_path / "x.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), from_npy, rtol=1e-6)
    assert np.loadtxt(tmp_path / "y.csv", delimiter=",") == pytest.approx(float(from_npy[0, 0]))
    np.save(tmp_path / "bad.npy", np.zeros((2, 12, 3), np.float32))
    code, _, err = _run(["predict", run, tmp_path / "bad.npy", "--output", tmp_path / "o.npy"],
                        capsys)  # fmt: skip
    assert code == 2 and "but model 'tiny' reads (samples, time, 1)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()


def _train_process(config: Path, run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "jaxgru.cli", "train", str(config), "--set", f"run.dir='{run}'"]
    return subprocess.Popen([*cmd, *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.multiprocess
def test_sigkill_then_resume_gives_bit_identical_params(tmp_path):
    config = _config(tmp_path, samples=3000, epochs=14)
    straight = _train_process(config, tmp_path / "straight")
    killed = _train_process(config, tmp_path / "killed")
    third = tmp_path / "killed" / "checkpoints" / "ckpt-000003.npz"
    deadline = time.monotonic() + 240
    while not third.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "model.keras").exists()
    resumed = _train_process(config, tmp_path / "killed", "--resume")
    assert resumed.wait() == 0, resumed.stderr.read()
    assert straight.wait() == 0, straight.stderr.read()
    final = "checkpoints/ckpt-000014.npz"
    with np.load(tmp_path / "straight" / final) as a, np.load(tmp_path / "killed" / final) as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            assert np.array_equal(a[name], b[name]), name
    for name in ("metrics.jsonl", "model.keras"):
        assert (tmp_path / "straight" / name).exists()
    straight_lines = (tmp_path / "straight" / "metrics.jsonl").read_text()
    assert straight_lines == (tmp_path / "killed" / "metrics.jsonl").read_text()


def test_nan_guard_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    # SGD whose learning rate grows tenfold every step: the loss overflows within a few epochs.
    args = ["train", _config(tmp_path, epochs=12), "--set", f"run.dir='{run}'",
            "--set", "train.optimizer=sgd", "--set", "train.learning_rate=0.001",
            "--set", "train.schedule.name=exponential_decay",
            "--set", "train.schedule.decay_steps=1",
            "--set", "train.schedule.decay_rate=10.0"]  # fmt: skip
    code, _, err = _run(args, capsys)
    assert code == 1
    assert "training diverged: the loss became" in err and "last good checkpoint is" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    kept = checkpoint.checkpoint_paths(run / "checkpoints")
    assert kept and str(kept[-1]) in err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == int(kept[-1].stem.split("-")[1]) < 12
    assert all(np.isfinite(json.loads(line)["loss"]) for line in lines)
    with np.load(kept[-1]) as f:
        assert all(np.all(np.isfinite(f[k])) for k in f.files if f[k].dtype.kind == "f")
    assert not (run / "model.keras").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["epochz=3"], "unknown key 'epochz' in the config; allowed keys: data, mesh, model"),
        (["train.epoch=3"], "unknown key 'epoch' in train; allowed keys: batch_size"),
        (["train.epochs=ten"], "train.epochs must be an integer, got str 'ten'"),
        (["train.epochs=2.5"], "train.epochs must be an integer, got float 2.5"),
        (["train.metrics=mae"], "train.metrics must be a list of a string, got str 'mae'"),
        (["train.shuffle=1"], "train.shuffle must be true or false, got int 1"),
        (["data.window=0"], "data.window is too small for sine: got 0"),
        (["data.kind=mnist"], "data.kind must be one of adding, copy_memory, sine"),
        (["data.widnow=3"], "unknown key 'widnow' in data (sine); allowed keys: horizon"),
        (["model.layers.0.unitz=3"], "unknown key 'unitz' in model.layers[0]; allowed keys"),
        (["model.layers.0.type=LSTM"], "model.layers[0].type must be one of GRU, Dense"),
        (["model.layers.0.units=0"], "model.layers[0]: "),
        (["model.layers.5.units=3"], "'5' is not an index of a list of 2"),
        (["train.schedule.name=linear"], "unknown schedule 'linear'"),
        (["train.early_stopping.patience=x"], "train.early_stopping.patience must be an integer"),
        (["nonsense"], "--set expects key=value"),
        (["mesh.data=0"], "mesh.data must be -1 (every device) or a number of devices >= 1"),
        (["mesh.data=3"], "asked for 3 devices, but JAX sees 1 (cpu); use -1 for all of them"),
        (["mesh.axes=2"], "unknown key 'axes' in mesh; allowed keys: data, shard_params"),
        (["train.compute_dtype=float64"], "train.compute_dtype must be one of float32, bfloat16"),
        (["train.remat_chunk=0"], "train.remat_chunk must be a number of steps >= 1, got 0"),
        (["train.tbptt_steps=4"], "tbptt_steps needs a target per time step"),
        (["model.layers.0.remat_chunk=4"], "unknown key 'remat_chunk' in model.layers[0]"),
    ],
)
def test_bad_config_values_exit_non_zero_with_one_line(tmp_path, capsys, overrides, message):
    args = ["train", _config(tmp_path, epochs=1), "--set", f"run.dir='{tmp_path / 'run'}'"]
    for item in overrides:
        args += ["--set", item]
    code, _, err = _run(args, capsys)
    assert code == 2
    assert message in err
    assert err.startswith("jaxgru: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written: fix the value and run again


def test_missing_and_broken_files_exit_non_zero(tmp_path, capsys):
    code, _, err = _run(["train", tmp_path / "nope.toml"], capsys)
    assert code == 2 and "config file" in err and "does not exist" in err
    (tmp_path / "bad.toml").write_text("name = [unclosed")
    code, _, err = _run(["train", tmp_path / "bad.toml"], capsys)
    assert code == 2 and "is not valid TOML" in err
    code, _, err = _run(["train", _config(tmp_path), "--set", "data.kind=csv",
                         "--set", "data.path=missing.csv", "--set", "data.x_columns=['a']",
                         "--set", "data.y_columns=['a']"], capsys)  # fmt: skip
    assert code == 2 and "unknown key 'samples' in data (csv)" in err
    code, _, err = _run(["evaluate", tmp_path], capsys)
    assert code == 2 and "is not a run directory" in err


def test_a_user_error_is_one_line_and_a_bug_is_a_traceback_that_says_so(tmp_path, capsys,
                                                                        monkeypatch):  # fmt: skip
    from jaxgru import report

    model = jaxgru.Sequential([jaxgru.GRU(2), jaxgru.Dense(1)], input_shape=(4, 3))
    jaxgru.save_keras(model, model.init(jax.random.key(0)), tmp_path / "m.keras")
    code, out, err = _run(["inspect", tmp_path / "m.keras"], capsys)
    assert code == 0 and "gru (GRU)" in out and err == ""
    code, _, err = _run(["explain", tmp_path / "m.keras", "--input", "[[1, 2]]"], capsys)
    assert code == 2 and err.startswith("jaxgru: error: --input has shape (1, 2)")
    assert len(err.strip().splitlines()) == 1

    def broken(model, params):  # an internal failure, as a bug in jaxgru would raise
        raise ValueError("an internal invariant failed")

    monkeypatch.setattr(report, "inspect_report", broken)
    code, _, err = _run(["inspect", tmp_path / "m.keras"], capsys)
    assert code == 70
    lines = err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "ValueError: an internal invariant failed" in err
    assert lines[-1].startswith("jaxgru: internal error: the traceback above is a bug in jaxgru")


def test_an_existing_run_needs_resume_and_a_matching_config(tmp_path, capsys):
    run = tmp_path / "run"
    config = _config(tmp_path, epochs=1)
    assert _run(["train", config, "--set", f"run.dir='{run}'"], capsys)[0] == 0
    code, _, err = _run(["train", config, "--set", f"run.dir='{run}'"], capsys)
    assert code == 2 and "already holds a run; pass --resume" in err
    code, _, err = _run(["train", config, "--set", f"run.dir='{run}'", "--resume",
                         "--set", "train.learning_rate=0.1"], capsys)  # fmt: skip
    assert code == 2 and "differs from the run's in ['train.learning_rate']" in err
    # Extending a finished run: only train.epochs may change.
    code, out, err = _run(["train", config, "--set", f"run.dir='{run}'", "--resume",
                           "--set", "train.epochs=2"], capsys)  # fmt: skip
    assert code == 0, err
    assert "resuming from" in out and "ckpt-000001.npz" in out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_shipped_configs_resolve(capsys):
    configs = sorted(Path(__file__).parents[1].glob("configs/*.toml"))
    assert {p.stem for p in configs} >= {"adding", "copy", "sine", "sunspots", "default"}
    for path in configs:
        first = path.read_text().splitlines()[:4]
        assert any(f"jaxgru train configs/{path.name}" in line for line in first), path
        assert any(line.startswith("# Result:") for line in first), path
        jaxgru_config.load(path)


def _history(tmp_path: Path, name: str, *overrides: str) -> list[dict]:
    settings = [f"run.dir='{tmp_path / name}'", "run.plot=false", *overrides]
    cfg = jaxgru_config.load(_config(tmp_path, epochs=2), settings)
    experiment.train_run(cfg, log=lambda _: None)
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_execution_options_in_the_config_reach_training(tmp_path):
    plain = _history(tmp_path, "plain")
    remat = _history(tmp_path, "remat", "train.remat_chunk=5")  # window 12: chunks 5, 5, 2+3 pad
    mixed = _history(tmp_path, "mixed", "train.compute_dtype=bfloat16")
    for a, b, c in zip(plain, remat, mixed, strict=True):
        for key in ("loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5)  # remat changes memory only
            assert c[key] != a[key] and c[key] == pytest.approx(a[key], rel=0.05)  # bfloat16 ran


COPY = """
name = "stream"
[data]
kind = "copy_memory"
delay = 6
copy_length = 3
symbols = 4
samples = 64
val_samples = 16
test_samples = 16
[model]
layers = [{ type = "GRU", units = 8, return_sequences = true }, { type = "Dense", units = 6 }]
[train]
loss = "sparse_categorical_crossentropy"
from_logits = true
batch_size = 16
epochs = 1
tbptt_steps = 5
[run]
plot = false
progress_bar = false
"""


def test_tbptt_from_the_config_takes_one_step_per_window(tmp_path):
    path = tmp_path / "stream.toml"
    path.write_text(COPY)
    cfg = jaxgru_config.load(path, [f"run.dir='{tmp_path / 'run'}'"])
    experiment.train_run(cfg, log=lambda _: None)
    exp = experiment.Experiment.from_config(cfg)
    last = checkpoint.checkpoint_paths(tmp_path / "run" / "checkpoints")[-1]
    state, progress = checkpoint.load(last, exp.prepare().initial_state())
    time_steps = exp.data.train.x.shape[1]
    assert time_steps == 3 + 6 + 3  # the symbols, the delay, the recall: windows of 5, 5, 2
    assert len(progress.history["batch_loss"]) == int(state.step) == (64 // 16) * 3
