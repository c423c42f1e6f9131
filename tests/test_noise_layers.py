"""The noise layers (``SpatialDropout1D``, ``GaussianNoise``, ``GaussianDropout``,
``AlphaDropout``): the identity at inference, and in training the distribution Keras draws
from (jaxgru's random numbers are not Keras's, so training mode is checked by its statistics,
against the formulas of Keras 3's ``call`` here and against real Keras in the oracle test)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxgru
from jaxgru.errors import ConfigError

LAYERS = {
    "spatial": jaxgru.SpatialDropout1D(0.3),
    "gaussian_noise": jaxgru.GaussianNoise(0.4),
    "gaussian_dropout": jaxgru.GaussianDropout(0.2),
    "alpha_dropout": jaxgru.AlphaDropout(0.25),
}


def _x(shape=(64, 50, 40), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("name", list(LAYERS))
def test_inference_is_the_identity_and_the_mask_passes(name):
    layer = LAYERS[name]
    x, mask = _x((2, 7, 3)), np.array([[True] * 7, [True] * 4 + [False] * 3])
    np.testing.assert_array_equal(layer.apply({}, x, mask=mask), x)
    np.testing.assert_array_equal(layer.compute_mask(x, mask), mask)
    with pytest.raises(ConfigError, match="rng"):
        layer.apply({}, x, training=True)


def test_spatial_dropout_drops_whole_features_at_the_rate_and_scales_the_rest():
    x = np.ones((200, 9, 40), np.float32)
    y = np.asarray(LAYERS["spatial"].apply({}, x, training=True, rng=jax.random.key(0)))
    assert (y == y[:, :1]).all()  # one decision per (sample, feature), for every step
    assert abs((y == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)


def test_gaussian_noise_and_dropout_have_keras_moments():
    x = _x()
    noisy = np.asarray(LAYERS["gaussian_noise"].apply({}, x, training=True,
                                                      rng=jax.random.key(1)))  # fmt: skip
    assert abs((noisy - x).std() - 0.4) < 0.01 and abs((noisy - x).mean()) < 0.01
    ones = np.ones((64, 50, 40), np.float32)
    factor = np.asarray(LAYERS["gaussian_dropout"].apply({}, ones, training=True,
                                                         rng=jax.random.key(2)))  # fmt: skip
    assert abs(factor.mean() - 1.0) < 0.01
    assert abs(factor.std() - np.sqrt(0.2 / 0.8)) < 0.01


def test_alpha_dropout_keeps_a_selu_activations_mean_and_variance():
    selu = np.asarray(jax.nn.selu(_x(seed=3)))  # zero mean, unit variance
    y = np.asarray(LAYERS["alpha_dropout"].apply({}, selu, training=True,
                                                 rng=jax.random.key(3)))  # fmt: skip
    assert abs(y.mean() - selu.mean()) < 0.02
    assert abs(y.var() - selu.var()) < 0.03
    alpha_p = -1.6732632423543772 * 1.0507009873554805  # SELU's saturation, as Keras
    a = ((1 - 0.25) * (1 + 0.25 * alpha_p**2)) ** -0.5
    dropped = np.isclose(y, a * alpha_p - a * alpha_p * 0.25, atol=1e-6)
    assert abs(dropped.mean() - 0.25) < 0.02  # a dropped value becomes a * alpha_p + b


def test_the_noise_layers_run_in_a_model_with_fit():
    x_in = jaxgru.Input((None, 3))
    h = jaxgru.GaussianNoise(0.1)(jaxgru.SpatialDropout1D(0.1)(x_in))
    out = jaxgru.Dense(1)(jaxgru.GRU(4)(jaxgru.GaussianDropout(0.1)(h)))
    model = jaxgru.Model(x_in, jaxgru.AlphaDropout(0.1)(out))
    x = _x((32, 7, 3))
    params, history = jaxgru.fit(model, model.init(jax.random.key(0)), x, x.mean((1, 2))[:, None],
                                 epochs=2, batch_size=8, verbose=0)  # fmt: skip
    assert np.isfinite(history["loss"]).all()
    np.testing.assert_array_equal(jaxgru.predict(model, params, x),
                                  jaxgru.predict(model, params, x))  # fmt: skip
