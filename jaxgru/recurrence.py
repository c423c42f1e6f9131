"""The pass over time: ``lax.scan`` of ``cell.step``, with a hand-written backward pass.

Every function here takes a ``cell.CellSpec`` (what one step computes) and an
``execution.ExecutionOptions`` (how the loop runs), never a layer: this module owns time,
masks and chunking, and imports only ``jaxgru.cell``, ``jaxgru.execution`` and
``jaxgru.onednn``. With ``options.kernel == "onednn"``, ``scan`` hands a pass that oneDNN
computes exactly (``onednn.refusal`` is ``None``) to ``onednn.sequence`` instead.

Two passes compute the same numbers with the same step functions:

- ``fused_scan`` has a custom VJP. Its forward scan saves each step's gate activations; its
  reverse scan is elementwise work plus the recurrent matmuls' transposes per step; the
  weight gradients are then one matmul per gate (or one fused) over each chunk of
  ``options.backward_chunk`` steps, instead of one small accumulation per step.
- ``autodiff_scan`` lets JAX differentiate the scan. It serves what the hand-written pass does
  not: ``collect_gates`` (all intermediates), activations whose derivative is not a function of
  their output (``activations.derivative_from_output``), and forward-mode autodiff.

Either can run in chunks under ``jax.checkpoint`` (``rematerialised``, for long sequences),
and both compute their matmuls in ``spec.compute_dtype`` when it is set (``cell.matmul``).
``options.input_projection`` says whether ``x_t W + b_x`` is computed per step inside the
loop or for all steps before it; the backward pass is the same for both.

The mask rule (``zero_output_for_mask``, Keras's): at a masked step the state is carried
unchanged and the output repeats the previous output, or is zero.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxgru import activations, onednn
from jaxgru.cell import (
    CellSpec,
    GateValues,
    GateWeights,
    candidate_kernel,
    gate_weights,
    gates,
    input_projection,
    input_projection_vjp,
    matmul,
    recurrent_projection,
    recurrent_projection_vjp,
)
from jaxgru.errors import ConfigError
from jaxgru.execution import ExecutionOptions


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
    """``xs (time, batch, features)`` in consumption order, ``h0 (batch, u)``, ``mask_tm
    (time, batch)`` bool or None, ``rec_mask (batch, u)`` or None."""

    xs: jax.Array
    h0: jax.Array
    mask_tm: jax.Array | None
    rec_mask: jax.Array | None


def uses_hand_written_backward(spec: CellSpec, options: ExecutionOptions) -> bool:
    """Whether ``scan`` differentiates through ``fused_scan``'s hand-written VJP."""
    if options.backward == "autodiff":
        return False
    if not spec.has_output_derivatives():
        if options.backward == "hand_written":
            raise ConfigError(
                f"ExecutionOptions(backward='hand_written') needs activations whose derivative "
                f"is a function of their output; {spec.activation!r} and "
                f"{spec.recurrent_activation!r} are not both such. Use backward='auto'"
            )
        return False
    return True


@partial(jax.jit, static_argnums=(0, 1, 4, 5))
def scan(
    spec: CellSpec,
    options: ExecutionOptions,
    params: dict,
    inputs: ScanInputs,
    zero_output_for_mask: bool = False,
    collect_gates: bool = False,
) -> ScanResult:
    """Run the cell over ``inputs.xs (time, batch, features)`` from ``inputs.h0``.

    ``params`` holds the Keras arrays (``spec.weight_names``). Uses ``fused_scan`` unless
    ``collect_gates`` or the options or activations need ``autodiff_scan``; with
    ``options.remat_chunk``, either runs in ``rematerialised`` chunks. Jitted with the spec
    and options static, so an eager call compiles once per spec, options and shapes.
    """
    xs, h0, mask_tm, rec_mask = inputs
    time = xs.shape[0]
    weights = {name: params[name] for name in spec.weight_names}
    if _onednn_serves(spec, options, inputs, collect_gates):
        threads = options.onednn_threads or 0
        outputs, state = onednn.sequence(spec.reset_after, threads, xs, h0, weights["kernel"],
                                         weights["recurrent_kernel"],
                                         onednn.bias_rows(spec, weights))  # fmt: skip
        return ScanResult(outputs, outputs[-1], state, None, None)
    if collect_gates:
        return autodiff_scan(spec, options, zero_output_for_mask, weights, xs, h0, None,
                             mask_tm, rec_mask, collect_gates=True)  # fmt: skip
    hand_written = uses_hand_written_backward(spec, options)

    def run(xs, h0, y0, mask_tm):  # -> (outputs, last_output, state)
        if hand_written:
            return fused_scan(spec, options, zero_output_for_mask, weights, xs, h0, y0,
                              mask_tm, rec_mask)  # fmt: skip
        return autodiff_scan(spec, options, zero_output_for_mask, weights, xs, h0, y0,
                             mask_tm, rec_mask)[:3]  # fmt: skip

    if options.remat_chunk is not None and time > options.remat_chunk:
        outputs, last_output, state = rematerialised(run, options.remat_chunk, xs, h0, mask_tm)
    else:
        outputs, last_output, state = run(xs, h0, jnp.zeros_like(h0), mask_tm)
    return ScanResult(outputs, last_output, state, None, None)


