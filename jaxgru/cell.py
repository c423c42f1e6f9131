"""One GRU step: the equations of ``jaxgru.gru``'s docstring, and nothing else.

Every pass over time (``jaxgru.recurrence``) and ``GRU.step`` call these functions, so the
math lives in one place. A step is split where the hand-written backward pass
(``recurrence.fused_scan``) needs to see inside it: the two projections (matmuls) and the gates
(elementwise, except the ``(r ⊙ h) U_h`` matmul of ``reset_after=False``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

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


def gate_weights(layer: GRU, params: dict) -> dict:
    """The Keras arrays split per gate, the layout each step uses.

    Each gate gets its own matmuls: on the XLA CPU backend three ``(batch, u) @ (u, u)``
    products measured about 25% faster per train step than one ``(u, 3u)`` product followed by
    column slices (``docs/benchmarks.md``).

    Returns:
        ``{"W": (W_z, W_r, W_h)}`` each ``(features, u)``, ``{"U": (U_z, U_r, U_h)}`` each
        ``(u, u)``, and ``"b_x"``, ``"b_h"``: 3-tuples of ``(1, u)`` rows or ``None``
        (``b_h`` is ``None`` unless ``reset_after`` and ``use_bias``).
    """
    u = layer.units

    def blocks(a):  # (..., 3u) -> three (..., u), columns z | r | h
        return tuple(a[..., g * u : (g + 1) * u] for g in range(3))

    bias = params.get("bias") if layer.use_bias else None
    if bias is None:
        b_x = b_h = None
    elif layer.reset_after:
        b_x, b_h = blocks(bias[0:1]), blocks(bias[1:2])
    else:
        b_x, b_h = blocks(bias[None, :]), None
    kernel, recurrent_kernel = params["kernel"], params["recurrent_kernel"]
    if layer.compute_dtype is not None:  # cast once, outside the loop; biases stay as stored
        kernel, recurrent_kernel = (
            kernel.astype(layer.compute_dtype),
            recurrent_kernel.astype(layer.compute_dtype),
        )
    return {"W": blocks(kernel), "U": blocks(recurrent_kernel), "b_x": b_x, "b_h": b_h}


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` in ``a``'s dtype. When ``b`` holds a lower-precision compute dtype (bfloat16
    weights from ``gate_weights``), ``a`` is cast to it and the product accumulates in
    ``a``'s dtype: the carried state and every elementwise op stay in float32."""
    if b.dtype == a.dtype:
        return a @ b
    return jnp.matmul(a.astype(b.dtype), b, preferred_element_type=a.dtype)


def _affine(x: jax.Array, kernels: tuple, biases: tuple | None) -> tuple:
    if biases is None:
        return tuple(matmul(x, k) for k in kernels)
    return tuple(matmul(x, k) + b for k, b in zip(kernels, biases))


def input_projection(layer: GRU, w: dict, x: jax.Array) -> tuple:
    """``x W_g + b_x,g`` for g = z, r, h: ``x (batch, features)`` -> three ``(batch, u)``."""
    return _affine(x, w["W"], w["b_x"])


def recurrent_projection(layer: GRU, w: dict, h_in: jax.Array) -> tuple:
    """``h U_g + b_h,g`` for g = z, r, h when ``reset_after``, else ``(h U_z, h U_r)``: the
    candidate's ``(r ⊙ h) U_h`` needs ``r`` first. ``h_in (batch, u)`` -> ``(batch, u)`` each."""
    if layer.reset_after:
        return _affine(h_in, w["U"], w["b_h"])
    return _affine(h_in, w["U"][:2], None)


def gates(
    layer: GRU,
    w: dict,
    h_prev: jax.Array,
    h_in: jax.Array,
    x_proj: tuple,
    h_proj: tuple,
) -> GateValues:
    """The gates and the new state, given both projections.

    Args:
        w: from ``gate_weights``.
        h_prev: ``(batch, u)``, the carried state.
        h_in: ``(batch, u)``, ``h_prev`` times the recurrent dropout mask (or ``h_prev``).
        x_proj: ``input_projection(layer, w, x_t)``.
        h_proj: ``recurrent_projection(layer, w, h_in)``.
    """
    sigma = activations.get(layer.recurrent_activation)
    phi = activations.get(layer.activation)
    (x_z, x_r, x_h), (h_z, h_r) = x_proj, h_proj[:2]
    z_pre, r_pre = x_z + h_z, x_r + h_r
    r = sigma(r_pre)
    # reset_after: r scales h U_h + b_h,h; otherwise r scales h before its matmul.
    hh_pre = x_h + (r * h_proj[2] if layer.reset_after else matmul(r * h_in, w["U"][2]))
    z, hh = sigma(z_pre), phi(hh_pre)
    h = z * h_prev + (1 - z) * hh
    return GateValues(z_pre, r_pre, hh_pre, z, r, hh, h)


def cell(
    layer: GRU,
    w: dict,
    h_prev: jax.Array,
    x_proj: tuple,
    rec_mask: jax.Array | None,
) -> GateValues:
    """One whole step from ``h_prev (batch, u)`` and ``x_proj = input_projection(...)``.

    ``rec_mask (batch, u)`` is the recurrent dropout mask, applied to ``h_prev`` inside the gate
    terms only (the carried state in ``z ⊙ h_prev`` is not masked), or ``None``.
    """
    h_in = h_prev if rec_mask is None else h_prev * rec_mask
    h_proj = recurrent_projection(layer, w, h_in)
    return gates(layer, w, h_prev, h_in, x_proj, h_proj)
