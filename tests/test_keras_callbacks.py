"""The training callbacks against real Keras 3: ``ReduceLROnPlateau`` lowers the learning rate
on the epochs Keras's does, to the rates Keras's does, and the run trains to Keras's weights."""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru
from jaxgru.train import ReduceLROnPlateau

pytestmark = pytest.mark.oracle

keras = pytest.importorskip("keras")

PLATEAUS = {
    # patience 1 with a min_delta that most epochs miss: several reductions, and min_lr
    "val_loss_min_lr": ReduceLROnPlateau(
        "val_loss", factor=0.5, patience=1, min_delta=0.02, min_lr=0.03
    ),
    # a cooldown between reductions, monitored on the training loss
    "loss_cooldown": ReduceLROnPlateau("loss", factor=0.3, patience=1, min_delta=0.05, cooldown=2),
    # mode="max" on a metric that falls: every epoch after the first is "no improvement"
    "max_mae": ReduceLROnPlateau("val_mae", factor=0.7, patience=2, mode="max", min_delta=0.0),
}


def _data(samples, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 7, 3)).astype(np.float32)
    return x, np.tanh(x.sum(axis=(1, 2)))[:, None].astype(np.float32)


@pytest.mark.parametrize("name", PLATEAUS)
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_reduce_lr_on_plateau_follows_keras_epoch_by_epoch(name, optimizer):
    plateau = PLATEAUS[name]
    model = keras.Sequential([keras.Input((7, 3)), keras.layers.GRU(5), keras.layers.Dense(1)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    jax_model, params = jaxgru.load_keras(model)
    (x, y), val = _data(29, 1), _data(11, 2)
    make = {"sgd_momentum": lambda: keras.optimizers.SGD(0.2, momentum=0.9),
            "adam": lambda: keras.optimizers.Adam(0.05)}[optimizer]  # fmt: skip
    model.compile(optimizer=make(), loss="mse", metrics=["mae"])
    callback = keras.callbacks.ReduceLROnPlateau(
        monitor=plateau.monitor, factor=plateau.factor, patience=plateau.patience,
        mode=plateau.mode, min_delta=plateau.min_delta, cooldown=plateau.cooldown,
        min_lr=plateau.min_lr,
    )  # fmt: skip
    expected = model.fit(x, y, batch_size=8, epochs=8, shuffle=False, validation_data=val,
                         callbacks=[callback], verbose=0).history  # fmt: skip
    settings = {"optimizer": "sgd", "learning_rate": 0.2, "momentum": 0.9}
    if optimizer == "adam":
        settings = {"optimizer": "adam", "learning_rate": 0.05}
    params, history = jaxgru.fit(jax_model, params, x, y, loss="mse", metrics=["mae"],
                                 batch_size=8, epochs=8, shuffle=False, validation_data=val,
                                 reduce_lr_on_plateau=plateau, verbose=0, **settings)  # fmt: skip
    rates = np.asarray(expected["learning_rate"])
    assert len(set(rates.tolist())) >= 2, "the case must lower the rate at least once"
    np.testing.assert_allclose(history["learning_rate"], rates, rtol=1e-6)
    for key in ("loss", "val_loss", "mae", "val_mae"):
        np.testing.assert_allclose(history[key], expected[key], rtol=2e-4, err_msg=key)
    for ours, theirs in zip(jaxgru.to_keras_weights(jax_model, params), model.get_weights(),
                            strict=True):  # fmt: skip
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)
