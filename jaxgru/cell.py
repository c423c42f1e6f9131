r"""One GRU step, exactly as Keras 3 computes it: the cell spec and the equations, once.

Notation (Keras's): ``W = kernel (input_dim, 3u)``, ``U = recurrent_kernel (u, 3u)``, both
with column blocks ``[z | r | h]``; ``σ = recurrent_activation`` (default sigmoid),
``φ = activation`` (default tanh), ``⊙`` the elementwise product.

``reset_after=True`` (Keras default), ``bias (2, 3u)``: row 0 is the input bias ``b_x``,
row 1 the recurrent bias ``b_h``::

    z  = σ(x W_z + b_x,z + h_prev U_z + b_h,z)
    r  = σ(x W_r + b_x,r + h_prev U_r + b_h,r)
    h~ = φ(x W_h + b_x,h + r ⊙ (h_prev U_h + b_h,h))
    h  = z ⊙ h_prev + (1 − z) ⊙ h~

``reset_after=False``, ``bias (3u,)``, no recurrent bias::

    z  = σ(x W_z + h_prev U_z + b_z)
    r  = σ(x W_r + h_prev U_r + b_r)
    h~ = φ(x W_h + (r ⊙ h_prev) U_h + b_h)
    h  = z ⊙ h_prev + (1 − z) ⊙ h~

``use_bias=False`` drops every bias term and the ``bias`` entry.

Note the update: ``z`` keeps the *old* state (Cho et al. 2014). Wikipedia's form,
``(1 − z) ⊙ h_prev + z ⊙ h~``, is the same model with ``z`` inverted, not Keras's numbers.

A step is split where the hand-written backward pass (``jaxgru.recurrence``) needs to see
inside it: the two projections (matmuls) and the gates (elementwise, except the
``(r ⊙ h) U_h`` matmul of ``reset_after=False``). This module knows one step; time, masks and
direction belong to ``jaxgru.recurrence``. It imports nothing else of jaxgru's but the
activation and initializer tables.

>>> import jax, jax.numpy as jnp
>>> spec = CellSpec(5)
>>> params = spec.init(jax.random.key(0), input_dim=3)
>>> w = gate_weights(spec, params)
>>> h = jnp.zeros((2, 5))
>>> step(spec, w, h, input_projection(spec, w, jnp.ones((2, 3)))).h.shape
(2, 5)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxgru import activations, initializers

# ``None`` computes in the params' dtype. float16 is left out: its narrow exponent needs loss
# scaling to keep small cotangents from underflowing, which jaxgru does not do.
COMPUTE_DTYPES = (None, "bfloat16")


@dataclass(frozen=True)
class CellSpec:
    """What one GRU step computes: hashable, so it is static under ``jax.jit``.

    Attributes:
        units: ``u``, the state size.
        reset_after: Keras's ``reset_after`` (where ``r`` applies, and the bias layout).
        use_bias: whether the ``bias`` entry exists.
        activation, recurrent_activation: ``φ`` and ``σ`` (Keras names or callables).
        compute_dtype: ``"bfloat16"`` runs every matmul with bfloat16 inputs, accumulating
            in the params' dtype; ``None`` computes in the params' dtype.
    """

    units: int
    reset_after: bool = True
    use_bias: bool = True
    activation: str | Callable | None = "tanh"
    recurrent_activation: str | Callable | None = "sigmoid"
    compute_dtype: str | None = None

    @property
    def weight_names(self) -> tuple[str, ...]:
        """Parameter names in ``keras.layers.GRU.get_weights()`` order."""
        return ("kernel", "recurrent_kernel", "bias")[: 3 if self.use_bias else 2]

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """``{"kernel": (input_dim, 3u), "recurrent_kernel": (u, 3u), "bias": (2, 3u)}``
        (``bias (3u,)`` when not ``reset_after``; none without ``use_bias``)."""
        u = self.units
        shapes = {"kernel": (input_dim, 3 * u), "recurrent_kernel": (u, 3 * u)}
        if self.use_bias:
            shapes["bias"] = (2, 3 * u) if self.reset_after else (3 * u,)
        return shapes

    def init(
        self,
        key: jax.Array,
        input_dim: int,
        dtype: Any = jnp.float32,
        initializer_names: tuple = ("glorot_uniform", "orthogonal", "zeros"),
    ) -> dict[str, jax.Array]:
        """Draw ``{"kernel", "recurrent_kernel", "bias"}`` with the (kernel, recurrent,
        bias) initializers; the orthogonal one spans the whole ``(u, 3u)``, as Keras."""
        shapes = self.param_shapes(input_dim)
        keys = jax.random.split(key, len(shapes))
        return {
            name: initializers.get(init)(k, shape, dtype)
            for k, (name, shape), init in zip(keys, shapes.items(), initializer_names)
        }

    def has_output_derivatives(self) -> bool:
        """Whether both activations' derivatives are functions of their outputs, which the
        hand-written backward pass needs (``activations.derivative_from_output``)."""
        return all(
            activations.derivative_from_output(a) is not None
            for a in (self.activation, self.recurrent_activation)
        )


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


class GateWeights(NamedTuple):
    """The Keras arrays laid out for the step (``gate_weights``).

    ``W``: ``(W_z, W_r, W_h)`` each ``(features, u)``, or ``(W,)`` ``(features, 3u)`` fused.
    ``U``: ``(U_z, U_r, U_h)`` each ``(u, u)``; fused: ``(U,)`` ``(u, 3u)`` when
    ``reset_after``, else ``(U_zr (u, 2u), U_h (u, u))``. ``b_x``, ``b_h``: three ``(1, u)``
    rows each, or ``None`` (``b_h`` is ``None`` unless ``reset_after`` and ``use_bias``).
    ``precision``: the ``jax.lax`` matmul precision (a name or ``None``).
    """

    W: tuple
    U: tuple
    b_x: tuple | None
    b_h: tuple | None
    precision: str | None = None

    @property
    def fused(self) -> bool:
        return len(self.W) == 1


def _blocks(a: jax.Array, units: int) -> tuple:
    """``(..., 3u)`` -> three ``(..., u)`` column blocks z | r | h."""
    return tuple(a[..., g * units : (g + 1) * units] for g in range(3))


def gate_weights(
    spec: CellSpec, params: dict, fused: bool = False, precision: str | None = None
) -> GateWeights:
    """The Keras arrays of ``params`` split per gate (or kept whole, ``fused``).

    The kernels are cast to ``spec.compute_dtype`` here, once, outside any loop; the biases
    stay as stored.
    """
    u = spec.units
    bias = params.get("bias") if spec.use_bias else None
    if bias is None:
        b_x = b_h = None
    elif spec.reset_after:
        b_x, b_h = _blocks(bias[0:1], u), _blocks(bias[1:2], u)
    else:
        b_x, b_h = _blocks(bias[None, :], u), None
    kernel, recurrent_kernel = params["kernel"], params["recurrent_kernel"]
    if spec.compute_dtype is not None:
        kernel = kernel.astype(spec.compute_dtype)
        recurrent_kernel = recurrent_kernel.astype(spec.compute_dtype)
    if not fused:
        return GateWeights(_blocks(kernel, u), _blocks(recurrent_kernel, u), b_x, b_h, precision)
    U = (recurrent_kernel,) if spec.reset_after else (recurrent_kernel[:, : 2 * u],
                                                      recurrent_kernel[:, 2 * u :])  # fmt: skip
    return GateWeights((kernel,), U, b_x, b_h, precision)


def matmul(a: jax.Array, b: jax.Array, precision: str | None = None) -> jax.Array:
    """``a @ b`` in ``a``'s dtype. When ``b`` holds a lower-precision compute dtype (bfloat16
    weights from ``gate_weights``), ``a`` is cast to it and the product accumulates in
    ``a``'s dtype: the carried state and every elementwise op stay in float32."""
    if b.dtype == a.dtype:
        return jnp.matmul(a, b, precision=precision)
    return jnp.matmul(a.astype(b.dtype), b, precision=precision, preferred_element_type=a.dtype)


