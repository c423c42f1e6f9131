"""The pass over time: ``lax.scan`` of ``cell`` steps, with a hand-written backward pass.

Two passes compute the same numbers with the same step functions (``jaxgru.cell``):

- ``fused_scan`` has a custom VJP. Its forward scan saves each step's gate activations; its
  reverse scan is elementwise work plus one ``(batch, u) @ (u, u)`` matmul per gate and step;
  the weight gradients are then one matmul per gate over each chunk of ``BACKWARD_CHUNK``
  steps (``chunk * batch`` rows), instead of one small accumulation per step.
- ``autodiff_scan`` lets JAX differentiate the scan. It serves what the hand-written pass does
  not: ``collect_gates`` (all intermediates), activations whose derivative is not a function of
  their output (``activations.derivative_from_output``), and forward-mode autodiff.

Either can run in chunks under ``jax.checkpoint`` (``rematerialised``, for long sequences),
and both compute their matmuls in ``layer.compute_dtype`` when it is set (``cell.matmul``).

Both read ``xs`` one step at a time and project it *inside* the loop (``x_t W + b_x``). On the
XLA CPU backend this measured about 2x faster than one projection matmul before the loop: a
loop-fusion that slices a precomputed ``(time, batch, 3u)`` buffer is not vectorized, so its
``exp``/``tanh`` run one element at a time (the README's Speed section has the numbers).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from jaxgru import activations
from jaxgru.cell import (
    GateValues,
    gate_weights,
    gates,
    input_projection,
    matmul,
    recurrent_projection,
)

if TYPE_CHECKING:
    from jaxgru.gru import GRU


class ScanResult(NamedTuple):
    """What one pass over a sequence produces, in consumption order (time-major).

    ``outputs (time, batch, units)``; ``last_output (batch, units)``; ``state (batch, units)``;
    ``gates``: a ``GateValues`` of ``(time, batch, units)`` arrays, or ``None``;
    ``states (time, batch, units)``: the state carried after each step (``h_prev`` again at a
    masked step), or ``None``. ``gates`` and ``states`` come with ``collect_gates=True``.
    """

    outputs: jax.Array
    last_output: jax.Array
    state: jax.Array
    gates: GateValues | None
    states: jax.Array | None = None


class ScanInputs(NamedTuple):
    """``GRU.scan_inputs``: ``xs (time, batch, features)`` in consumption order, ``h0 (batch,
    u)``, ``mask_tm (time, batch)`` bool or None, ``rec_mask (batch, u)`` or None."""

    xs: jax.Array
    h0: jax.Array
    mask_tm: jax.Array | None
    rec_mask: jax.Array | None


def scan(
    layer: GRU,
    params: dict,
    xs: jax.Array,
    h0: jax.Array,
    mask_tm: jax.Array | None,
    rec_mask: jax.Array | None,
    collect_gates: bool = False,
) -> ScanResult:
    """Run ``layer`` over ``xs (time, batch, features)`` from ``h0 (batch, u)``.

    ``mask_tm (time, batch)`` bool or None; ``rec_mask (batch, u)`` or None. Uses
    ``fused_scan`` unless ``collect_gates`` or an activation needs ``autodiff_scan``; with
    ``layer.remat_chunk``, either runs in ``rematerialised`` chunks.
    """
    time = xs.shape[0]
    if collect_gates:
        unroll = unroll_factor(layer, time, training=True)
        return autodiff_scan(layer, unroll, params, xs, h0, None, mask_tm, rec_mask, True)
    weights = _keras_arrays(layer, params)

    def run(xs, h0, y0, mask_tm):  # -> (outputs, last_output, state)
        steps = xs.shape[0]
        if has_fused_backward(layer):
            return fused_scan(layer, _fused_unroll(layer, steps), weights, xs, h0, y0, mask_tm,
                              rec_mask)  # fmt: skip
        unroll = unroll_factor(layer, steps, training=True)
        return autodiff_scan(layer, unroll, weights, xs, h0, y0, mask_tm, rec_mask)[:3]

    if layer.remat_chunk is not None and time > layer.remat_chunk:
        outputs, last_output, state = rematerialised(run, layer.remat_chunk, xs, h0, mask_tm)
    else:
        outputs, last_output, state = run(xs, h0, jnp.zeros_like(h0), mask_tm)
    return ScanResult(outputs, last_output, state, None, None)


def rematerialised(run, chunk: int, xs, h0, mask_tm):
    """``run`` over ``xs (time, batch, features)`` in chunks of ``chunk`` steps, each under
    ``jax.checkpoint``: the backward pass saves only the ``(h, y)`` carry between chunks and
    recomputes one chunk's forward at a time.

    ``run(xs_k, h, y, mask_k) -> (outputs, last_output, state)`` is one chunk's pass. The
    chunks are equal in length (one compilation): when ``chunk`` does not divide ``time``,
    the first one starts with masked steps, which carry ``h0`` through unchanged.
    """
    time, batch = xs.shape[:2]
    n_chunks = -(-time // chunk)
    pad = n_chunks * chunk - time
    if pad:
        xs = jnp.concatenate([jnp.zeros((pad, *xs.shape[1:]), xs.dtype), xs])
        real = jnp.ones((time, batch), bool) if mask_tm is None else mask_tm
        mask_tm = jnp.concatenate([jnp.zeros((pad, batch), bool), real])

    def split(a):  # (n_chunks * chunk, ...) -> (n_chunks, chunk, ...)
        return a.reshape(n_chunks, chunk, *a.shape[1:])

    @jax.checkpoint
    def body(carry, chunk_inputs):
        (h, y), (xs_k, mask_k) = carry, chunk_inputs
        outputs, last_output, state = run(xs_k, h, y, mask_k)
        return (state, last_output), outputs

    chunks = (split(xs), None if mask_tm is None else split(mask_tm))
    (state, last_output), outputs = jax.lax.scan(body, (h0, jnp.zeros_like(h0)), chunks)
    outputs = outputs.reshape(n_chunks * chunk, *outputs.shape[2:])[pad:]
    return outputs, last_output, state


def _keras_arrays(layer: GRU, params: dict) -> dict:
    """The layer's own Keras arrays (``layer.weight_names``), nothing else from ``params``."""
    return {name: params[name] for name in layer.weight_names}


