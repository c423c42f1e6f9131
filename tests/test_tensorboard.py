"""``fit``'s TensorBoard scalars, read back with TensorBoard's own reader (the ``tensorboard``
package, which jaxgru does not use to write them)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import jaxgru

pytestmark = pytest.mark.oracle

RNG = np.random.default_rng(0)
X = RNG.normal(size=(37, 7, 3)).astype(np.float32)
Y = np.tanh(X.sum(axis=(1, 2)))[:, None].astype(np.float32)


def _scalars(folder):
    """``{tag: [(step, value), ...]}`` as TensorBoard's own reader loads the folder."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}  # fmt: skip


def test_fit_writes_tensorboard_scalars_per_epoch_and_per_step(tmp_path):
    model = jaxgru.Sequential([jaxgru.GRU(5), jaxgru.Dense(1)], input_shape=(7, 3))
    schedule = jaxgru.optimizers.ScheduleConfig("cosine_decay")
    val = (X[:11], Y[:11])
    _, history = jaxgru.fit(model, model.init(jax.random.key(0)), X, Y, epochs=3, batch_size=8,
                            metrics=["mae"], validation_data=val, learning_rate=0.01,
                            schedule=schedule, tensorboard=tmp_path / "tb", verbose=0)  # fmt: skip
    train, validation = (
        _scalars(tmp_path / "tb" / "train"),
        _scalars(tmp_path / "tb" / "validation"),
    )
    assert set(train) == {"epoch_loss", "epoch_mae", "epoch_learning_rate", "batch_loss",
                          "batch_learning_rate"}  # fmt: skip
    assert set(validation) == {"epoch_loss", "epoch_mae"}
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in validation["epoch_mae"]], history["val_mae"],
                               rtol=1e-6)  # fmt: skip
    assert [s for s, _ in train["batch_loss"]] == list(range(15))  # 5 steps an epoch
    np.testing.assert_allclose([v for _, v in train["batch_loss"]], history["batch_loss"],
                               rtol=1e-6)  # fmt: skip
    rates = [v for _, v in train["batch_learning_rate"]]
    expected = jaxgru.optimizers.make_schedule(0.01, "cosine_decay", decay_steps=15)
    np.testing.assert_allclose(rates, [float(expected(s)) for s in range(15)], rtol=1e-6)
    assert rates[0] > rates[-1]


def test_jaxgru_train_writes_them_with_run_tensorboard_and_a_resume_appends(tmp_path, capsys):
    from jaxgru.cli import main

    config = tmp_path / "tiny.toml"
    config.write_text(
        'name = "tiny"\n[data]\nkind = "sine"\nsamples = 80\nval_samples = 16\n'
        'test_samples = 16\nwindow = 6\n[model]\nlayers = [{ type = "GRU", units = 3 }, '
        '{ type = "Dense", units = 1 }]\n[train]\nbatch_size = 16\nepochs = 2\n'
        "[run]\nprogress_bar = false\nplot = false\ntensorboard = true\n"
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "--set", f'run.dir="{run}"']) == 0
    assert main(["train", str(config), "--set", f'run.dir="{run}"', "--set", "train.epochs=3",
                 "--resume"]) == 0  # fmt: skip
    capsys.readouterr()
    train = _scalars(run / "tensorboard" / "train")
    assert [step for step, _ in train["epoch_loss"]] == [0, 1, 2]
    steps = [step for step, _ in train["batch_loss"]]
    assert steps == list(range(len(steps))) and len(steps) % 3 == 0  # each step once, in order
    assert [step for step, _ in _scalars(run / "tensorboard" / "validation")["epoch_loss"]] == [
        0, 1, 2,
    ]  # fmt: skip