def _add_biases(values: tuple, biases: tuple | None) -> tuple:
    """``values[g] (..., u) + biases[g] (1, u)``, the rank made explicit (strict promotion)."""
    if biases is None:
        return values
    return tuple(v + b.reshape((1,) * (v.ndim - 1) + b.shape[-1:]) for v, b in zip(values, biases))


def input_projection(spec: CellSpec, w: GateWeights, x: jax.Array) -> tuple:
    """``x W_g + b_x,g`` for g = z, r, h: ``x (..., features)`` -> three ``(..., u)``.

    ``x`` may hold every step at once, ``(time, batch, features)``, to project before a loop.
    """
    if w.fused:
        values = _blocks(matmul(x, w.W[0], w.precision), spec.units)
    else:
        values = tuple(matmul(x, k, w.precision) for k in w.W)
    return _add_biases(values, w.b_x)


def recurrent_projection(spec: CellSpec, w: GateWeights, h_in: jax.Array) -> tuple:
    """``h U_g + b_h,g`` for g = z, r, h when ``reset_after``, else ``(h U_z, h U_r)``: the
    candidate's ``(r ⊙ h) U_h`` needs ``r`` first. ``h_in (batch, u)`` -> ``(batch, u)`` each."""
    u = spec.units
    if w.fused:
        values = matmul(h_in, w.U[0], w.precision)
        return _add_biases(_blocks(values, u), w.b_h) if spec.reset_after else (
            values[..., :u], values[..., u:])  # fmt: skip
    if spec.reset_after:
        return _add_biases(tuple(matmul(h_in, k, w.precision) for k in w.U), w.b_h)
    return tuple(matmul(h_in, k, w.precision) for k in w.U[:2])


