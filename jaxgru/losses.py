"""Keras's losses and metrics by name, as pure functions of ``(y_true, y_pred)``.

Every function reduces the last axis the way Keras does and returns one value per sample
(``(batch,)``) or per sample and step (``(batch, time)`` for sequence outputs). ``weighted_mean``
then reduces those values as Keras's default ``sum_over_batch_size`` does: the weighted sum
divided by the number of values.

>>> import jax.numpy as jnp
>>> float(get_loss("mse")(jnp.array([[1.0], [2.0]]), jnp.array([[1.5], [2.0]])).mean())
0.125
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax

from jaxgru.errors import ConfigError

EPSILON = 1e-7  # keras.config.epsilon(): probabilities are clipped to [EPSILON, 1 - EPSILON]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def mean_squared_error(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """``mean((y_pred - y_true)²)`` over the last axis: ``(batch, ..., k)`` -> ``(batch, ...)``."""
    return jnp.mean(jnp.square(y_pred - y_true), axis=-1)


def mean_absolute_error(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """``mean(|y_pred - y_true|)`` over the last axis: ``(batch, ..., k)`` -> ``(batch, ...)``."""
    return jnp.mean(jnp.abs(y_pred - y_true), axis=-1)


def binary_crossentropy(
    y_true: jax.Array, y_pred: jax.Array, from_logits: bool = False
) -> jax.Array:
    """Binary cross-entropy, averaged over the last axis; probabilities clipped as Keras clips.

    Args:
        y_true: ``(batch, ..., k)`` of 0/1 (or soft) targets.
        y_pred: ``(batch, ..., k)`` probabilities, or logits with ``from_logits``.
    """
    if from_logits:
        return jnp.mean(optax.sigmoid_binary_cross_entropy(y_pred, y_true), axis=-1)
    p = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
    return jnp.mean(-(y_true * jnp.log(p) + (1.0 - y_true) * jnp.log(1.0 - p)), axis=-1)


def categorical_crossentropy(
    y_true: jax.Array, y_pred: jax.Array, from_logits: bool = False
) -> jax.Array:
    """Cross-entropy against one-hot targets.

    Args:
        y_true: ``(batch, ..., classes)`` one-hot (or soft) targets.
        y_pred: ``(batch, ..., classes)`` probabilities (renormalised and clipped, as Keras
            does), or logits with ``from_logits``.
    """
    if from_logits:
        return optax.softmax_cross_entropy(y_pred, y_true)
    p = y_pred / jnp.sum(y_pred, axis=-1, keepdims=True)
    return -jnp.sum(y_true * jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON)), axis=-1)


def sparse_categorical_crossentropy(
    y_true: jax.Array, y_pred: jax.Array, from_logits: bool = False
) -> jax.Array:
    """Cross-entropy against integer class ids.

    Args:
        y_true: ``(batch, ...)`` class ids (a trailing axis of size 1 is dropped, as in Keras).
        y_pred: ``(batch, ..., classes)`` probabilities or, with ``from_logits``, logits.
    """
    labels = _class_ids(y_true, y_pred)
    logits = y_pred if from_logits else jnp.log(jnp.clip(y_pred, EPSILON, 1.0 - EPSILON))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def accuracy(y_true: jax.Array, y_pred: jax.Array, from_logits: bool = False) -> jax.Array:
    """Keras's ``"accuracy"``: 1.0 where the prediction is right, per sample (and step).

    As Keras picks it: binary when ``y_pred`` has one column (threshold 0.5 on probabilities;
    jaxgru thresholds logits at 0 when the loss is ``from_logits``, which Keras does not),
    sparse categorical when ``y_true`` holds class ids, categorical otherwise.
    """
    if y_pred.shape[-1] == 1:
        threshold = 0.0 if from_logits else 0.5
        hits = (y_pred > threshold).astype(y_pred.dtype) == y_true.astype(y_pred.dtype)
        return jnp.mean(hits.astype(y_pred.dtype), axis=-1)
    if y_true.ndim == y_pred.ndim - 1 or (y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1):
        hits = jnp.argmax(y_pred, axis=-1) == _class_ids(y_true, y_pred)
    else:
        hits = jnp.argmax(y_pred, axis=-1) == jnp.argmax(y_true, axis=-1)
    return hits.astype(y_pred.dtype)


def _class_ids(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true.astype(jnp.int32)


_LOSSES = {
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
}
_METRICS = {"mse": mean_squared_error, "mae": mean_absolute_error, "accuracy": accuracy}
_METRICS["acc"] = accuracy
LOSS_NAMES = tuple(_LOSSES)
METRIC_NAMES = tuple(_METRICS)


def get_loss(name: str | LossFn, from_logits: bool = False) -> LossFn:
    """A loss by Keras name (``mse``, ``mae``, the three cross-entropies), or a callable as is."""
    return _lookup(name, _LOSSES, "loss", from_logits)


def get_metric(name: str | LossFn, from_logits: bool = False) -> LossFn:
    """A metric by name (``mae``, ``mse``, ``accuracy``), or a callable as is."""
    return _lookup(name, _METRICS, "metric", from_logits)


def _lookup(name, table: dict, what: str, from_logits: bool) -> LossFn:
    if callable(name):
        return name
    if name not in table:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {', '.join(table)}")
    fn = table[name]
    if fn in (mean_squared_error, mean_absolute_error):
        return fn
    return partial(fn, from_logits=from_logits)


def weighted_mean(values: jax.Array, weights: jax.Array, count: jax.Array) -> jax.Array:
    """Keras's ``sum_over_batch_size``: ``sum(weights * values) / count``.

    Args:
        values: ``(batch,)`` or ``(batch, time)`` per-sample values.
        weights: ``(batch,)`` or the same shape as ``values``; 0 drops a value.
        count: how many values are real (padding excluded).
    """
    return jnp.sum(broadcast_weights(weights, values) * values) / jnp.maximum(count, 1)


def broadcast_weights(weights: jax.Array, values: jax.Array) -> jax.Array:
    """``weights (batch,)`` or ``(batch, time)`` broadcast to ``values``' shape."""
    weights = weights.reshape(weights.shape + (1,) * (values.ndim - weights.ndim))
    return jnp.broadcast_to(weights, values.shape)
