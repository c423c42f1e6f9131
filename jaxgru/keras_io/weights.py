"""Params dict <-> the list of arrays that Keras's ``get_weights()`` returns.

For a ``GRU`` the list is ``[kernel (input_dim, 3u), recurrent_kernel (u, 3u), bias]`` with
``bias (2, 3u)`` when ``reset_after`` (rows ``b_x``, ``b_h``), ``(3u,)`` otherwise, and no bias
when ``use_bias=False``. Column blocks are ``[z | r | h]`` in every array.

>>> import numpy as np
>>> from jaxgru import GRU
>>> layer = GRU(2, activation="linear")
>>> weights = [np.ones((1, 6)), np.ones((2, 6)), np.zeros((2, 6))]
>>> {k: v.shape for k, v in from_keras_weights(layer, weights).items()}
{'kernel': (1, 6), 'recurrent_kernel': (2, 6), 'bias': (2, 6)}
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgru._checks import check_param_shapes
from jaxgru.gru import GRU


def _describe(layer: GRU) -> str:
    return f"{type(layer).__name__} {layer.name or type(layer).__name__.lower()!r}"


def from_keras_weights(layer: GRU, weights: Sequence[ArrayLike]) -> dict[str, jax.Array]:
    """Build a params dict from a Keras ``get_weights()`` list.

    Args:
        layer: the layer the weights belong to.
        weights: ``[kernel (input_dim, 3u), recurrent_kernel (u, 3u), bias (2, 3u) | (3u,)]``,
            in Keras's order (two arrays when ``use_bias=False``).

    Returns:
        ``{"kernel", "recurrent_kernel", "bias"}`` as JAX arrays of the same shapes.

    Raises:
        ValueError: naming each array whose count, name or shape does not match the layer.
    """
    if not isinstance(layer, GRU):
        raise TypeError(f"from_keras_weights expects a jaxgru.GRU, got {type(layer).__name__}")
    names = layer.weight_names
    weights = [np.asarray(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(
            f"{_describe(layer)}: expected {len(names)} arrays {list(names)} in Keras "
            f"get_weights() order, got {len(weights)} with shapes {[w.shape for w in weights]}"
        )
    if weights[0].ndim != 2:
        raise ValueError(
            f"{_describe(layer)}: 'kernel' must be 2-D (input_dim, {3 * layer.units}), "
            f"got shape {weights[0].shape}"
        )
    params = dict(zip(names, weights))
    check_param_shapes(_describe(layer), layer.param_shapes(weights[0].shape[0]), params)
    return {name: jnp.asarray(w) for name, w in params.items()}


def to_keras_weights(layer: GRU, params: dict[str, ArrayLike]) -> list[np.ndarray]:
    """The inverse of ``from_keras_weights``: a list ready for Keras's ``set_weights()``.

    Args:
        layer: the layer the params belong to.
        params: ``{"kernel": (input_dim, 3u), "recurrent_kernel": (u, 3u), "bias": ...}``.

    Returns:
        NumPy arrays in ``get_weights()`` order.
    """
    if not isinstance(layer, GRU):
        raise TypeError(f"to_keras_weights expects a jaxgru.GRU, got {type(layer).__name__}")
    kernel = params.get("kernel") if isinstance(params, dict) else None
    input_dim = kernel.shape[0] if getattr(kernel, "ndim", 0) == 2 else -1
    check_param_shapes(_describe(layer), layer.param_shapes(input_dim), params)
    return [np.asarray(params[name]) for name in layer.weight_names]
