"""Equinox ``eqx.nn.GRUCell`` <-> a jaxgru ``GRU``, exactly.

``eqx.nn.GRUCell`` is Keras's ``reset_after=True`` step with PyTorch's layout (gate blocks
``r | z | n``, matrices transposed), one input ``bias (3u,)`` and the candidate's recurrent
``bias_n (u,)``. The recurrent z and r biases fold into ``bias``, which is exact::

    weight_ih (3u, input) = swap_zr(kernel.T)
    weight_hh (3u, u)     = swap_zr(recurrent_kernel.T)
    bias      (3u,)       = swap_zr(b_x + [b_h,z, b_h,r, 0])
    bias_n    (u,)        = b_h,h

The cell is fixed to sigmoid and tanh. Back from Equinox the recurrent z and r biases are
zero, so Equinox -> jaxgru -> Equinox returns the same arrays.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxgru.convert._common import (
    ConversionError,
    check_no_bias,
    check_standard_cell,
    fold_recurrent_zr,
    gru_bias_rows,
    numpy_f32,
    require,
    swap_zr,
    unfolded_bias,
)
from jaxgru.gru import GRU


def to_equinox(layer: GRU, params: dict, *, use_bias: bool | None = None) -> Any:
    """An ``eqx.nn.GRUCell`` computing ``layer``'s step: ``cell(x_t (input,), h (u,)) -> (u,)``.

    Args:
        layer: a jaxgru ``GRU`` with ``reset_after=True``, sigmoid and tanh.
        params: its params.
        use_bias: ``False`` for a cell without biases, refused if any bias is non-zero.
            Default: ``layer.use_bias``.
    """
    eqx = require("equinox", "to_equinox")
    check_standard_cell(layer, "eqx.nn.GRUCell")
    use_bias = layer.use_bias if use_bias is None else use_bias
    kernel = numpy_f32(params["kernel"])
    u = layer.units
    b_x, b_h = gru_bias_rows(layer, params)
    if not use_bias:
        check_no_bias(
            layer, b_x, b_h, "eqx.nn.GRUCell(use_bias=False)", "convert with use_bias=True"
        )
    cell = eqx.nn.GRUCell(kernel.shape[0], u, use_bias=use_bias, key=jax.random.key(0))
    arrays = {
        "weight_ih": swap_zr(kernel.T),
        "weight_hh": swap_zr(numpy_f32(params["recurrent_kernel"]).T),
    }
    if use_bias:
        arrays["bias"] = swap_zr(fold_recurrent_zr(b_x, b_h, u))
        arrays["bias_n"] = b_h[2 * u :]
    names = list(arrays)
    return eqx.tree_at(
        lambda c: [getattr(c, n) for n in names], cell, [jnp.asarray(arrays[n]) for n in names]
    )


def from_equinox(cell: Any, *, name: str | None = None) -> tuple[GRU, dict]:
    """An ``eqx.nn.GRUCell`` as a jaxgru ``GRU(reset_after=True)`` and its params.

    Returns:
        ``(layer, params)``: ``kernel (input, 3u)``, ``recurrent_kernel (u, 3u)`` and, when the
        cell has biases, ``bias (2, 3u)`` with zero recurrent z and r biases.
    """
    eqx = require("equinox", "from_equinox")
    if not isinstance(cell, eqx.nn.GRUCell):
        raise ConversionError(f"from_equinox takes an eqx.nn.GRUCell, got {type(cell).__name__}")
    u = int(cell.hidden_size)
    params = {
        "kernel": swap_zr(numpy_f32(cell.weight_ih)).T.copy(),
        "recurrent_kernel": swap_zr(numpy_f32(cell.weight_hh)).T.copy(),
    }
    if cell.use_bias:
        params["bias"] = unfolded_bias(swap_zr(numpy_f32(cell.bias)), numpy_f32(cell.bias_n), u)
    return GRU(u, reset_after=True, use_bias=bool(cell.use_bias), name=name), params
