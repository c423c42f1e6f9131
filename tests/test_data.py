"""Datasets and checkpoints: the tasks are what they claim, files load, bad input is named."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxgru
from jaxgru import checkpoint
from jaxgru.data import DataError, load_dataset
from jaxgru.optimizers import make_optimizer
from jaxgru.train import Progress, init_train_state


def test_adding_problem_targets_and_baseline():
    data = load_dataset("adding", samples=500, val_samples=10, test_samples=4000, length=30)
    x, y = data.train.x, data.train.y
    markers = x[..., 1]
    assert markers.sum(axis=1).tolist() == [2.0] * 500
    assert np.all(markers[:, :15].sum(axis=1) == 1)  # one marker in each half
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * markers).sum(axis=1), rtol=1e-6)
    assert data.baselines["predict_1.0_mse"] == pytest.approx(1 / 6, abs=0.01)


def test_copy_memory_layout():
    data = load_dataset("copy_memory", samples=6, val_samples=1, test_samples=1, delay=4,
                        copy_length=3, symbols=5)  # fmt: skip
    x, y, w = data.train.x, data.train.y, data.train.sample_weight
    assert x.shape == (6, 10, 7) and y.shape == w.shape == (6, 10)
    ids = x.argmax(-1)
    np.testing.assert_array_equal(y[:, -3:], ids[:, :3])
    assert np.all(ids[:, 6] == 6)  # the cue, one step before recall
    assert w.sum(axis=1).tolist() == [3.0] * 6 and np.all(w[:, -3:] == 1)
    assert data.baselines == {"chance_accuracy": 0.2}


def test_synthetic_test_split_does_not_depend_on_training_size():
    small = load_dataset("sine", samples=10, test_samples=5)
    large = load_dataset("sine", samples=50, test_samples=5)
    np.testing.assert_array_equal(small.test.x, large.test.x)


@pytest.mark.oracle
def test_sunspots_from_statsmodels_in_time_order():
    data = load_dataset("sunspots", window=20)
    n = 309 - 20  # windows with a next-year target
    assert len(data.train) + len(data.val) + len(data.test) == n
    assert data.train.x.shape[1:] == (20, 1)
    # Consecutive windows overlap: the series is split in time order, not shuffled.
    np.testing.assert_array_equal(data.train.x[1, :-1], data.train.x[0, 1:])
    np.testing.assert_array_equal(data.train.y[0], data.train.x[1, -1])
    import statsmodels.api as sm

    years = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    assert data.scale["x_mean"][0] == pytest.approx(years[:216].mean(), rel=1e-6)  # 70% of 309
    assert data.scale["x_std"][0] == pytest.approx(years[:216].std(), rel=1e-5)
    assert data.baselines["last_value_mse"] > 0


def test_csv_with_named_columns(tmp_path):
    path = tmp_path / "d.csv"
    t = np.arange(60)
    table = np.stack([t, np.sin(t / 3), np.cos(t / 3)], axis=1)
    np.savetxt(path, table, delimiter=",", header="step,a,b", comments="")
    data = load_dataset("csv", path=str(path), x_columns=["a", "b"], y_columns=["b"], window=5)
    assert data.train.x.shape[1:] == (5, 2) and data.train.y.shape[1:] == (1,)
    with pytest.raises(DataError, match=r"has no column\(s\) \['c'\]; its columns are"):
        load_dataset("csv", path=str(path), x_columns=["c"], y_columns=["b"])
    with pytest.raises(DataError, match="too short for window=100"):
        load_dataset("csv", path=str(path), x_columns=["a"], y_columns=["b"], window=100)


def test_npz_with_and_without_explicit_splits(tmp_path):
    x, y = np.zeros((20, 4, 2), np.float32), np.ones((20, 1), np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    data = load_dataset("npz", path=str(tmp_path / "a.npz"), val_fraction=0.25,
                        test_fraction=0.25)  # fmt: skip
    assert (len(data.train), len(data.val), len(data.test)) == (10, 5, 5)
    np.savez(tmp_path / "b.npz", x=x, y=y, x_val=x[:3], y_val=y[:3], x_test=x[:2], y_test=y[:2])
    data = load_dataset("npz", path=str(tmp_path / "b.npz"))
    assert (len(data.train), len(data.val), len(data.test)) == (20, 3, 2)
    np.savez(tmp_path / "c.npz", inputs=x)
    with pytest.raises(DataError, match=r"has no array 'x'; it holds \['inputs'\]"):
        load_dataset("npz", path=str(tmp_path / "c.npz"))
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", path=str(tmp_path / "d.npz"))


def _state(units=4):
    model = jaxgru.Sequential([jaxgru.GRU(units), jaxgru.Dense(1)], input_shape=(5, 2))
    optimizer = make_optimizer("adam")
    return init_train_state(model, model.init(jax.random.key(0)), optimizer, 8, seed=1)


def test_checkpoint_round_trip_is_bit_exact_and_prunes(tmp_path):
    state = _state()
    progress = Progress(epoch=0, history={"loss": []})
    for epoch in range(1, 6):
        progress.epoch = epoch
        progress.best_epoch = 1  # epoch index 1 is the best: ckpt-000002 is kept
        progress.history["loss"].append(1.0 / epoch)
        checkpoint.write_checkpoint(tmp_path, state, progress, keep=2)
    names = [p.name for p in checkpoint.checkpoint_paths(tmp_path)]
    assert names == ["ckpt-000002.npz", "ckpt-000004.npz", "ckpt-000005.npz"]
    restored, restored_progress, path = checkpoint.restore_latest(tmp_path, state)
    assert path.name == "ckpt-000005.npz" and restored_progress.epoch == 5
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_unreadable_newest_checkpoint_is_skipped_and_a_mismatch_is_named(tmp_path):
    state = _state()
    checkpoint.write_checkpoint(tmp_path, state, Progress(epoch=1), keep=5)
    (tmp_path / "ckpt-000002.npz").write_bytes(b"truncated")
    (tmp_path / ".ckpt-000003.npz.abc.tmp").write_bytes(b"half written")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        _, progress, path = checkpoint.restore_latest(tmp_path, state)
    assert path.name == "ckpt-000001.npz" and progress.epoch == 1
    with pytest.raises(checkpoint.CheckpointError, match=r"state\.params\['gru'\]\['kernel'\]"):
        checkpoint.load(path, _state(units=3))
