"""A run directory you can trust: one process owns it, a refused run leaves nothing behind,
nothing of the user's is overwritten, and resume gets past damaged checkpoints."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgru
from jaxgru import checkpoint, experiment, run_dir
from jaxgru import config as jaxgru_config
from jaxgru._files import atomic_write_text
from jaxgru.cli import main
from jaxgru.errors import RunError

CONFIG = """
name = "small"
seed = 1

[data]
kind = "sine"
samples = {samples}
val_samples = 16
test_samples = 16
window = 6

[model]
layers = [{{ type = "GRU", units = 3 }}, {{ type = "Dense", units = 1 }}]

[train]
batch_size = 16
epochs = {epochs}
learning_rate = 0.01

[run]
keep_checkpoints = 0
plot = false
progress_bar = false
"""


def _config(tmp_path: Path, samples=64, epochs=2) -> Path:
    path = tmp_path / f"small-{samples}-{epochs}.toml"
    path.write_text(CONFIG.format(samples=samples, epochs=epochs))
    return path


def _run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> bool:
    return err.startswith("jaxgru: error: ") and len(err.strip().splitlines()) == 1


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _params(run: Path) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(jaxgru.load_keras(run / "model.keras")[1])]


# -- one process owns a run directory -------------------------------------------------------


@pytest.mark.multiprocess
def test_a_second_train_on_a_running_run_exits_2_naming_the_holder_and_sigkill_frees_it(
    tmp_path,
):
    run = tmp_path / "run"
    # Far more epochs than the test waits for (it kills the first run): with 40, a loaded
    # machine once let the first run finish while the second was starting.
    config = _config(tmp_path, samples=4000, epochs=400)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "jaxgru.cli", "train", str(config), "--set", f"run.dir='{run}'"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.checkpoint_paths(run / "checkpoints"):
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended"
            time.sleep(0.05)
        second = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
        assert second.returncode == 2
        assert f"is in use by another jaxgru process (pid {first.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert first.poll() is None  # the holder ran on, untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The OS released the lock with the process: the run resumes (to a shorter end).
    resumed = subprocess.run([*cmd, "--resume", "--set", "train.epochs=1"], env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr


def test_the_lock_is_taken_in_process_and_released_on_exit(tmp_path):
    run = tmp_path / "run"
    with run_dir.open_run_dir(run, lambda folder: None):
        assert (run / run_dir.LOCK).read_text().strip() == str(os.getpid())
        held = rf"in use by another jaxgru process \(pid {os.getpid()}"
        with pytest.raises(RunError, match=held), run_dir.open_run_dir(run, lambda f: None):
            pass  # flock: a second descriptor, even in this process, is refused
    with run_dir.open_run_dir(run, lambda folder: None):
        assert json.loads((run / run_dir.MARKER).read_text())["jaxgru"] == jaxgru.__version__


# -- nothing of the user's is overwritten ------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_was(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"my own model")
    (folder / "checkpoints" / "ckpt-000001.npz").write_bytes(b"my own checkpoint")
    before = _tree(folder)
    code, _, err = _run(["train", _config(tmp_path), "--set", f"run.dir='{folder}'"], capsys)
    assert code == 2 and _one_line(err) and "is not empty and is not a jaxgru run" in err
    assert _tree(folder) == before and sorted(p.name for p in folder.iterdir()) == [
        "checkpoints", "model.keras",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["../outside", "/tmp/absolute", "a/b", ".."])
def test_a_name_is_a_name_not_a_path(tmp_path, capsys, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["train", _config(tmp_path), "--set", f"name='{name}'"], capsys)
    assert code == 2 and _one_line(err) and "must be a plain folder name" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "outside").exists()


def test_a_run_from_before_the_marker_still_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    config = _config(tmp_path, epochs=1)
    assert _run(["train", config, "--set", f"run.dir='{run}'"], capsys)[0] == 0
    (run / run_dir.MARKER).unlink()
    (run / run_dir.LOCK).unlink()  # as an older jaxgru left it: config.toml and checkpoints/
    code, out, err = _run(["train", config, "--set", f"run.dir='{run}'", "--resume",
                           "--set", "train.epochs=2"], capsys)  # fmt: skip
    assert code == 0, err
    assert "resuming from" in out and (run / run_dir.MARKER).is_file()


def test_convert_and_predict_never_write_onto_their_input_or_into_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    config = _config(tmp_path, epochs=1)
    code, _, err = _run(["train", config, "--set", f"run.dir='{run}'"], capsys)
    assert code == 0, err
    model_file = tmp_path / "m.keras"
    model_file.write_bytes((run / "model.keras").read_bytes())
    before = model_file.read_bytes()
    code, _, err = _run(["convert", model_file, model_file], capsys)
    assert code == 2 and _one_line(err) and "is also the input" in err
    assert model_file.read_bytes() == before
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 6, 1), np.float32))
    run_files = _tree(run)
    for output in (x, run / "model.keras", run / "out.csv"):
        code, _, err = _run(["predict", run, x, "--output", output], capsys)
        assert code == 2 and _one_line(err), err
        assert ("is also the input" in err) or ("lies in the run directory" in err)
    assert _tree(run) == run_files and np.load(x).shape == (2, 6, 1)
    # Another existing file needs --force; a new one does not.
    other = tmp_path / "y.csv"
    other.write_text("keep me")
    code, _, err = _run(["predict", run, x, "--output", other], capsys)
    assert code == 2 and "already exists; pass --force" in err and other.read_text() == "keep me"
    assert _run(["predict", run, x, "--output", other, "--force"], capsys)[0] == 0
    assert np.loadtxt(other, delimiter=",").shape == (2,)
    code, _, err = _run(["convert", model_file, tmp_path / "copy.weights.h5"], capsys)
    assert code == 0, err
    code, _, err = _run(["convert", model_file, tmp_path / "copy.weights.h5"], capsys)
    assert code == 2 and "already exists; pass --force" in err
    assert _run(["convert", model_file, tmp_path / "copy.weights.h5", "--force"], capsys)[0] == 0


def test_outputs_get_the_permissions_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


# -- a refused run leaves nothing behind ---------------------------------------------------


def _npz(tmp_path: Path, **changes) -> str:
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(40, 6, 2)), "y": rng.normal(size=(40, 1))}
    arrays.update(changes)
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"data.path='{path}'"


LATE_ERRORS = {
    "unknown loss": (["train.loss='hinge'"], "unknown loss 'hinge'"),
    "unknown metric": (["train.metrics=['auc']"], "unknown metric 'auc'"),
    "batch_size 0": (["train.batch_size=0"], "train.batch_size must be >= 1"),
    "epochs 0": (["train.epochs=0"], "train.epochs must be >= 1"),
    "bad monitor": (["train.early_stopping.monitor='val_auc'"], "monitors 'val_auc'"),
    "stateful with shuffle": (["model.layers.0.stateful=true"], "pass shuffle=False"),
    "keep_checkpoints -1": (["run.keep_checkpoints=-1"], "run.keep_checkpoints must be >= 0"),
    "seed above 2**63": ([f"seed={2**63}"], "seed must be in [0, 2**63 - 1]"),
}
_TEST_SPLIT = {"x_test": np.zeros((5, 6, 2)), "y_test": np.zeros((5, 1))}
NPZ_ERRORS = {
    "NaN data": ({"x": np.full((40, 6, 2), np.nan)}, "holds 480 NaN or infinite values"),
    "string data": ({"x": np.full((40, 6, 2), "a")}, "array 'x' holds dtype <U1"),
    "zero-length sequences": ({"x": np.zeros((40, 0, 2))}, "sequences of length 0"),
    "no samples": ({"x": np.zeros((0, 6, 2)), "y": np.zeros((0, 1))}, "0 samples leave none"),
    "validation arrays of two lengths": (
        {"x_val": np.zeros((5, 6, 2)), "y_val": np.zeros((4, 1))} | _TEST_SPLIT,
        "the validation data x and y hold different numbers of samples: 5 and 4",
    ),
    "targets of the wrong shape": ({"y": np.zeros((40, 2))}, "y has shape (28, 2), but model"),
    "targets (n,) for outputs (n, 1)": ({"y": np.zeros(40)}, "reshape y with y[..., None]"),
}


@pytest.mark.parametrize("case", sorted(LATE_ERRORS))
def test_a_refused_config_leaves_nothing_behind(tmp_path, capsys, case):
    overrides, message = LATE_ERRORS[case]
    run = tmp_path / "run"
    args = ["train", _config(tmp_path), "--set", f"run.dir='{run}'"]
    for item in overrides:
        args += ["--set", item]
    code, _, err = _run(args, capsys)
    assert code == 2 and _one_line(err), err
    assert message in err
    assert not run.exists()


@pytest.mark.parametrize("case", sorted(NPZ_ERRORS))
def test_refused_data_leaves_nothing_behind(tmp_path, capsys, case):
    changes, message = NPZ_ERRORS[case]
    run = tmp_path / "run"
    config = tmp_path / "npz.toml"
    config.write_text(
        CONFIG.format(samples=0, epochs=1).replace(
            'kind = "sine"\nsamples = 0\nval_samples = 16\ntest_samples = 16\nwindow = 6',
            'kind = "npz"\npath = "unset"',
        )
    )
    args = ["train", config, "--set", f"run.dir='{run}'", "--set", _npz(tmp_path, **changes)]
    code, _, err = _run(args, capsys)
    assert code == 2 and _one_line(err), err
    assert message in err
    assert not run.exists()


# -- resume past damage ----------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _not_an_npz(path: Path) -> None:
    path.write_text("this is not a checkpoint")


def _rewrite_one_value(path: Path) -> None:
    """A well-formed .npz, CRCs right, with one weight changed: only the checksum sees it."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    name = next(k for k in arrays if k.endswith("['kernel']") and k.startswith("state"))
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] += 1.0
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """Three epochs without a stop: what every resumed run must equal, bit for bit."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = jaxgru_config.load(_config(tmp, epochs=3), [f"run.dir='{tmp / 'run'}'"])
    experiment.train_run(cfg, log=lambda text: None)
    return tmp / "run"


@pytest.mark.parametrize(
    "damage", [_truncate, _empty, _flip_a_bit, _not_an_npz, _rewrite_one_value],
    ids=lambda f: f.__name__.strip("_"),
)  # fmt: skip
def test_resume_skips_a_damaged_newest_checkpoint_with_one_warning(tmp_path, straight_run,
                                                                   damage):  # fmt: skip
    run = tmp_path / "run"
    cfg = jaxgru_config.load(_config(tmp_path, epochs=2), [f"run.dir='{run}'"])
    experiment.train_run(cfg, log=lambda text: None)
    newest = run / "checkpoints" / "ckpt-000002.npz"
    damage(newest)
    logged = []
    longer = jaxgru_config.load(_config(tmp_path, epochs=3), [f"run.dir='{run}'"])
    experiment.train_run(longer, resume=True, log=logged.append)
    warnings = [line for line in logged if "skipping unreadable checkpoint" in line]
    assert len(warnings) == 1 and "ckpt-000002.npz" in warnings[0]
    assert len(warnings[0].splitlines()) == 1
    assert any("resuming from" in line and "ckpt-000001.npz" in line for line in logged)
    for ours, straight in zip(_params(run), _params(straight_run), strict=True):
        np.testing.assert_array_equal(ours, straight)


def test_stale_temporary_files_are_removed_when_the_lock_is_taken(tmp_path, capsys):
    run = tmp_path / "run"
    config = _config(tmp_path, epochs=1)
    assert _run(["train", config, "--set", f"run.dir='{run}'"], capsys)[0] == 0
    stale = [run / ".model.keras.1a2b3c4d.tmp", run / "checkpoints" / ".ckpt-000002.npz.ab.tmp"]
    for path in stale:
        path.write_bytes(b"half written by a killed process")
    keep = run / "notes.tmp"  # not an atomic_write temporary: the user's
    keep.write_text("mine")
    code, _, err = _run(["train", config, "--set", f"run.dir='{run}'", "--resume",
                         "--set", "train.epochs=2"], capsys)  # fmt: skip
    assert code == 0, err
    assert not any(path.exists() for path in stale) and keep.read_text() == "mine"


def test_keep_checkpoints_0_keeps_every_checkpoint(tmp_path):
    cfg = jaxgru_config.load(_config(tmp_path, epochs=3), [f"run.dir='{tmp_path / 'run'}'"])
    experiment.train_run(cfg, log=lambda text: None)
    names = [p.name for p in checkpoint.checkpoint_paths(tmp_path / "run" / "checkpoints")]
    assert names == ["ckpt-000001.npz", "ckpt-000002.npz", "ckpt-000003.npz"]
