"""jaxgru.GRU against the float64 NumPy reference, plus scan == loop, jit == no-jit, errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru.execution import ExecutionOptions
from tests.helpers import FEATURES, GRID, MASKS, UNITS, Case, random_inputs, random_weights
from tests.reference import gru_reference


def _run_case(case: Case):
    layer = case.layer()
    weights = random_weights(layer, FEATURES)
    params = jaxgru.from_keras_weights(layer, weights)
    x, h0 = random_inputs()
    mask = MASKS[case.mask]
    h0 = h0 if case.initial_state else None
    out = layer.apply(params, x, initial_state=h0, mask=mask)
    ref = gru_reference(
        x, *weights[:2], weights[2] if layer.use_bias else None,
        reset_after=layer.reset_after, activation=layer.activation,
        recurrent_activation=layer.recurrent_activation, go_backwards=layer.go_backwards,
        mask=mask, initial_state=h0,
    )  # fmt: skip
    return layer, out, ref


@pytest.mark.parametrize("case", GRID, ids=str)
def test_apply_matches_reference(case: Case):
    layer, out, (ref_seq, ref_last, ref_state) = _run_case(case)
    if layer.return_state:
        out, state = out
        np.testing.assert_allclose(state, ref_state, atol=1e-5, rtol=1e-5)
    expected = ref_seq if layer.return_sequences else ref_last
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("unroll", [False, 3, True])
def test_scan_equals_loop_of_step_at_every_time_step(reset_after, unroll):
    layer = jaxgru.GRU(UNITS, reset_after=reset_after, return_sequences=True, unroll=unroll)
    params = jaxgru.from_keras_weights(layer, random_weights(layer, FEATURES, seed=3))
    x, h0 = random_inputs(seed=4)
    scanned = layer.apply(params, x, initial_state=h0)
    h = jnp.asarray(h0)
    for t in range(x.shape[1]):
        h = layer.step(params, h, x[:, t, :])
        np.testing.assert_allclose(scanned[:, t, :], h, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reset_after", [True, False])
def test_jit_equals_no_jit(reset_after):
    layer = jaxgru.GRU(UNITS, reset_after=reset_after, return_sequences=True, return_state=True)
    params = jaxgru.from_keras_weights(layer, random_weights(layer, FEATURES, seed=5))
    x, h0 = random_inputs(seed=6)
    mask = MASKS["right_padded"]
    eager = layer.apply(params, x, initial_state=h0, mask=mask)
    jitted = jax.jit(layer.apply)(params, x, initial_state=h0, mask=mask)
    static = jax.jit(jaxgru.GRU.apply, static_argnums=0)(layer, params, x, h0, mask)
    for a, b, c in zip(eager, jitted, static):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-6)


def test_unroll_true_keeps_keras_meaning_of_full_unroll():
    layer = jaxgru.GRU(UNITS, unroll=True, return_sequences=True)
    params = jaxgru.from_keras_weights(layer, random_weights(layer, FEATURES, seed=7))
    x, _ = random_inputs(seed=8)
    scan_text = jax.jit(layer.apply).lower(params, x).as_text()
    rolled_text = (
        jax.jit(dataclasses.replace(layer, unroll=False).apply).lower(params, x).as_text()
    )
    assert "while" in rolled_text
    assert "while" not in scan_text  # a full unroll leaves no loop
    ref = gru_reference(x, *random_weights(layer, FEATURES, seed=7))[0]
    np.testing.assert_allclose(layer.apply(params, x), ref, atol=1e-5)


def _dots(jaxpr) -> list:
    return [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]


def _scans(jaxpr) -> list:
    return [e for e in jaxpr.eqns if e.primitive.name == "scan"]


def _outer_scans(jaxpr) -> list:
    """Every scan not inside another scan, looking through jit and custom-VJP calls."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn)
            continue
        for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            inner = eqn.params.get(key)
            if inner is not None:
                found += _outer_scans(getattr(inner, "jaxpr", inner))
    return found


