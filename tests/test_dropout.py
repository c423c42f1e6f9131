"""Variational dropout: one mask per call, constant over time, scaled 1/(1-rate), train-only.

The masks are read back exactly with crafted weights that make the GRU echo its (masked)
input or state, then the same masks drive the float64 reference with random weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from tests.helpers import FEATURES, UNITS, random_inputs, random_weights
from tests.reference import gru_reference

RATE = 0.4


def _echo_params(units: int, input_dim: int, echo: str) -> dict:
    """hard_sigmoid gates saturate exactly: z = 0 (so h = h~) and r = 1; linear activation.

    echo="input": h~ = x_t (needs input_dim == units), so outputs are x_t * input_mask.
    echo="state": h~ = h_prev * recurrent_mask, so h_t = h_0 * mask^t.
    """
    u = units
    kernel = np.zeros((input_dim, 3 * u), np.float32)
    recurrent = np.zeros((u, 3 * u), np.float32)
    if echo == "input":
        kernel[:, 2 * u :] = np.eye(input_dim, u)
    else:
        recurrent[:, 2 * u :] = np.eye(u)
    bias = np.zeros((2, 3 * u), np.float32)
    bias[0, :u] = -10.0  # z = hard_sigmoid(-10) = 0
    bias[0, u : 2 * u] = 10.0  # r = 1
    return {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}


def _layer(**kw) -> jaxgru.GRU:
    return jaxgru.GRU(
        UNITS, activation="linear", recurrent_activation="hard_sigmoid",
        return_sequences=True, **kw,
    )  # fmt: skip


def _read_input_mask(rng, batch=2, features=UNITS):
    layer = _layer(dropout=RATE)
    x = np.random.default_rng(0).uniform(1, 2, (batch, 7, features)).astype(np.float32)
    y = layer.apply(_echo_params(UNITS, features, "input"), x, training=True, rng=rng)
    masks = np.asarray(y)[..., :features] / x  # (batch, time, features): one mask per step
    return masks


def _read_recurrent_mask(rng, batch=2):
    layer = _layer(recurrent_dropout=RATE)
    h0 = np.ones((batch, UNITS), np.float32)
    x = np.zeros((batch, 7, UNITS), np.float32)
    y = layer.apply(
        _echo_params(UNITS, UNITS, "state"), x, initial_state=h0, training=True, rng=rng
    )
    return np.asarray(y)[:, 0, :], np.asarray(y)  # h_1 = h_0 * mask, and all h_t


def test_input_mask_is_constant_over_time_and_scaled():
    masks = _read_input_mask(jax.random.key(0), batch=64)
    np.testing.assert_allclose(masks, masks[:, :1, :].repeat(7, axis=1), rtol=1e-6)
    values = np.unique(np.round(masks, 5))
    np.testing.assert_allclose(values, [0.0, 1 / (1 - RATE)], rtol=1e-5)
    dropped = np.mean(masks[:, 0, :] == 0)
    assert abs(dropped - RATE) < 0.1, dropped  # 320 draws


def test_recurrent_mask_is_constant_over_time_and_scaled():
    mask, hs = _read_recurrent_mask(jax.random.key(1), batch=64)
    values = np.unique(np.round(mask, 5))
    np.testing.assert_allclose(values, [0.0, 1 / (1 - RATE)], rtol=1e-5)
    for t in range(1, 7):  # h_t = h_0 * mask^(t+1): the same mask at every step
        np.testing.assert_allclose(hs[:, t, :], mask ** (t + 1), rtol=1e-5)
    assert abs(np.mean(mask == 0) - RATE) < 0.1


@pytest.mark.parametrize("reset_after", [True, False])
def test_dropout_matches_reference_with_the_same_masks(reset_after):
    rng = jax.random.key(7)
    input_mask = _read_input_mask(rng, features=FEATURES)[:, 0, :]
    rec_mask, _ = _read_recurrent_mask(rng)
    layer = jaxgru.GRU(
        UNITS, dropout=RATE, recurrent_dropout=RATE, reset_after=reset_after,
        return_sequences=True,
    )  # fmt: skip
    weights = random_weights(layer, FEATURES, seed=2)
    params = jaxgru.from_keras_weights(layer, weights)
    x, h0 = random_inputs(seed=3)
    out = layer.apply(params, x, initial_state=h0, training=True, rng=rng)
    ref, _, _ = gru_reference(
        x, *weights, reset_after=reset_after, initial_state=h0,
        input_dropout_mask=input_mask, recurrent_dropout_mask=rec_mask,
    )  # fmt: skip
    np.testing.assert_allclose(out, ref, atol=1e-5)
    no_dropout, _, _ = gru_reference(x, *weights, reset_after=reset_after, initial_state=h0)
    assert not np.allclose(out, no_dropout, atol=1e-3)  # the masks did something


def test_dropout_is_a_no_op_at_inference_and_deterministic_per_rng():
    layer = jaxgru.GRU(UNITS, dropout=0.5, recurrent_dropout=0.5, return_sequences=True)
    plain = jaxgru.GRU(UNITS, return_sequences=True)
    params = layer.init(jax.random.key(0), FEATURES)
    x, _ = random_inputs()
    np.testing.assert_array_equal(layer.apply(params, x), plain.apply(params, x))
    a = layer.apply(params, x, training=True, rng=jax.random.key(5))
    b = layer.apply(params, x, training=True, rng=jax.random.key(5))
    c = layer.apply(params, x, training=True, rng=jax.random.key(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    jitted = jax.jit(layer.apply, static_argnames="training")
    np.testing.assert_allclose(
        jitted(params, x, training=True, rng=jax.random.key(5)), a, atol=1e-6
    )


def test_dropout_in_training_without_rng_is_a_clear_error():
    layer = jaxgru.GRU(UNITS, dropout=0.2)
    params = layer.init(jax.random.key(0), FEATURES)
    with pytest.raises(ValueError, match=r"needs rng=jax\.random\.key"):
        layer.apply(params, jnp.zeros((2, 7, FEATURES)), training=True)