def _fused_unroll(layer: GRU, time: int) -> tuple[int, int]:
    """``fused_scan``'s ``unroll``: (factor without autodiff, factor under autodiff)."""
    return unroll_factor(layer, time, training=False), unroll_factor(layer, time, training=True)


def scan_pair(
    layer: GRU, params: tuple[dict, dict], inputs: tuple[ScanInputs, ScanInputs]
) -> tuple[ScanResult, ScanResult]:
    """Both directions of a ``Bidirectional`` in one loop.

    The two weight sets and inputs are stacked on a leading axis of 2 and ``fused_scan`` is
    vmapped over it, so each step is one batched matmul per projection. ``layer`` is either
    direction: they differ only in ``go_backwards``, which ``inputs`` already carry. Needs
    ``has_fused_backward(layer)``.
    """
    weights = [_keras_arrays(layer, p) for p in params]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), *weights)
    stacked_inputs = jax.tree.map(lambda a, b: jnp.stack([a, b]), *inputs)
    unroll = _fused_unroll(layer, inputs[0].xs.shape[0])
    xs, h0, mask_tm, rec_mask = stacked_inputs
    outputs, last_output, state = jax.vmap(partial(fused_scan, layer, unroll))(
        stacked, xs, h0, jnp.zeros_like(h0), mask_tm, rec_mask
    )
    return tuple(ScanResult(outputs[i], last_output[i], state[i], None, None) for i in (0, 1))


def has_fused_backward(layer: GRU) -> bool:
    """Whether both activations have a derivative in terms of their output."""
    return all(
        activations.derivative_from_output(a) is not None
        for a in (layer.activation, layer.recurrent_activation)
    )


# ``unroll=False`` (Keras's default) picks these. ``python experiments/benchmark.py --tune
# unroll`` on the 2-core CPU (docs/results/tuning.md): 1 trained fastest at S and M (2 was 25%
# slower at M) and within noise of the best at L; for inference the factors were within noise
# of each other at S and M, and 4 was 10% faster than 1 at L in one of two runs.
AUTO_UNROLL = {"train": 1, "inference": 4}


