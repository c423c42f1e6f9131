"""Flax ``linen.GRUCell`` <-> a jaxgru ``GRU``, exactly.

``linen.GRUCell`` computes Keras's ``reset_after=True`` step with one ``(in, u)`` Dense per
gate and per source. It has no recurrent bias for r and z (``hr``, ``hz`` have only a kernel),
so those two are folded into the input biases, which is exact: the gate only sees the sum::

    iz.kernel = kernel[:, :u]       ir.kernel = kernel[:, u:2u]       in.kernel = kernel[:, 2u:]
    hz.kernel = recurrent[:, :u]    hr.kernel = recurrent[:, u:2u]    hn.kernel = recurrent[:, 2u:]
    iz.bias = b_x,z + b_h,z         ir.bias = b_x,r + b_h,r           in.bias = b_x,h
    hn.bias = b_h,h

Back from Flax the recurrent z and r biases are zero, so Flax -> jaxgru -> Flax returns the
same arrays; jaxgru -> Flax -> jaxgru returns them folded (same outputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgru import activations
from jaxgru.convert._common import (
    ConversionError,
    check_reset_after,
    fold_recurrent_zr,
    gru_bias_rows,
    numpy_f32,
    require,
    unfolded_bias,
)
from jaxgru.gru import GRU

_GATES = ("z", "r", "n")  # Keras's block order, Flax's gate letters
_PARAM_NAMES = {"iz", "ir", "in", "hz", "hr", "hn"}


def to_flax(layer: GRU, params: dict) -> tuple[Any, dict]:
    """A ``linen.GRUCell`` and its variables computing ``layer``'s step.

    Args:
        layer: a jaxgru ``GRU`` with ``reset_after=True`` (any activations: the cell is built
            with ``gate_fn``/``activation_fn`` set to match).
        params: its params, ``kernel (input, 3u)``, ``recurrent_kernel (u, 3u)``, ``bias (2, 3u)``.

    Returns:
        ``(cell, variables)``: ``cell.apply(variables, h (batch, u), x_t (batch, input))``
        returns ``(h_new, h_new)`` equal to ``layer.step(params, h, x_t)``.
    """
    check_reset_after(layer, "flax.linen.GRUCell")  # the model's problem first, the install's next
    linen = require("flax.linen", "to_flax")
    u = layer.units
    kernel, recurrent = numpy_f32(params["kernel"]), numpy_f32(params["recurrent_kernel"])
    b_x, b_h = gru_bias_rows(layer, params)
    folded = fold_recurrent_zr(b_x, b_h, u)
    out = {}
    for i, gate in enumerate(_GATES):
        block = slice(i * u, (i + 1) * u)
        out[f"i{gate}"] = {"kernel": kernel[:, block], "bias": folded[block]}
        out[f"h{gate}"] = {"kernel": recurrent[:, block]}
    out["hn"]["bias"] = b_h[2 * u :]
    cell = linen.GRUCell(
        features=u,
        gate_fn=activations.get(layer.recurrent_activation),
        activation_fn=activations.get(layer.activation),
    )
    return cell, {"params": jax.tree.map(jnp.asarray, out)}


def _cell_params(variables: Mapping) -> Mapping:
    """Find the GRUCell's own dict in ``variables``, ``{"params": ...}`` or an ``nn.RNN``'s."""
    found = variables
    for key in ("params", "cell"):
        if isinstance(found, Mapping) and set(found) == {key}:
            found = found[key]
    if not isinstance(found, Mapping) or set(found) != _PARAM_NAMES:
        keys = sorted(found) if isinstance(found, Mapping) else type(found).__name__
        raise ConversionError(
            f"expected flax.linen.GRUCell params with keys {sorted(_PARAM_NAMES)}, got {keys}"
        )
    return found


def _activation_name(fn: Any) -> Any:
    """A Keras name for a Flax activation function when there is one, else the function."""
    for name in ("sigmoid", "tanh", "hard_sigmoid", "relu", "linear"):
        if fn is activations.get(name) or fn is getattr(jax.nn, name, None):
            return name
    return fn


def from_flax(
    variables: Mapping, cell: Any = None, *, name: str | None = None
) -> tuple[GRU, dict]:
    """A ``linen.GRUCell``'s variables as a jaxgru ``GRU`` and its params.

    Args:
        variables: ``cell.init(...)``'s result, its ``["params"]``, or an ``nn.RNN``'s.
        cell: the ``GRUCell`` itself, to carry over non-default ``gate_fn``/``activation_fn``.
        name: the GRU's name.

    Returns:
        ``(GRU(u, reset_after=True), {"kernel" (input, 3u), "recurrent_kernel" (u, 3u),
        "bias" (2, 3u)})`` with zero recurrent z and r biases.
    """
    p = _cell_params(variables)
    u = numpy_f32(p["hz"]["kernel"]).shape[1]
    kernel = np.concatenate([numpy_f32(p[f"i{g}"]["kernel"]) for g in _GATES], axis=1)
    recurrent = np.concatenate([numpy_f32(p[f"h{g}"]["kernel"]) for g in _GATES], axis=1)
    folded = np.concatenate([numpy_f32(p[f"i{g}"]["bias"]) for g in _GATES])
    bias = unfolded_bias(folded, numpy_f32(p["hn"]["bias"]), u)
    kwargs = {}
    if cell is not None:
        kwargs = {
            "recurrent_activation": _activation_name(cell.gate_fn),
            "activation": _activation_name(cell.activation_fn),
        }
    layer = GRU(u, reset_after=True, name=name, **kwargs)
    return layer, {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