def _onednn_serves(spec, options, inputs: ScanInputs, collect_gates: bool = False) -> bool:
    xs, _, mask_tm, rec_mask = inputs
    refusal = onednn.refusal(
        spec, options, xs.dtype, masked=mask_tm is not None,
        recurrent_dropout=rec_mask is not None, collect_gates=collect_gates,
        time=xs.shape[0], batch=xs.shape[1],
    )  # fmt: skip
    return refusal is None


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


@partial(jax.jit, static_argnums=(0, 1, 4))
def scan_pair(
    spec: CellSpec,
    options: ExecutionOptions,
    params: tuple[dict, dict],
    inputs: tuple[ScanInputs, ScanInputs],
    zero_output_for_mask: bool = False,
) -> tuple[ScanResult, ScanResult]:
    """Both directions of a ``Bidirectional`` in one loop.

    The two weight sets and inputs are stacked on a leading axis of 2 and ``fused_scan`` is
    vmapped over it, so each step is one batched matmul per projection. The directions share
    ``spec``; ``inputs`` already carry each one's order in time. Needs
    ``uses_hand_written_backward(spec, options)``. Where oneDNN serves both directions,
    they are two oneDNN calls instead (``scan``).
    """
    if all(_onednn_serves(spec, options, i) for i in inputs):
        return tuple(
            scan(spec, options, p, i, zero_output_for_mask) for p, i in zip(params, inputs)
        )
    weights = [{name: p[name] for name in spec.weight_names} for p in params]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), *weights)
    xs, h0, mask_tm, rec_mask = jax.tree.map(lambda a, b: jnp.stack([a, b]), *inputs)
    outputs, last_output, state = jax.vmap(
        partial(fused_scan, spec, options, zero_output_for_mask)
    )(stacked, xs, h0, jnp.zeros_like(h0), mask_tm, rec_mask)
    return tuple(ScanResult(outputs[i], last_output[i], state[i], None, None) for i in (0, 1))


def gate_layout(spec: CellSpec, options: ExecutionOptions, params: dict) -> GateWeights:
    """``params``' Keras arrays laid out as ``options`` say (per gate or fused, with its
    matmul precision): the weights every step of a pass, and ``GRU.step``, use."""
    return gate_weights(spec, params, options.recurrent_matmul == "fused", options.precision)


def _loop_inputs(spec, options, w, xs):
    """What the loop reads per step: ``xs`` itself (projected inside), or all steps'
    ``x W_g + b_x,g`` computed before the loop, three ``(time, batch, u)``."""
    if options.input_projection == "hoisted":
        return input_projection(spec, w, xs)
    return xs


def _step(spec, options, zero_output, w, rec_mask, carry, x_t, keep):
    """One masked step: the new ``(h, y)`` carry, the gates and the recurrent projection."""
    h_prev, y_prev = carry
    h_in = h_prev if rec_mask is None else h_prev * rec_mask
    h_proj = recurrent_projection(spec, w, h_in)
    x_proj = x_t if options.input_projection == "hoisted" else input_projection(spec, w, x_t)
    g = gates(spec, w, h_prev, h_in, x_proj, h_proj)
    if keep is None:
        return (g.h, g.h), g, h_proj
    keep = keep[:, None]  # (batch, 1)
    skipped_output = jnp.zeros_like(y_prev) if zero_output else y_prev
    h = jnp.where(keep, g.h, h_prev)
    return (h, jnp.where(keep, g.h, skipped_output)), g, h_proj


