"""One GRU step: the equations of ``jaxgru.gru``'s docstring, and nothing else.

Every pass over time (``jaxgru.recurrence``) and ``GRU.step`` call these functions, so the
math lives in one place. A step is split where the hand-written backward pass
(``recurrence.fused_scan``) needs to see inside it: the two projections (matmuls) and the gates
(elementwise, except the ``(r ⊙ h) U_h`` matmul of ``reset_after=False``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax

from jaxgru import activations

if TYPE_CHECKING:
    from jaxgru.gru import GRU


class GateValues(NamedTuple):
    """Everything one GRU step computes; each field is ``(batch, units)``.

    ``*_pre`` are the pre-activations: ``z = σ(z_pre)``, ``r = σ(r_pre)``, ``hh = φ(hh_pre)``
    (``hh`` is the candidate ``h~``); ``h`` is the new state before any mask is applied.
    """

    z_pre: jax.Array
    r_pre: jax.Array
    hh_pre: jax.Array
    z: jax.Array
    r: jax.Array
    hh: jax.Array
    h: jax.Array


def input_projection(layer: GRU, params: dict, x: jax.Array) -> jax.Array:
    """``x W + b_x``: ``x (..., features)`` -> ``(..., 3u)``."""
    x_proj = x @ params["kernel"]
    if layer.use_bias:
        bias = params["bias"]
        b_x = bias[0] if layer.reset_after else bias
        x_proj = x_proj + b_x.reshape((1,) * (x.ndim - 1) + b_x.shape)
    return x_proj


def recurrent_weights(layer: GRU, params: dict) -> dict:
    """The recurrent weights arranged for the step.

    Returns:
        ``{"U": (u, 3u), "b_h": (1, 3u) or None}`` when ``reset_after``, else
        ``{"U_zr": (u, 2u), "U_h": (u, u)}``.
    """
    u, kernel = layer.units, params["recurrent_kernel"]
    if layer.reset_after:
        return {"U": kernel, "b_h": params["bias"][1:] if layer.use_bias else None}
    return {"U_zr": kernel[:, : 2 * u], "U_h": kernel[:, 2 * u :]}


def recurrent_projection(layer: GRU, recurrent: dict, h_in: jax.Array) -> jax.Array:
    """``h U + b_h (batch, 3u)`` when ``reset_after``, else ``h U_zr (batch, 2u)``."""
    if not layer.reset_after:
        return h_in @ recurrent["U_zr"]
    h_proj = h_in @ recurrent["U"]
    return h_proj if recurrent["b_h"] is None else h_proj + recurrent["b_h"]


def gates(
    layer: GRU,
    recurrent: dict,
    h_prev: jax.Array,
    h_in: jax.Array,
    x_proj: jax.Array,
    h_proj: jax.Array,
) -> GateValues:
    """The gates and the new state, given both projections.

    Args:
        recurrent: from ``recurrent_weights``.
        h_prev: ``(batch, u)``, the carried state.
        h_in: ``(batch, u)``, ``h_prev`` times the recurrent dropout mask (or ``h_prev``).
        x_proj: ``(batch, 3u)``, this step's ``x W + b_x``.
        h_proj: ``recurrent_projection(layer, recurrent, h_in)``.
    """
    u = layer.units
    sigma = activations.get(layer.recurrent_activation)
    phi = activations.get(layer.activation)
    z_pre = x_proj[:, :u] + h_proj[:, :u]
    r_pre = x_proj[:, u : 2 * u] + h_proj[:, u : 2 * u]
    r = sigma(r_pre)
    if layer.reset_after:
        hh_pre = x_proj[:, 2 * u :] + r * h_proj[:, 2 * u :]
    else:
        hh_pre = x_proj[:, 2 * u :] + (r * h_in) @ recurrent["U_h"]
    z, hh = sigma(z_pre), phi(hh_pre)
    h = z * h_prev + (1 - z) * hh
    return GateValues(z_pre, r_pre, hh_pre, z, r, hh, h)


def cell(
    layer: GRU,
    recurrent: dict,
    h_prev: jax.Array,
    x_proj: jax.Array,
    rec_mask: jax.Array | None,
) -> GateValues:
    """One whole step from ``h_prev (batch, u)`` and ``x_proj (batch, 3u)``.

    ``rec_mask (batch, u)`` is the recurrent dropout mask, applied to ``h_prev`` inside the gate
    terms only (the carried state in ``z ⊙ h_prev`` is not masked), or ``None``.
    """
    h_in = h_prev if rec_mask is None else h_prev * rec_mask
    h_proj = recurrent_projection(layer, recurrent, h_in)
    return gates(layer, recurrent, h_prev, h_in, x_proj, h_proj)
