"""Flax ``linen.GRUCell`` and Equinox ``eqx.nn.GRUCell`` <-> jaxgru against the real libraries."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru.convert import ConversionError, from_equinox, from_flax, to_equinox, to_flax
from tests.helpers import FEATURES, UNITS, random_inputs, random_weights
from tests.reference import gru_reference

pytestmark = pytest.mark.oracle

NAMES = ("kernel", "recurrent_kernel", "bias")


def keras_case(seed=0, **kwargs):
    layer = jaxgru.GRU(UNITS, return_sequences=True, **kwargs)
    weights = random_weights(layer, FEATURES, seed=seed)
    return layer, dict(zip(NAMES, weights)), weights


def flax_outputs(cell, variables, x):
    """``nn.RNN`` over ``x (batch, time, features)`` -> ``(batch, time, units)``."""
    return np.asarray(nn.RNN(cell).apply({"params": {"cell": variables["params"]}}, x))


def equinox_outputs(cell, x):
    def run(x_seq):
        return jax.lax.scan(
            lambda h, x_t: (cell(x_t, h),) * 2, jnp.zeros(cell.hidden_size), x_seq
        )[1]

    return np.asarray(jax.vmap(run)(jnp.asarray(x)))


@pytest.mark.parametrize("use_bias", [True, False])
def test_to_flax_matches_the_reference_and_keras_layout(use_bias):
    layer, params, weights = keras_case(seed=1, use_bias=use_bias)
    x, _ = random_inputs(seed=2)
    cell, variables = to_flax(layer, params)
    expected, _, _ = gru_reference(x, *weights)
    np.testing.assert_allclose(flax_outputs(cell, variables, x), expected, atol=1e-5)


def test_to_flax_carries_non_default_activations_into_the_cell():
    layer, params, weights = keras_case(
        seed=3, recurrent_activation="hard_sigmoid", activation="relu"
    )
    x, _ = random_inputs(seed=4)
    cell, variables = to_flax(layer, params)
    expected, _, _ = gru_reference(
        x, *weights, recurrent_activation="hard_sigmoid", activation="relu"
    )
    np.testing.assert_allclose(flax_outputs(cell, variables, x), expected, atol=1e-5)
    back, _ = from_flax(variables, cell)
    assert (back.recurrent_activation, back.activation) == ("hard_sigmoid", "relu")


def test_flax_round_trip_returns_identical_arrays_and_outputs():
    x, _ = random_inputs(seed=5)
    flax_rnn = nn.RNN(nn.GRUCell(UNITS, bias_init=nn.initializers.normal(0.5)))
    variables = flax_rnn.init(jax.random.key(1), x)
    layer, params = from_flax(variables)
    np.testing.assert_allclose(
        np.asarray(dataclasses.replace(layer, return_sequences=True).apply(params, x)),
        np.asarray(flax_rnn.apply(variables, x)),
        atol=1e-5,
    )
    _, again = to_flax(layer, params)
    jax.tree.map(np.testing.assert_array_equal, again["params"], variables["params"]["cell"])


def test_keras_flax_keras_folds_recurrent_zr_biases_and_keeps_outputs():
    layer, params, _ = keras_case(seed=6)
    x, _ = random_inputs(seed=7)
    back_layer, back = from_flax(to_flax(layer, params)[1])
    u = UNITS
    np.testing.assert_array_equal(back["kernel"], params["kernel"])
    np.testing.assert_array_equal(back["recurrent_kernel"], params["recurrent_kernel"])
    np.testing.assert_array_equal(back["bias"][1, : 2 * u], 0)  # folded away
    np.testing.assert_array_equal(back["bias"][1, 2 * u :], params["bias"][1, 2 * u :])
    np.testing.assert_array_equal(
        back["bias"][0],
        params["bias"][0] + np.r_[params["bias"][1, : 2 * u], np.zeros(u, np.float32)],
    )
    np.testing.assert_allclose(
        np.asarray(dataclasses.replace(back_layer, return_sequences=True).apply(back, x)),
        np.asarray(layer.apply(params, x)),
        atol=1e-6,
    )


@pytest.mark.parametrize("use_bias", [True, False])
def test_to_equinox_matches_the_reference(use_bias):
    layer, params, weights = keras_case(seed=8, use_bias=use_bias)
    x, _ = random_inputs(seed=9)
    cell = to_equinox(layer, params)
    assert cell.use_bias == use_bias
    expected, _, _ = gru_reference(x, *weights)
    np.testing.assert_allclose(equinox_outputs(cell, x), expected, atol=1e-5)


@pytest.mark.parametrize("use_bias", [True, False])
def test_equinox_round_trip_returns_identical_arrays(use_bias):
    cell = eqx.nn.GRUCell(FEATURES, UNITS, use_bias=use_bias, key=jax.random.key(2))
    x, _ = random_inputs(seed=10)
    layer, params = from_equinox(cell)
    np.testing.assert_allclose(
        np.asarray(dataclasses.replace(layer, return_sequences=True).apply(params, x)),
        equinox_outputs(cell, x),
        atol=1e-5,
    )
    again = to_equinox(layer, params)
    for name in ("weight_ih", "weight_hh", "bias", "bias_n"):
        if getattr(cell, name) is None:
            assert getattr(again, name) is None
        else:
            np.testing.assert_array_equal(getattr(again, name), getattr(cell, name))


def test_conversions_that_would_lose_information_are_refused():
    layer, params, _ = keras_case(reset_after=False)
    with pytest.raises(ConversionError, match=r"reset_after=False, which flax.linen.GRUCell"):
        to_flax(layer, params)
    with pytest.raises(ConversionError, match=r"reset_after=False, which eqx.nn.GRUCell"):
        to_equinox(layer, params)
    layer, params, _ = keras_case(recurrent_activation="hard_sigmoid")
    with pytest.raises(ConversionError, match=r"eqx.nn.GRUCell always uses sigmoid"):
        to_equinox(layer, params)
    layer, params, _ = keras_case()
    with pytest.raises(ConversionError, match=r"non-zero biases.*use_bias=False"):
        to_equinox(layer, params, use_bias=False)
    with pytest.raises(ConversionError, match=r"flax.linen.GRUCell params with keys"):
        from_flax({"params": {"cell": {"ir": {}}}})
    with pytest.raises(ConversionError, match=r"takes an eqx.nn.GRUCell, got LSTMCell"):
        from_equinox(eqx.nn.LSTMCell(3, 4, key=jax.random.key(0)))
