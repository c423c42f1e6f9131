"""Data parallelism and multi-process training (jaxgru.distributed) against one device.

JAX fixes its devices at start-up, so each scenario runs in fresh processes: one with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` for the mesh runs, and two processes
joined by ``jax.distributed`` on loopback for the multi-host run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxgru
from jaxgru import config, distributed

pytestmark = pytest.mark.multiprocess

HERE = Path(__file__).parent
FORCE_DEVICES = "--xla_force_host_platform_device_count={}"


def _env(devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env |= {"XLA_FLAGS": FORCE_DEVICES.format(devices), "JAX_PLATFORMS": "cpu", **extra}
    return env


@pytest.fixture(scope="module")
def mesh_runs() -> dict:
    result = subprocess.run(
        [sys.executable, str(HERE / "data_parallel_worker.py")],
        env=_env(4), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("reference", "run"),
    [
        ("single", "replicated"),
        ("single", "sharded_params"),
        ("stateful_single", "stateful_split"),
    ],
)
def test_sharded_fit_equals_single_device(mesh_runs, reference, run):
    single, split = mesh_runs[reference], mesh_runs[run]
    assert set(split["history"]) == set(single["history"]) >= {"loss", "batch_loss"}
    for key, values in single["history"].items():  # per step and per epoch
        np.testing.assert_allclose(split["history"][key], values, rtol=2e-5, err_msg=key)
    for (layer, name), want in _leaves(single["params"]):
        got = np.asarray(split["params"][layer][name])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{layer}/{name}")


def test_params_are_replicated_or_split_as_asked(mesh_runs):
    assert mesh_runs["shardings"]["single"] == "one device"
    assert mesh_runs["shardings"]["replicated"] == []
    # the first GRU's recurrent_kernel (8, 24): split along its larger axis over 4 devices
    assert mesh_runs["shardings"]["sharded_params"] == [None, "data"]


def test_a_batch_that_does_not_split_is_refused(mesh_runs):
    assert mesh_runs["batch_error"] == (
        "batch_size 6 does not split evenly over 4 devices; use a multiple of 4, or fewer devices"
    )


def _leaves(params: dict):
    for layer, arrays in params.items():
        for name, value in arrays.items():
            yield (layer, name), np.asarray(value)


TWO_PROCESS_CONFIG = """
name = "lockstep"
seed = 2

[data]
kind = "sine"
samples = 160
val_samples = 32
test_samples = 32
window = 10

[model]
layers = [{ type = "GRU", units = 6, dropout = 0.1 }, { type = "Dense", units = 1 }]

[train]
batch_size = 16
epochs = 2
learning_rate = 0.01

[run]
plot = false
progress_bar = false

[mesh]
data = -1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_command(config_path: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "jaxgru.cli", "train", str(config_path),
            "--set", f"run.dir='{run_dir}'"]  # fmt: skip


def test_two_processes_train_in_lockstep_like_one_process_with_two_devices(tmp_path):
    config_path = tmp_path / "lockstep.toml"
    config_path.write_text(TWO_PROCESS_CONFIG)
    address = f"127.0.0.1:{_free_port()}"

    def launch(index: int) -> subprocess.Popen:
        env = _env(1, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(index))  # fmt: skip
        command = _train_command(config_path, tmp_path / "two")
        pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.Popen(command, env=env, **pipes)

    processes = [launch(0), launch(1)]
    one = subprocess.run(_train_command(config_path, tmp_path / "one"), env=_env(2),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in processes]
    assert one.returncode == 0, one.stderr[-2000:]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-2000:]
    assert "data parallel over 2 devices in 2 process(es)" in outputs[0][0]
    assert "data parallel over 2 devices in 1 process(es)" in one.stdout
    # process 1 logs nothing (the line Gloo, JAX's CPU collectives, prints is not ours)
    assert [line for line in outputs[1][0].splitlines() if not line.startswith("[Gloo]")] == []
    assert "run directory" in outputs[0][0]

    def metrics(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    assert len(metrics("two")) == 2
    for two, single in zip(metrics("two"), metrics("one"), strict=True):
        assert two.keys() == single.keys()
        for key in two:
            np.testing.assert_allclose(two[key], single[key], rtol=1e-5, err_msg=key)
    _, params_two = jaxgru.load_keras(tmp_path / "two" / "model.keras")
    _, params_one = jaxgru.load_keras(tmp_path / "one" / "model.keras")
    for layer, arrays in params_one.items():
        for name, want in arrays.items():
            np.testing.assert_allclose(params_two[layer][name], want, rtol=1e-5, atol=1e-6)
    assert [p.name for p in (tmp_path / "two" / "checkpoints").iterdir()] != []


def test_initialize_from_env_needs_all_three_variables():
    assert distributed.initialize_from_env({}) is False  # a plain single-process run
    with pytest.raises(ValueError, match=r"needs all of JAX_COORDINATOR_ADDRESS"):
        distributed.initialize_from_env({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"})
    with pytest.raises(ValueError, match=r"must be integers; got 'two' and '0'"):
        distributed.initialize_from_env(
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}
        )


def test_make_mesh_names_the_fix():
    with pytest.raises(ValueError, match=r"xla_force_host_platform_device_count"):
        distributed.make_mesh(64)
    assert distributed.make_mesh(-1).shape == {"data": 1}


def test_mesh_config_defaults_to_one_device():
    cfg = config.resolve({"name": "t", "data": {"kind": "sine"},
                          "model": {"layers": [{"type": "Dense", "units": 1}]}})  # fmt: skip
    assert cfg["mesh"] == {"data": 1, "shard_params": False}
    assert cfg["train"]["compute_dtype"] == "float32"


def _two_processes(config_path: Path, cwds: tuple[Path, Path], *extra: str) -> list:
    """Run ``jaxgru train`` as processes 0 and 1 (run dir ``runs/r``, relative to each cwd)."""
    address = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "jaxgru.cli", "train", str(config_path),
               "--set", "run.dir=runs/r", *extra]  # fmt: skip
    processes = [
        subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=_env(1, JAX_COORDINATOR_ADDRESS=address,
                                             JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
        for i, cwd in enumerate(cwds)
    ]  # fmt: skip
    return [(p, *p.communicate(timeout=600)) for p in processes]


def test_a_multi_process_resume_needs_the_checkpoints_on_every_process(tmp_path):
    config_path = tmp_path / "lockstep.toml"
    config_path.write_text(TWO_PROCESS_CONFIG)
    shared, elsewhere = tmp_path / "shared", tmp_path / "elsewhere"
    shared.mkdir()
    elsewhere.mkdir()
    for p, _, err in _two_processes(config_path, (shared, shared), "--set", "train.epochs=1"):
        assert p.returncode == 0, err[-2000:]
    resumed = _two_processes(config_path, (shared, shared), "--resume")  # to epoch 2
    for p, _, err in resumed:
        assert p.returncode == 0, err[-2000:]
    assert "resuming from" in resumed[0][1]
    metrics = (shared / "runs" / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]
    # process 1 cannot see the checkpoints: both refuse, rather than train out of step
    split = _two_processes(config_path, (shared, elsewhere), "--resume", "--set",
                           "train.epochs=3")  # fmt: skip
    for p, _, err in split:
        assert p.returncode == 2
        assert "the processes found different checkpoints" in err and "(found: [2, -1])" in err