@pytest.mark.parametrize("reset_after", [True, False])
def test_weight_gradients_are_one_matmul_after_the_reverse_scan(reset_after):
    """Speed by construction (jaxgru.recurrence): the loops hold per-step, per-gate matmuls
    only; each weight gradient is one matmul over all time * batch rows, outside any loop."""
    # time 7: three chunks of 3 steps; the CPU layout (per step, per gate)
    options = ExecutionOptions(backward_chunk=3, backward_chunk_min_bytes=0)
    layer = jaxgru.GRU(UNITS, reset_after=reset_after, dropout=0.1, recurrent_dropout=0.1,
                       execution=options)  # fmt: skip
    params = layer.init(jax.random.key(0), FEATURES)
    x, _ = random_inputs()

    def loss(p):
        y = layer.apply(p, x, mask=MASKS["left_padded"], training=True, rng=jax.random.key(1))
        return (y**2).sum()

    jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
    # the custom VJP's forward and backward sit in nested calls
    forward, chunks = _outer_scans(jaxpr)  # the backward walks the time axis in chunks
    assert chunks.params["reverse"] and not forward.params["reverse"]
    chunk_body = chunks.params["jaxpr"].jaxpr
    (backward,) = _scans(chunk_body)
    assert backward.params["reverse"]
    # per gate and step: forward x_t W_g and h U_g (U_h after r ⊙ h without reset_after);
    # backward the three transposes of the recurrent matmuls.
    assert len(_dots(forward.params["jaxpr"].jaxpr)) == 6
    assert len(_dots(backward.params["jaxpr"].jaxpr)) == 3
    per_chunk = [e.outvars[0].aval.shape for e in _dots(chunk_body)]
    assert per_chunk.count((FEATURES, UNITS)) == 3  # d W_z, d W_r, d W_h over the chunk
    assert per_chunk.count((UNITS, UNITS)) == 3  # d U_z, d U_r, d U_h over the chunk


def test_init_draws_keras_defaults():
    layer = jaxgru.GRU(UNITS)
    params = layer.init(jax.random.key(0), input_dim=FEATURES)
    assert {k: v.shape for k, v in params.items()} == {
        "kernel": (FEATURES, 3 * UNITS),
        "recurrent_kernel": (UNITS, 3 * UNITS),
        "bias": (2, 3 * UNITS),
    }
    assert all(v.dtype == jnp.float32 for v in params.values())
    limit = np.sqrt(6.0 / (FEATURES + 3 * UNITS))  # glorot_uniform, Keras's fans
    assert np.abs(params["kernel"]).max() <= limit
    assert np.abs(params["kernel"]).max() > 0.5 * limit
    U = np.asarray(params["recurrent_kernel"], np.float64)  # orthogonal over the whole (u, 3u)
    np.testing.assert_allclose(U @ U.T, np.eye(UNITS), atol=1e-5)
    np.testing.assert_array_equal(params["bias"], 0.0)
    no_bias = jaxgru.GRU(UNITS, use_bias=False, reset_after=False).init(jax.random.key(0), 3)
    assert set(no_bias) == {"kernel", "recurrent_kernel"}
    before = jaxgru.GRU(UNITS, reset_after=False).init(jax.random.key(0), 3)
    assert before["bias"].shape == (3 * UNITS,)


@pytest.mark.parametrize("name", [*jaxgru.initializers.NAMES, "GlorotUniform", "normal"])
def test_every_initializer_name_initializes(name):
    layer = jaxgru.GRU(UNITS, kernel_initializer=name, recurrent_initializer=name)
    params = layer.init(jax.random.key(1), FEATURES)
    assert params["kernel"].shape == (FEATURES, 3 * UNITS)
    assert bool(jnp.all(jnp.isfinite(params["recurrent_kernel"])))


def test_init_is_deterministic_per_key():
    layer = jaxgru.GRU(UNITS)
    a, b = layer.init(jax.random.key(3), 4), layer.init(jax.random.key(3), 4)
    c = layer.init(jax.random.key(4), 4)
    np.testing.assert_array_equal(a["kernel"], b["kernel"])
    assert not np.allclose(a["kernel"], c["kernel"])