def candidate_kernel(w: GateWeights) -> jax.Array:
    """``U_h (u, u)``, the candidate's recurrent block (for ``reset_after=False``)."""
    return w.U[-1]


def gates(
    spec: CellSpec,
    w: GateWeights,
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
        x_proj: ``input_projection(spec, w, x_t)``.
        h_proj: ``recurrent_projection(spec, w, h_in)``.
    """
    sigma = activations.get(spec.recurrent_activation)
    phi = activations.get(spec.activation)
    (x_z, x_r, x_h), (h_z, h_r) = x_proj, h_proj[:2]
    z_pre, r_pre = x_z + h_z, x_r + h_r
    r = sigma(r_pre)
    # reset_after: r scales h U_h + b_h,h; otherwise r scales h before its matmul.
    if spec.reset_after:
        hh_pre = x_h + r * h_proj[2]
    else:
        hh_pre = x_h + matmul(r * h_in, candidate_kernel(w), w.precision)
    z, hh = sigma(z_pre), phi(hh_pre)
    h = z * h_prev + (1 - z) * hh
    return GateValues(z_pre, r_pre, hh_pre, z, r, hh, h)


def step(
    spec: CellSpec,
    w: GateWeights,
    h_prev: jax.Array,
    x_proj: tuple,
    rec_mask: jax.Array | None = None,
) -> GateValues:
    """One whole step from ``h_prev (batch, u)`` and ``x_proj = input_projection(...)``.

    ``rec_mask (batch, u)`` is the recurrent dropout mask, applied to ``h_prev`` inside the gate
    terms only (the carried state in ``z ⊙ h_prev`` is not masked), or ``None``.
    """
    h_in = h_prev if rec_mask is None else h_prev * rec_mask
    h_proj = recurrent_projection(spec, w, h_in)
    return gates(spec, w, h_prev, h_in, x_proj, h_proj)


def recurrent_projection_vjp(spec: CellSpec, w: GateWeights, d_rec: tuple) -> jax.Array:
    """The cotangent of ``h_in`` through ``recurrent_projection``: ``sum_g d_rec[g] U_g^T``.

    ``d_rec``: the cotangents of its outputs, ``(batch, u)`` each (three when
    ``reset_after``, two otherwise).
    """
    if w.fused:
        return matmul(jnp.concatenate(d_rec, axis=-1), w.U[0].T, w.precision)
    return sum(matmul(d, k.T, w.precision) for d, k in zip(d_rec, w.U))


def input_projection_vjp(w: GateWeights, d_pre: tuple) -> jax.Array:
    """The cotangent of ``x``: ``sum_g d_pre[g] W_g^T`` -> ``(..., features)``."""
    if w.fused:
        return matmul(jnp.concatenate(d_pre, axis=-1), w.W[0].T, w.precision)
    return sum(matmul(d, k.T, w.precision) for d, k in zip(d_pre, w.W))