# Steps per chunk of the backward pass (see _fused_backward), used when one gate's
# (time, batch, u) cotangents would take at least BACKWARD_CHUNK_MIN_BYTES.
# ``python experiments/benchmark.py --tune chunk`` on the 2-core CPU (docs/results/tuning.md):
# at L (26 MB per gate) the whole sequence at once trained 13% slower than chunks of 16; at M
# (3.3 MB) chunks of 8 to 32 were within 3% of each other and of no chunking; at S (0.2 MB)
# chunks were slower and only added compilation.
BACKWARD_CHUNK = 16
BACKWARD_CHUNK_MIN_BYTES = 1 << 20


def unroll_factor(layer: GRU, time: int, training: bool = True) -> int:
    """``lax.scan``'s unroll: the layer's int, all steps for ``True``, else ``AUTO_UNROLL``."""
    if layer.unroll is True:
        return max(time, 1)
    factor = (
        AUTO_UNROLL["train" if training else "inference"]
        if layer.unroll is False
        else layer.unroll
    )
    return max(min(int(factor), time), 1)


def _step(layer, w, rec_mask, carry, x_t, keep):
    """One masked step: the new ``(h, y)`` carry, the gates and the recurrent projection."""
    h_prev, y_prev = carry
    h_in = h_prev if rec_mask is None else h_prev * rec_mask
    h_proj = recurrent_projection(layer, w, h_in)
    g = gates(layer, w, h_prev, h_in, input_projection(layer, w, x_t), h_proj)
    if keep is None:
        return (g.h, g.h), g, h_proj
    keep = keep[:, None]  # (batch, 1)
    skipped_output = jnp.zeros_like(y_prev) if layer.zero_output_for_mask else y_prev
    h = jnp.where(keep, g.h, h_prev)
    return (h, jnp.where(keep, g.h, skipped_output)), g, h_proj


def autodiff_scan(
    layer, unroll, params, xs, h0, y0, mask_tm, rec_mask, collect_gates=False
) -> ScanResult:
    """``lax.scan`` of ``_step``, differentiated by JAX; optionally keeps every step's gates.
    ``y0 (batch, u)`` is the output a masked first step repeats (zeros when ``None``)."""
    w = gate_weights(layer, params)

    def body(carry, step_inputs):
        carry, g, _ = _step(layer, w, rec_mask, carry, *step_inputs)
        return carry, (carry[1], (g, carry[0]) if collect_gates else None)

    init = (h0, jnp.zeros_like(h0) if y0 is None else y0)
    (state, last_output), (outputs, collected) = jax.lax.scan(
        body, init, (xs, mask_tm), unroll=unroll
    )
    gate_values, states = collected if collect_gates else (None, None)
    return ScanResult(outputs, last_output, state, gate_values, states)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def fused_scan(layer, unroll, weights, xs, h0, y0, mask_tm, rec_mask):
    """``(outputs (time, batch, u), last_output (batch, u), state (batch, u))``.

    ``weights`` holds the layer's Keras arrays only (``layer.weight_names``); ``unroll`` is
    ``(factor without autodiff, factor under autodiff)``; ``y0 (batch, u)`` is the output a
    masked first step repeats (zeros for a whole sequence; the previous chunk's last output
    for a chunk); the other arguments are those of ``scan``.
    """
    return _fused_forward(layer, unroll[:1], weights, xs, h0, y0, mask_tm, rec_mask)[0]


def _fused_forward(layer, unroll, weights, xs, h0, y0, mask_tm, rec_mask):
    """The forward scan, saving ``(z, r, hh)`` per step, and ``h U_h + b_h,h`` when
    ``reset_after``: ``(time, batch, u)`` arrays. ``unroll[-1]`` is its factor."""
    w = gate_weights(layer, weights)

    def body(carry, step_inputs):
        carry, g, h_proj = _step(layer, w, rec_mask, carry, *step_inputs)
        saved = (g.z, g.r, g.hh) + ((h_proj[2],) if layer.reset_after else ())
        states = (carry[0],) if mask_tm is not None else ()  # else the outputs are the states
        return carry, (carry[1], saved, *states)

    init = (h0, y0)
    (state, last_output), (outputs, saved, *states) = jax.lax.scan(
        body, init, (xs, mask_tm), unroll=unroll[-1]
    )
    states = states[0] if states else outputs
    residuals = (weights, xs, h0, mask_tm, rec_mask, states, saved)
    return (outputs, last_output, state), residuals


