"""from_keras_weights / to_keras_weights: get_weights() order, validated names and shapes."""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru
from tests.helpers import FEATURES, UNITS, keras_gru, random_weights

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize(
    "layer",
    [
        jaxgru.GRU(UNITS),
        jaxgru.GRU(UNITS, reset_after=False),
        jaxgru.GRU(UNITS, use_bias=False),
    ],
    ids=["reset_after", "reset_before", "no_bias"],
)
def test_round_trip_through_real_keras(layer):
    weights = random_weights(layer, FEATURES)
    k = keras_gru(layer, FEATURES, weights)  # Keras validates our layout on set_weights
    params = jaxgru.from_keras_weights(layer, k.get_weights())
    assert list(params) == list(layer.weight_names)
    back = jaxgru.to_keras_weights(layer, params)
    assert [w.shape for w in back] == [w.shape for w in k.get_weights()]
    for ours, theirs in zip(back, k.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_wrong_count_names_the_expected_arrays():
    layer = jaxgru.GRU(UNITS)
    weights = random_weights(layer, FEATURES)[:2]
    with pytest.raises(
        ValueError, match=r"expected 3 arrays \['kernel', 'recurrent_kernel', 'bias'\]"
    ):
        jaxgru.from_keras_weights(layer, weights)


@pytest.mark.parametrize(
    ("index", "bad_shape", "message"),
    [
        (1, (UNITS, 4 * UNITS), r"'recurrent_kernel' expected shape \(5, 15\), got \(5, 20\)"),
        (2, (3 * UNITS,), r"'bias' expected shape \(2, 15\), got \(15,\)"),
        (0, (FEATURES,), r"'kernel' expected shape \(3, 15\), got \(3,\)"),
    ],
)
def test_shape_mismatch_names_array_expected_and_actual(index, bad_shape, message):
    layer = jaxgru.GRU(UNITS)
    weights = random_weights(layer, FEATURES)
    weights[index] = np.zeros(bad_shape, np.float32)
    with pytest.raises(ValueError, match=message):
        jaxgru.from_keras_weights(layer, weights)


def test_to_keras_weights_validates_params():
    layer = jaxgru.GRU(UNITS, name="encoder")
    params = jaxgru.from_keras_weights(layer, random_weights(layer, FEATURES))
    params["bias"] = params["bias"][0]
    with pytest.raises(ValueError, match=r"GRU 'encoder': 'bias' expected shape \(2, 15\)"):
        jaxgru.to_keras_weights(layer, params)
