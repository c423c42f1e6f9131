"""See inside a GRU: its weights as named gate blocks, and every gate at every step.

``blocks`` cuts Keras's three arrays into the blocks of the equations in ``jaxgru.gru``
(``W_z``, ``U_r``, ``b_x,h``...), each with the slice of the Keras array it came from.
``trace`` runs the layer's own ``scan`` (the code path of ``apply``) and keeps every step's
gates, so its final state is ``apply``'s, exactly.

>>> import jax, jaxgru
>>> layer = jaxgru.GRU(2)
>>> params = layer.init(jax.random.key(0), input_dim=3)
>>> {name: (b.source, b.value.shape) for name, b in blocks(layer, params).items()
...  if name.endswith("z")}
{'W_z': ('kernel[:, 0:2]', (3, 2)), 'U_z': ('recurrent_kernel[:, 0:2]', (2, 2)), \
'b_x,z': ('bias[0, 0:2]', (2,)), 'b_h,z': ('bias[1, 0:2]', (2,))}
>>> list(blocks(layer, params))
['W_z', 'W_r', 'W_h', 'U_z', 'U_r', 'U_h', 'b_x,z', 'b_x,r', 'b_x,h', 'b_h,z', 'b_h,r', 'b_h,h']
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgru.gru import GRU

GATES = "zrh"

EQUATIONS = {
    True: (
        "z  = σ(x_t W_z + b_x,z + h_prev U_z + b_h,z)",
        "r  = σ(x_t W_r + b_x,r + h_prev U_r + b_h,r)",
        "h~ = φ(x_t W_h + b_x,h + r ⊙ (h_prev U_h + b_h,h))",
        "h  = z ⊙ h_prev + (1 − z) ⊙ h~",
    ),
    False: (
        "z  = σ(x_t W_z + h_prev U_z + b_z)",
        "r  = σ(x_t W_r + h_prev U_r + b_r)",
        "h~ = φ(x_t W_h + (r ⊙ h_prev) U_h + b_h)",
        "h  = z ⊙ h_prev + (1 − z) ⊙ h~",
    ),
}


def equations(layer: GRU) -> list[str]:
    """The equations ``layer`` computes, in Keras symbols, with its activations named."""
    lines = list(EQUATIONS[layer.reset_after])
    if not layer.use_bias:
        for term in (" + b_x,z", " + b_h,z", " + b_x,r", " + b_h,r", " + b_x,h", " + b_h,h",
                     " + b_z", " + b_r", " + b_h"):  # fmt: skip
            lines = [line.replace(term, "") for line in lines]
    sigma, phi = activation_name(layer.recurrent_activation), activation_name(layer.activation)
    return [*lines, f"σ = {sigma}, φ = {phi}"]


def activation_name(activation) -> str:
    """An activation as Keras names it (``linear`` for ``None``)."""
    return "linear" if activation is None else getattr(activation, "__name__", str(activation))


class Block(NamedTuple):
    """One named block: its values and the slice of the Keras array it is (``kernel[:, 0:5]``)."""

    value: np.ndarray
    source: str


def blocks(layer: GRU, params: dict) -> dict[str, Block]:
    """The named blocks of a GRU's Keras arrays.

    Args:
        layer: the GRU.
        params: ``{"kernel": (input_dim, 3u), "recurrent_kernel": (u, 3u), "bias": ...}``.

    Returns:
        ``W_z, W_r, W_h`` ``(input_dim, u)``, ``U_z, U_r, U_h`` ``(u, u)``, then the biases
        ``(u,)``: ``b_x,z, b_h,z, ...`` (``reset_after=True``) or ``b_z, b_r, b_h``; none with
        ``use_bias=False``. Each is a ``Block(value, source)``.
    """
    u = layer.units
    cols = [(f"{i * u}:{(i + 1) * u}", slice(i * u, (i + 1) * u)) for i in range(3)]
    out: dict[str, Block] = {}
    for array, symbol in (("kernel", "W"), ("recurrent_kernel", "U")):
        value = np.asarray(params[array])
        for gate, (text, part) in zip(GATES, cols):
            out[f"{symbol}_{gate}"] = Block(value[:, part], f"{array}[:, {text}]")
    if not layer.use_bias:
        return out
    bias = np.asarray(params["bias"])
    rows = (("x", 0), ("h", 1)) if layer.reset_after else ((None, None),)
    for row, index in rows:
        for gate, (text, part) in zip(GATES, cols):
            if row is None:
                out[f"b_{gate}"] = Block(bias[part], f"bias[{text}]")
            else:
                out[f"b_{row},{gate}"] = Block(bias[index, part], f"bias[{index}, {text}]")
    return out


def assemble(layer: GRU, named: dict[str, Block | ArrayLike]) -> dict[str, np.ndarray]:
    """The inverse of ``blocks``: Keras's ``kernel``, ``recurrent_kernel`` and ``bias``."""

    def get(name):
        value = named[name]
        return np.asarray(value.value if isinstance(value, Block) else value)

    params = {
        "kernel": np.concatenate([get(f"W_{g}") for g in GATES], axis=1),
        "recurrent_kernel": np.concatenate([get(f"U_{g}") for g in GATES], axis=1),
    }
    if layer.use_bias and layer.reset_after:
        rows = [np.concatenate([get(f"b_{row},{g}") for g in GATES]) for row in "xh"]
        params["bias"] = np.stack(rows)
    elif layer.use_bias:
        params["bias"] = np.concatenate([get(f"b_{g}") for g in GATES])
    return params


