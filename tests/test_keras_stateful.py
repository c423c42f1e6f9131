"""Stateful GRUs trained and run as Keras 3 trains and runs them: ``fit`` carries the state
across batches, validation and epochs; ``predict`` across batches and (through the state the
caller holds) across calls."""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru

pytestmark = pytest.mark.oracle


def _stateful_pair(seed=0):
    """A Keras stateful GRU (batch 4) and the same model in jaxgru."""
    import keras

    layers = [keras.layers.GRU(5, stateful=True), keras.layers.Dense(1)]
    model = keras.Sequential([keras.Input((7, 3), batch_size=4), *layers])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model, *jaxgru.load_keras(model)


@pytest.mark.parametrize("validation", [False, True])
@pytest.mark.parametrize("learning_rate", [0.0, 0.1])
def test_a_stateful_fit_carries_the_state_across_epochs_and_validation_as_keras_3(
    validation, learning_rate
):
    """Keras 3's fit never resets a stateful GRU: the state runs through the training
    batches, then the validation batches, into the next epoch."""
    import keras

    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 7, 3)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    val = (rng.normal(size=(4, 7, 3)).astype(np.float32),
           rng.normal(size=(4, 1)).astype(np.float32))  # fmt: skip
    keras_model, model, params = _stateful_pair()
    keras_model.compile(keras.optimizers.SGD(learning_rate), "mse")
    settings = {"batch_size": 4, "epochs": 3, "shuffle": False, "verbose": 0}
    extra = {"validation_data": val} if validation else {}
    theirs = keras_model.fit(x, y, **settings, **extra).history
    params, ours = jaxgru.fit(model, params, x, y, optimizer="sgd", learning_rate=learning_rate,
                              **settings, **extra)  # fmt: skip
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5)
    assert abs(theirs["loss"][1] - theirs["loss"][0]) > 1e-3  # the carried state shows
    for a, b in zip(jaxgru.to_keras_weights(model, params), keras_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    _, fresh, start = _stateful_pair()
    reset = jaxgru.fit(fresh, start, x, y, optimizer="sgd", learning_rate=learning_rate,
                       reset_states="epoch", **settings)[1]  # fmt: skip
    if learning_rate == 0.0:  # with the weights fixed, a reset repeats the first epoch
        assert reset["loss"] == pytest.approx([reset["loss"][0]] * 3)


def test_stateful_predict_carries_the_state_across_batches_and_calls_as_keras():
    """tf_keras's test_statefulness_GRU (keras/layers/rnn/gru_test.py), with predict's
    state held by the caller: two calls differ, a reset gives the first answer again, and
    left- and right-padded inputs give the same outputs after an Embedding(mask_zero)."""
    import keras

    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 7, 3)).astype(np.float32)
    keras_model, model, params = _stateful_pair(seed=4)
    first, second = (keras_model.predict(x, batch_size=4, verbose=0) for _ in range(2))
    keras_model.layers[0].reset_state()  # Keras 3: the layer resets; tf_keras: reset_states()
    third = keras_model.predict(x, batch_size=4, verbose=0)
    ours_1, states = jaxgru.predict(model, params, x, batch_size=4)
    ours_2, states = jaxgru.predict(model, params, x, batch_size=4, states=states)
    ours_3, _ = jaxgru.predict(model, params, x, batch_size=4, states=model.initial_states(4))
    for ours, theirs in ((ours_1, first), (ours_2, second), (ours_3, third)):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.abs(first - second).max() > 1e-3
    with pytest.raises(ValueError, match="fill whole batches"):
        jaxgru.predict(model, params, x[:6], batch_size=4)
    # The masking part of the tf_keras test.
    L = keras.layers
    masked = keras.Sequential([keras.Input((3,), batch_size=2), L.Embedding(4, 4, mask_zero=True),
                               L.GRU(2, stateful=True)])  # fmt: skip
    model, params = jaxgru.load_keras(masked)
    left, right = np.ones((2, 3), np.int32), np.ones((2, 3), np.int32)
    left[0, :1], left[1, :2] = 0, 0
    right[0, -1:], right[1, -2:] = 0, 0
    out_left, _ = jaxgru.predict(model, params, left, batch_size=2)
    out_right, _ = jaxgru.predict(model, params, right, batch_size=2)
    np.testing.assert_allclose(out_left, out_right, atol=1e-5)
    np.testing.assert_allclose(out_left, masked.predict(left, batch_size=2, verbose=0), atol=1e-5)


def test_stateful_evaluate_runs_on_and_moves_the_state_as_keras():
    """Keras's evaluate carries the model's state across batches and leaves it moved, so a
    second evaluate differs and a predict after it continues; jaxgru hands the state back."""
    import keras

    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 7, 3)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    keras_model, model, params = _stateful_pair(seed=6)
    keras_model.compile(keras.optimizers.SGD(0.0), "mse", metrics=["mae"])
    theirs = [keras_model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
              for _ in range(2)]  # fmt: skip
    after = keras_model.predict(x, batch_size=4, verbose=0)
    first, states = jaxgru.evaluate(model, params, x, y, metrics=["mae"], batch_size=4)
    second, states = jaxgru.evaluate(model, params, x, y, metrics=["mae"], batch_size=4,
                                     states=states)  # fmt: skip
    ours_after, _ = jaxgru.predict(model, params, x, batch_size=4, states=states)
    for ours, expected in zip((first, second), theirs, strict=True):
        assert ours == pytest.approx(expected, rel=1e-5)
    assert abs(theirs[0]["loss"] - theirs[1]["loss"]) > 1e-4  # the carried state shows
    np.testing.assert_allclose(ours_after, after, atol=1e-5)
    with pytest.raises(ValueError, match="fill whole batches"):
        jaxgru.evaluate(model, params, x[:6], y[:6], batch_size=4)