def autodiff_scan(
    spec: CellSpec,
    options: ExecutionOptions,
    zero_output: bool,
    params: dict,
    xs: jax.Array,
    h0: jax.Array,
    y0: jax.Array | None,
    mask_tm: jax.Array | None,
    rec_mask: jax.Array | None,
    collect_gates: bool = False,
) -> ScanResult:
    """``lax.scan`` of ``_step``, differentiated by JAX; optionally keeps every step's gates.
    ``y0 (batch, u)`` is the output a masked first step repeats (zeros when ``None``)."""
    w = gate_layout(spec, options, params)

    def body(carry, step_inputs):
        carry, g, _ = _step(spec, options, zero_output, w, rec_mask, carry, *step_inputs)
        return carry, (carry[1], (g, carry[0]) if collect_gates else None)

    init = (h0, jnp.zeros_like(h0) if y0 is None else y0)
    unroll = options.unroll_factor(xs.shape[0], training=True)
    (state, last_output), (outputs, collected) = jax.lax.scan(
        body, init, (_loop_inputs(spec, options, w, xs), mask_tm), unroll=unroll
    )
    gate_values, states = collected if collect_gates else (None, None)
    return ScanResult(outputs, last_output, state, gate_values, states)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def fused_scan(spec, options, zero_output, weights, xs, h0, y0, mask_tm, rec_mask):
    """``(outputs (time, batch, u), last_output (batch, u), state (batch, u))``.

    ``weights`` holds the Keras arrays only (``spec.weight_names``); ``y0 (batch, u)`` is the
    output a masked first step repeats (zeros for a whole sequence; the previous chunk's last
    output for a chunk); the other arguments are those of ``autodiff_scan``. Undifferentiated
    it runs at ``options``' inference unroll, under ``jax.vjp`` at the training one.
    """
    args = (weights, xs, h0, y0, mask_tm, rec_mask)
    return _fused_forward(spec, options, zero_output, *args, training=False)[0]


def _fused_forward(spec, options, zero_output, weights, xs, h0, y0, mask_tm, rec_mask,
                   training=True):  # fmt: skip
    """The forward scan, saving ``(z, r, hh)`` per step, and ``h U_h + b_h,h`` when
    ``reset_after``: ``(time, batch, u)`` arrays."""
    w = gate_layout(spec, options, weights)

    def body(carry, step_inputs):
        carry, g, h_proj = _step(spec, options, zero_output, w, rec_mask, carry, *step_inputs)
        saved = (g.z, g.r, g.hh) + ((h_proj[2],) if spec.reset_after else ())
        states = (carry[0],) if mask_tm is not None else ()  # else the outputs are the states
        return carry, (carry[1], saved, *states)

    unroll = options.unroll_factor(xs.shape[0], training=training)
    (state, last_output), (outputs, saved, *states) = jax.lax.scan(
        body, (h0, y0), (_loop_inputs(spec, options, w, xs), mask_tm), unroll=unroll
    )
    states = states[0] if states else outputs
    residuals = (weights, xs, h0, mask_tm, rec_mask, states, saved)
    return (outputs, last_output, state), residuals


def _fused_backward(spec, options, zero_output, residuals, cotangents):
    """Reverse scan for the cotangents of ``h_prev`` and of each gate's pre-activation; the
    weight gradients are matmuls over each chunk of ``options.backward_chunk`` steps (one
    chunk for short, small sequences).

    The time axis is walked in chunks, last chunk first, so the per-step cotangents live in
    small buffers that the loop reuses: one ``(time, batch, u)`` buffer per gate measured
    slower at L, where it costs tens of thousands of page faults per step of training.
    """
    weights, xs, h0, mask_tm, rec_mask, states, saved = residuals
    d_outputs, d_last_output, d_state = cotangents
    w = gate_layout(spec, options, weights)
    time = xs.shape[0]
    # n chunks of equal length; the first one starts `pad` steps before t = 0, and those
    # steps are inactive, so one loop body serves every chunk (one compilation).
    n_chunks = options.backward_chunks(time, d_state.size * time * d_state.dtype.itemsize)
    chunk = -(-time // n_chunks)
    pad = n_chunks * chunk - time
    per_step = (xs, saved, mask_tm, d_outputs)
    backward_step = partial(_backward_step, spec, zero_output, w, rec_mask)
    unroll = options.unroll_factor(time, training=True)

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
            backward_step,
            (d_h, d_y),
            (saved_c, h_prevs, mask_c, d_out_c, active),
            reverse=True,
            unroll=unroll,
        )
        grads = _weight_grads(spec, w, rec_mask, xs_c, h_prevs, saved_c[1], d_pre)
        d_weights = jax.tree.map(jnp.add, d_weights, grads)
        return (d_h, d_y, d_weights), input_projection_vjp(w, d_pre)  # (chunk, batch, f)

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


