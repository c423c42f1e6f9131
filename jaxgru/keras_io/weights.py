"""Params dicts <-> the list of arrays that Keras's ``get_weights()`` returns.

For a ``GRU`` the list is ``[kernel (input_dim, 3u), recurrent_kernel (u, 3u), bias]`` with
``bias (2, 3u)`` when ``reset_after`` (rows ``b_x``, ``b_h``), ``(3u,)`` otherwise, and no bias
when ``use_bias=False``. Column blocks are ``[z | r | h]`` in every array. A ``Bidirectional``
lists its forward GRU's arrays, then its backward GRU's; a ``Sequential`` lists its layers'
arrays in order, as ``model.get_weights()``.

>>> import numpy as np
>>> from jaxgru import GRU
>>> layer = GRU(2, activation="linear")
>>> weights = [np.ones((1, 6)), np.ones((2, 6)), np.zeros((2, 6))]
>>> {k: v.shape for k, v in from_keras_weights(layer, weights).items()}
{'kernel': (1, 6), 'recurrent_kernel': (2, 6), 'bias': (2, 6)}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgru._checks import check_param_shapes
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import Model
from jaxgru.gru import cudnn_gru_to_gru
from jaxgru.layer import Layer, non_trainable
from jaxgru.model import Sequential

__all__ = ["cudnn_gru_to_gru", "from_keras_weights", "to_keras_weights"]


def _describe(target: Any) -> str:
    return f"{type(target).__name__} {target.name or type(target).__name__.lower()!r}"


def _expected_shapes(target: Any, arrays: dict[str, Any]) -> dict:
    """Nested ``{name: shape}`` in get_weights() order. A lone layer's ``input_dim`` is read
    from the first of ``arrays`` (``{"kernel": ...}``, flattened names) whose shape depends
    on it, whatever order the dict is in (``jax.grad`` and optax re-sort keys)."""
    if isinstance(target, (Sequential, Model)):
        return target.param_shapes()
    if not isinstance(target, Layer):
        raise ConfigError(f"expected a jaxgru layer or Sequential, got {type(target).__name__}")
    one, two = _flatten(target.param_shapes(1)), _flatten(target.param_shapes(2))
    for name, shape in one.items():
        if two.get(name) != shape and getattr(arrays.get(name), "ndim", 0) >= 1:
            return target.param_shapes(int(arrays[name].shape[0]))
    return target.param_shapes(-1)  # nothing to read it from: the shape check names the gap


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"gru": {"kernel": k}}`` -> ``{"gru/kernel": k}``, keeping the order."""
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}/"))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def from_keras_weights(target: Any, weights: Sequence[ArrayLike]) -> dict[str, Any]:
    """Build params from a Keras ``get_weights()`` list.

    Args:
        target: a ``GRU`` (or another jaxgru layer) or a ``Sequential``.
        weights: arrays in Keras's order, e.g. ``[kernel (input_dim, 3u),
            recurrent_kernel (u, 3u), bias (2, 3u)]`` for a GRU, or ``model.get_weights()``.

    Returns:
        The params dict (nested by layer name for a ``Sequential``) of JAX arrays.

    Raises:
        ValueError: naming each array whose count or shape does not match.
    """
    weights = [np.asarray(w) for w in weights]
    real = [jnp.issubdtype(w.dtype, jnp.floating) for w in weights]
    not_real = [f"#{i} {w.dtype}" for i, (w, ok) in enumerate(zip(weights, real)) if not ok]
    if not_real:
        raise DataError(
            f"{_describe(target)}: weights must be floating point, got arrays {not_real}; "
            "Keras stores weights as float16, float32 or float64"
        )
    in_order = list(_flatten(target.param_shapes(1))) if isinstance(target, Layer) else []
    expected = _flatten(_expected_shapes(target, dict(zip(in_order, weights))))
    if len(weights) != len(expected):
        raise DataError(
            f"{_describe(target)}: expected {len(expected)} arrays {list(expected)} in Keras "
            f"get_weights() order, got {len(weights)} with shapes {[w.shape for w in weights]}"
        )
    flat = dict(zip(expected, weights))
    check_param_shapes(_describe(target), expected, flat)
    return _unflatten({name: jnp.asarray(w) for name, w in flat.items()})


def to_keras_weights(
    target: Any, params: dict[str, Any], trainable_only: bool = False
) -> list[np.ndarray]:
    """The inverse of ``from_keras_weights``: a list ready for Keras's ``set_weights()``.

    Args:
        target: a ``GRU`` (or another jaxgru layer) or a ``Sequential``.
        params: its params dict.
        trainable_only: leave out the non-trainable weights (BatchNormalization's moving
            statistics), as Keras's ``trainable_weights`` does, e.g. to set gradients
            beside Keras's.

    Returns:
        NumPy arrays in ``get_weights()`` order.
    """
    if not isinstance(params, dict):
        raise ConfigError(
            f"{_describe(target)}: params must be a dict, got {type(params).__name__}"
        )
    flat = _flatten(params)
    expected = _flatten(_expected_shapes(target, flat))
    check_param_shapes(_describe(target), expected, flat)
    held = _non_trainable(target) if trainable_only else set()
    return [np.asarray(flat[name]) for name in expected if name not in held]


def _non_trainable(target: Any) -> set[str]:
    """The flattened names of ``target``'s non-trainable params (``"bn/moving_mean"``)."""
    if isinstance(target, Layer):
        return set(non_trainable(target))
    return {f"{item.name}/{name}" for item in target.layers for name in non_trainable(item)}