def _fused_backward(layer, unroll, residuals, cotangents):
    """Reverse scan for the cotangents of ``h_prev`` and of each gate's pre-activation; the
    weight gradients are one matmul per gate over each chunk of ``BACKWARD_CHUNK`` steps
    (one chunk for short, small sequences).

    The time axis is walked in chunks, last chunk first, so the per-step cotangents live in
    small buffers that the loop reuses: one ``(time, batch, u)`` buffer per gate measured
    slower at L, where it costs tens of thousands of page faults per step of training.
    """
    weights, xs, h0, mask_tm, rec_mask, states, saved = residuals
    d_outputs, d_last_output, d_state = cotangents
    w = gate_weights(layer, weights)
    time = xs.shape[0]
    # n chunks of equal length; the first one starts `pad` steps before t = 0, and those
    # steps are inactive, so one loop body serves every chunk (one compilation).
    gate_bytes = d_state.size * time * d_state.dtype.itemsize
    n_chunks = -(-time // BACKWARD_CHUNK) if gate_bytes >= BACKWARD_CHUNK_MIN_BYTES else 1
    chunk = -(-time // n_chunks)
    pad = n_chunks * chunk - time
    per_step = (xs, saved, mask_tm, d_outputs)

    def run_chunk(carry, k):
        """Steps ``[k * chunk - pad, (k + 1) * chunk - pad)`` in reverse, with
        ``carry = (d_h, d_y, d_weights)``; returns the chunk's input cotangents too."""
        d_h, d_y, d_weights = carry
        start = k * chunk - pad
        read = jnp.maximum(start, 0)  # chunk 0 reads [0, chunk): its last `pad` are inactive
        xs_c, saved_c, mask_c, d_out_c = jax.tree.map(
            lambda a: jax.lax.dynamic_slice_in_dim(a, read, chunk), per_step
        )
        active = (read + jnp.arange(chunk) < start + chunk) if pad else None
        before = jax.lax.dynamic_index_in_dim(states, jnp.maximum(read - 1, 0), keepdims=False)
        h_prev_first = jnp.where(read == 0, h0, before)
        states_c = jax.lax.dynamic_slice_in_dim(states, read, chunk)
        h_prevs = jnp.concatenate([h_prev_first[None], states_c[:-1]], axis=0)
        (d_h, d_y), d_pre = jax.lax.scan(
            partial(_backward_step, layer, w, rec_mask),
            (d_h, d_y),
            (saved_c, h_prevs, mask_c, d_out_c, active),
            reverse=True,
            unroll=unroll[-1],
        )
        grads = _weight_grads(layer, rec_mask, xs_c, h_prevs, saved_c[1], d_pre)
        d_weights = jax.tree.map(jnp.add, d_weights, grads)
        d_xs = sum(matmul(d, W_g.T) for d, W_g in zip(d_pre, w["W"]))  # (chunk, batch, features)
        return (d_h, d_y, d_weights), d_xs

    carry = (d_state, d_last_output, jax.tree.map(jnp.zeros_like, weights))
    if n_chunks == 1:
        (d_h0, d_y0, d_weights), d_xs = run_chunk(carry, 0)
    else:
        (d_h0, d_y0, d_weights), d_xs = jax.lax.scan(
            run_chunk, carry, jnp.arange(n_chunks), reverse=True
        )
        d_xs = d_xs.reshape((n_chunks * chunk, *xs.shape[1:]))
    if pad:  # drop chunk 0's inactive tail
        d_xs = jnp.concatenate([d_xs[: chunk - pad], d_xs[chunk:]], axis=0)
    return d_weights, d_xs, d_h0, d_y0, None, None


def _backward_step(layer, w, rec_mask, carry, step_inputs):
    """One step back: ``(d_h, d_y)`` -> the previous step's, and ``(d z_pre, d r_pre,
    d hh_pre)``, each ``(batch, u)``. ``active`` (a bool scalar, or None for always) marks the
    real steps of a chunk."""
    d_h = carry[0]  # carry: the cotangents of the carried state and of the output carry
    saved_t, h_prev, keep, d_output, active = step_inputs
    z, r, hh = saved_t[:3]
    U_z, U_r, U_h = w["U"]
    sigma_prime = activations.derivative_from_output(layer.recurrent_activation)
    phi_prime = activations.derivative_from_output(layer.activation)
    d_y = carry[1] + d_output
    if keep is None:
        d_new, d_h_skipped, d_y_prev = d_h + d_y, 0.0, jnp.zeros_like(d_y)
    else:
        keep = keep[:, None]
        d_new = jnp.where(keep, d_h + d_y, 0.0)
        d_h_skipped = jnp.where(keep, 0.0, d_h)
        d_y_prev = jnp.zeros_like(d_y) if layer.zero_output_for_mask else jnp.where(keep, 0.0, d_y)
    h_in = h_prev if rec_mask is None else h_prev * rec_mask
    d_z_pre = d_new * (h_prev - hh) * sigma_prime(z)
    d_hh_pre = d_new * (1 - z) * phi_prime(hh)
    if layer.reset_after:  # hh_pre = x_h + r ⊙ (h U_h + b_h,h)
        d_r_pre = d_hh_pre * saved_t[3] * sigma_prime(r)
        d_h_in = matmul(d_z_pre, U_z.T) + matmul(d_r_pre, U_r.T) + matmul(d_hh_pre * r, U_h.T)
    else:  # hh_pre = x_h + (r ⊙ h) U_h
        d_rh = matmul(d_hh_pre, U_h.T)
        d_r_pre = d_rh * h_in * sigma_prime(r)
        d_h_in = matmul(d_z_pre, U_z.T) + matmul(d_r_pre, U_r.T) + d_rh * r
    if rec_mask is not None:
        d_h_in = d_h_in * rec_mask
    d_h_prev = d_new * z + d_h_in + d_h_skipped
    d_pre = (d_z_pre, d_r_pre, d_hh_pre)
    if active is not None:  # a padding step before t = 0 changes nothing
        (d_h_prev, d_y_prev), d_pre = jax.tree.map(
            lambda new, old: jnp.where(active, new, old),
            ((d_h_prev, d_y_prev), d_pre),
            (carry, tuple(jnp.zeros_like(d) for d in d_pre)),
        )
    return (d_h_prev, d_y_prev), d_pre


def _weight_grads(layer, rec_mask, xs, h_prevs, r, d_pre) -> dict:
    """The Keras arrays' gradients from a run of steps: ``xs (n, batch, features)``,
    ``h_prevs (n, batch, u)``, ``r (n, batch, u)`` and ``d_pre``, the three gates'
    pre-activation cotangents ``(n, batch, u)``; one matmul per gate and array."""
    # Each gate's pre-activation is x W_g + (its recurrent term): d_pre[g] flows to W_g and
    # b_x,g as is, and to U_g through the recurrent term's input and scale.
    h_ins = h_prevs if rec_mask is None else h_prevs * rec_mask[None]
    if layer.reset_after:  # d(h U_h + b_h,h) = d hh_pre ⊙ r, with input h
        d_rec, rec_inputs = (d_pre[0], d_pre[1], d_pre[2] * r), (h_ins, h_ins, h_ins)
    else:  # d((r ⊙ h) U_h) = d hh_pre, with input r ⊙ h
        d_rec, rec_inputs = d_pre, (h_ins, h_ins, r * h_ins)

    def over_steps(inputs, d):  # (n, batch, in) x (n, batch, u) -> (in, u)
        dtype = layer.compute_dtype or d.dtype  # accumulated in d's dtype either way
        return jnp.einsum(
            "tbi,tbk->ik", inputs.astype(dtype), d.astype(dtype), preferred_element_type=d.dtype
        )

    grads = {
        "kernel": jnp.concatenate([over_steps(xs, d) for d in d_pre], axis=-1),
        "recurrent_kernel": jnp.concatenate(
            [over_steps(a, d) for a, d in zip(rec_inputs, d_rec)], axis=-1
        ),
    }
    if layer.use_bias:
        d_b_x = jnp.concatenate([d.sum(axis=(0, 1)) for d in d_pre])
        d_b_h = jnp.concatenate([d.sum(axis=(0, 1)) for d in d_rec])
        grads["bias"] = jnp.stack([d_b_x, d_b_h]) if layer.reset_after else d_b_x
    return grads


fused_scan.defvjp(_fused_forward, _fused_backward)