def _backward_step(spec, zero_output, w, rec_mask, carry, step_inputs):
    """One step back: ``(d_h, d_y)`` -> the previous step's, and ``(d z_pre, d r_pre,
    d hh_pre)``, each ``(batch, u)``. ``active`` (a bool scalar, or None for always) marks the
    real steps of a chunk."""
    d_h = carry[0]  # carry: the cotangents of the carried state and of the output carry
    saved_t, h_prev, keep, d_output, active = step_inputs
    z, r, hh = saved_t[:3]
    sigma_prime = activations.derivative_from_output(spec.recurrent_activation)
    phi_prime = activations.derivative_from_output(spec.activation)
    d_y = carry[1] + d_output
    if keep is None:
        d_new, d_h_skipped, d_y_prev = d_h + d_y, 0.0, jnp.zeros_like(d_y)
    else:
        keep = keep[:, None]
        d_new = jnp.where(keep, d_h + d_y, 0.0)
        d_h_skipped = jnp.where(keep, 0.0, d_h)
        d_y_prev = jnp.zeros_like(d_y) if zero_output else jnp.where(keep, 0.0, d_y)
    h_in = h_prev if rec_mask is None else h_prev * rec_mask
    d_z_pre = d_new * (h_prev - hh) * sigma_prime(z)
    d_hh_pre = d_new * (1 - z) * phi_prime(hh)
    if spec.reset_after:  # hh_pre = x_h + r ⊙ (h U_h + b_h,h)
        d_r_pre = d_hh_pre * saved_t[3] * sigma_prime(r)
        d_h_in = recurrent_projection_vjp(spec, w, (d_z_pre, d_r_pre, d_hh_pre * r))
    else:  # hh_pre = x_h + (r ⊙ h) U_h
        d_rh = matmul(d_hh_pre, candidate_kernel(w).T, w.precision)
        d_r_pre = d_rh * h_in * sigma_prime(r)
        d_h_in = recurrent_projection_vjp(spec, w, (d_z_pre, d_r_pre)) + d_rh * r
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


def _weight_grads(spec, w, rec_mask, xs, h_prevs, r, d_pre) -> dict:
    """The Keras arrays' gradients from a run of steps: ``xs (n, batch, features)``,
    ``h_prevs (n, batch, u)``, ``r (n, batch, u)`` and ``d_pre``, the three gates'
    pre-activation cotangents ``(n, batch, u)``: one matmul per gate and array, or, with the
    fused layout, one per array and input."""
    # Each gate's pre-activation is x W_g + (its recurrent term): d_pre[g] flows to W_g and
    # b_x,g as is, and to U_g through the recurrent term's input and scale.
    h_ins = h_prevs if rec_mask is None else h_prevs * rec_mask[None]

    def over_steps(inputs, ds):  # (n, batch, in) x k of (n, batch, u) -> (in, k u)
        def one(d):
            dtype = spec.compute_dtype or d.dtype  # accumulated in d's dtype either way
            return jnp.einsum("tbi,tbk->ik", inputs.astype(dtype), d.astype(dtype),
                              precision=w.precision, preferred_element_type=d.dtype)  # fmt: skip

        if w.fused:
            return one(jnp.concatenate(ds, axis=-1))
        return jnp.concatenate([one(d) for d in ds], axis=-1)

    if spec.reset_after:  # d(h U_h + b_h,h) = d hh_pre ⊙ r, with input h
        d_rec = (d_pre[0], d_pre[1], d_pre[2] * r)
        recurrent = over_steps(h_ins, d_rec)
    else:  # d((r ⊙ h) U_h) = d hh_pre, with input r ⊙ h
        d_rec = d_pre
        recurrent = jnp.concatenate(
            [over_steps(h_ins, d_pre[:2]), over_steps(r * h_ins, d_pre[2:])], axis=-1
        )
    grads = {"kernel": over_steps(xs, d_pre), "recurrent_kernel": recurrent}
    if spec.use_bias:
        d_b_x = jnp.concatenate([d.sum(axis=(0, 1)) for d in d_pre])
        d_b_h = jnp.concatenate([d.sum(axis=(0, 1)) for d in d_rec])
        grads["bias"] = jnp.stack([d_b_x, d_b_h]) if spec.reset_after else d_b_x
    return grads


fused_scan.defvjp(_fused_forward, _fused_backward)
