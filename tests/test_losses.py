"""Losses and metrics against Keras's functions, per sample, for each output shape."""

from __future__ import annotations

import jax.numpy as jnp
import keras
import numpy as np
import pytest

from jaxgru import losses

pytestmark = pytest.mark.oracle

RNG = np.random.default_rng(0)
SHAPES = [(2, 3), (2, 7, 3)]  # (batch, outputs) and (batch, time, outputs)


def _probabilities(shape):
    p = RNG.uniform(0.0, 1.0, shape).astype(np.float32)
    p[0, ..., 0] = 0.0  # exercises the clipping at epsilon
    return p


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["mse", "mae"])
def test_regression_losses(name, shape):
    y_true, y_pred = RNG.normal(size=shape).astype(np.float32), RNG.normal(size=shape)
    expected = keras.losses.get(name)(y_true, y_pred.astype(np.float32))
    actual = losses.get_loss(name)(jnp.asarray(y_true), jnp.asarray(y_pred, jnp.float32))
    assert actual.shape == shape[:-1]
    np.testing.assert_allclose(actual, expected, rtol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "name", ["binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"]
)
def test_crossentropies(name, shape, from_logits):
    if from_logits:
        y_pred = RNG.normal(size=shape).astype(np.float32) * 3
    else:
        y_pred = _probabilities(shape)
    if name == "binary_crossentropy":
        y_true = RNG.integers(0, 2, shape).astype(np.float32)
    elif name == "categorical_crossentropy":
        y_true = np.eye(shape[-1], dtype=np.float32)[RNG.integers(0, shape[-1], shape[:-1])]
    else:
        y_true = RNG.integers(0, shape[-1], shape[:-1]).astype(np.int32)
    expected = keras.losses.get(name)(y_true, y_pred, from_logits=from_logits)
    actual = losses.get_loss(name, from_logits)(jnp.asarray(y_true), jnp.asarray(y_pred))
    assert actual.shape == shape[:-1]
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_accuracy_picks_keras_variant(shape):
    probs = _probabilities(shape)
    ids = RNG.integers(0, shape[-1], shape[:-1])
    one_hot = np.eye(shape[-1], dtype=np.float32)[ids]
    accuracy = losses.get_metric("accuracy")
    np.testing.assert_array_equal(
        accuracy(jnp.asarray(ids), jnp.asarray(probs)),
        keras.metrics.sparse_categorical_accuracy(ids, probs),
    )
    np.testing.assert_array_equal(
        accuracy(jnp.asarray(one_hot), jnp.asarray(probs)),
        keras.metrics.categorical_accuracy(one_hot, probs),
    )
    single = probs[..., :1]
    labels = RNG.integers(0, 2, single.shape).astype(np.float32)
    np.testing.assert_array_equal(
        accuracy(jnp.asarray(labels), jnp.asarray(single)),
        np.asarray(keras.metrics.binary_accuracy(labels, single))[..., 0],  # Keras keeps the 1
    )


def test_binary_accuracy_from_logits_thresholds_at_zero():
    logits = jnp.array([[-0.2], [0.3]], jnp.float32)
    labels = jnp.array([[0.0], [1.0]], jnp.float32)
    assert losses.get_metric("accuracy", from_logits=True)(labels, logits).tolist() == [1.0, 1.0]


def test_weighted_mean_divides_by_real_values_as_keras():
    values = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    weights = jnp.array([1.0, 0.5, 0.0])  # last row is padding
    expected = (1 + 2 + 0.5 * (3 + 4)) / 4
    assert float(losses.weighted_mean(values, weights, jnp.float32(4))) == pytest.approx(expected)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; choose one of mse"):
        losses.get_loss("hinge")
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        losses.get_metric("auc")