class Trace(NamedTuple):
    """Every step of one pass, in the order the GRU consumed the sequence.

    ``order (time,)``: the time index read at each step (``T-1 … 0`` with ``go_backwards``).
    ``x (time, batch, features)``: the input read at each step. ``skipped (time, batch)``:
    True where the mask skipped the step (the state is carried unchanged).
    ``z_pre, r_pre, hh_pre`` and ``z, r, hh`` (``hh`` is ``h~``): ``(time, batch, units)``,
    computed at every step, skipped or not. ``h (time, batch, units)``: the state after each
    step. ``output (time, batch, units)``: what ``apply`` returns at each step.
    ``h0`` and ``final_state``: ``(batch, units)``.
    """

    order: np.ndarray
    x: jax.Array
    skipped: jax.Array
    z_pre: jax.Array
    r_pre: jax.Array
    hh_pre: jax.Array
    z: jax.Array
    r: jax.Array
    hh: jax.Array
    h: jax.Array
    output: jax.Array
    h0: jax.Array
    final_state: jax.Array


def trace(
    layer: GRU,
    params: dict,
    x: ArrayLike,
    initial_state: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> Trace:
    """Run ``layer`` over ``x`` (inference) and keep every gate of every step.

    Args:
        x: ``(batch, time, features)``.
        initial_state: ``(batch, units)``, default zeros.
        mask: ``(batch, time)`` bool.
    """
    result = layer.scan(params, x, initial_state, mask, collect_gates=True)
    x = jnp.asarray(x, result.state.dtype)
    batch, time = x.shape[:2]
    order = np.arange(time)[::-1] if layer.go_backwards else np.arange(time)
    keep = jnp.ones((batch, time), bool) if mask is None else jnp.asarray(mask, bool)
    h0 = jnp.zeros_like(result.state) if initial_state is None else jnp.asarray(initial_state)
    g = result.gates
    return Trace(
        order=order,
        x=jnp.swapaxes(x, 0, 1)[order],
        skipped=~keep.T[order],
        z_pre=g.z_pre, r_pre=g.r_pre, hh_pre=g.hh_pre, z=g.z, r=g.r, hh=g.hh,
        h=result.states,
        output=result.outputs,
        h0=h0.astype(result.state.dtype),
        final_state=result.state,
    )  # fmt: skip
