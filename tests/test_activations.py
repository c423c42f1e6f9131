"""Every activation name jaxgru accepts equals keras.activations.get(name) numerically."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru

pytestmark = pytest.mark.oracle

keras = pytest.importorskip("keras")

X = np.linspace(-5.0, 5.0, 41, dtype=np.float32).reshape(1, 41)
X = np.concatenate([X, np.random.default_rng(0).normal(size=(1, 41)).astype(np.float32)])


KERAS_3_NAMES = [n for n in jaxgru.activations.NAMES if n != "hard_sigmoid_tf_keras"]


@pytest.mark.parametrize("name", KERAS_3_NAMES)
def test_activation_matches_keras(name):
    expected = np.asarray(keras.activations.get(name)(X))
    actual = np.asarray(jaxgru.activations.get(name)(jnp.asarray(X)))
    np.testing.assert_allclose(actual, expected, atol=2e-6, rtol=2e-6)


def test_none_is_linear_as_in_keras():
    np.testing.assert_array_equal(jaxgru.activations.get(None)(jnp.asarray(X)), X)


def test_every_shape_preserving_keras_activation_is_supported():
    from keras.src.activations import ALL_OBJECTS_DICT

    refused = {"glu", "threshold", "sparsemax"}
    assert set(ALL_OBJECTS_DICT) - refused == set(KERAS_3_NAMES)


def test_tf_keras_hard_sigmoid_matches_tf_keras():
    tf_keras = pytest.importorskip("tf_keras")
    import tensorflow as tf

    expected = np.asarray(tf_keras.activations.get("hard_sigmoid")(tf.constant(X)))
    actual = jaxgru.activations.get("hard_sigmoid_tf_keras")(jnp.asarray(X))
    np.testing.assert_allclose(actual, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["glu", "threshold", "sparsemax"])
def test_refused_names_say_why(name):
    with pytest.raises(ValueError, match=rf"activation '{name}' cannot be used in a GRU: .+"):
        jaxgru.GRU(3, activation=name)
