"""The hand-written backward pass (recurrence.fused_scan) against JAX's autodiff of the same
scan, in float64, over every mode; Keras's gradients are tests/test_keras_parity.py's job."""

from __future__ import annotations

import itertools
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru import recurrence
from jaxgru.execution import ExecutionOptions
from tests.helpers import BATCH, FEATURES, MASKS, TIME, UNITS, random_inputs, random_weights

# time 7 in chunks of at most 3: three chunks of 3, the first starting 2 steps before t = 0
CHUNKED = ExecutionOptions(unroll=2, backward_chunk=3, backward_chunk_min_bytes=0)

MODES = [
    (reset_after, use_bias, mask, zero_output, dropout)
    for reset_after, use_bias, mask, zero_output, dropout in itertools.product(
        [True, False],  # reset_after
        [True, False],  # use_bias
        ["nomask", "masked"],  # masked: the three mask kinds, vmapped in one program
        [False, True],  # zero_output_for_mask
        [False, True],  # dropout and recurrent_dropout
    )
    # zero_output_for_mask only acts at masked steps: without a mask both values trace the
    # same program (test_zero_output_for_mask_is_ignored_without_a_mask checks it)
    if mask == "masked" or not zero_output
]


def _arguments(layer, seed):
    rng = np.random.default_rng(seed)
    weights = random_weights(layer, FEATURES, seed=seed)
    params = {n: jnp.asarray(w, jnp.float64) for n, w in zip(layer.weight_names, weights)}
    x, h0 = random_inputs(seed=seed + 1)
    xs = jnp.asarray(np.swapaxes(x, 0, 1), jnp.float64)
    rec_mask = jnp.asarray(rng.choice([0.0, 1.25], size=(BATCH, UNITS)))
    cotangents = (
        jnp.asarray(rng.normal(size=(TIME, BATCH, UNITS))),
        jnp.asarray(rng.normal(size=(BATCH, UNITS))),
        jnp.asarray(rng.normal(size=(BATCH, UNITS))),
    )
    return params, xs, jnp.asarray(h0, jnp.float64), rec_mask, cotangents


@pytest.mark.parametrize(("reset_after", "use_bias", "mask", "zero_output", "dropout"), MODES)
def test_hand_written_vjp_equals_autodiff(reset_after, use_bias, mask, zero_output, dropout):
    layer = jaxgru.GRU(
        UNITS, reset_after=reset_after, use_bias=use_bias, zero_output_for_mask=zero_output
    )
    spec = layer.cell_spec
    kinds = [k for k in MASKS if MASKS[k] is not None]
    masks = None if mask == "nomask" else jnp.asarray(np.stack([MASKS[k].T for k in kinds]))
    with jax.enable_x64(True):
        params, xs, h0, rec_mask, cotangents = _arguments(layer, seed=3)
        rec_mask = rec_mask if dropout else None

        y0 = jnp.asarray(np.random.default_rng(5).normal(size=h0.shape))  # a chunk's start

        def autodiff(params, xs, h0, y0, mask_tm):
            result = recurrence.autodiff_scan(
                spec, CHUNKED, zero_output, params, xs, h0, y0, mask_tm, rec_mask
            )
            return result.outputs, result.last_output, result.state

        def fused(params, xs, h0, y0, mask_tm):
            return recurrence.fused_scan(
                spec, CHUNKED, zero_output, params, xs, h0, y0, mask_tm, rec_mask
            )

        def value_and_vjp(f, mask_tm):  # one compiled program each
            out, vjp = jax.vjp(partial(f, mask_tm=mask_tm), params, xs, h0, y0)
            return out, vjp(cotangents)

        def both(f):
            run = partial(value_and_vjp, f)
            return jax.jit(run)(None) if masks is None else jax.jit(jax.vmap(run))(masks)

        want, want_grads = both(autodiff)
        got, got_grads = both(fused)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    assert jax.tree.structure(got_grads) == jax.tree.structure(want_grads)
    for path, g in jax.tree_util.tree_leaves_with_path(got_grads):
        w = want_grads
        for key in path:
            w = w[key.idx if hasattr(key, "idx") else key.key]
        assert g.dtype == jnp.float64
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=str(path))


def test_zero_output_for_mask_is_ignored_without_a_mask(float64):
    """Why the grid above skips zero_output=True without a mask: the same program is traced."""
    spec = jaxgru.GRU(UNITS).cell_spec
    params, xs, h0, _, cotangents = _arguments(jaxgru.GRU(UNITS), seed=3)

    def program(zero_output, mask_tm):
        def value_and_vjp(params, xs, h0):
            out, vjp = jax.vjp(
                partial(recurrence.fused_scan, spec, CHUNKED, zero_output), params, xs, h0, h0,
                mask_tm, None,
            )  # fmt: skip
            return out, vjp(cotangents)

        return str(jax.make_jaxpr(value_and_vjp)(params, xs, h0))

    assert program(True, None) == program(False, None)
    mask = jnp.asarray(MASKS["left_padded"].T)
    assert program(True, mask) != program(False, mask)  # the comparison can tell them apart


def test_apply_uses_the_hand_written_vjp_only_where_it_applies():
    fast = jaxgru.GRU(UNITS)
    other = jaxgru.GRU(UNITS, activation="softsign", recurrent_activation="hard_sigmoid")
    options = ExecutionOptions()
    for layer, expected in [(fast, True), (jaxgru.GRU(UNITS, activation=None), True),
                            (other, False)]:  # fmt: skip
        assert recurrence.uses_hand_written_backward(layer.cell_spec, options) == expected
    assert not recurrence.uses_hand_written_backward(
        fast.cell_spec, options.replace(backward="autodiff")
    )
    with pytest.raises(ValueError, match="hand_written"):
        recurrence.uses_hand_written_backward(
            other.cell_spec, options.replace(backward="hand_written")
        )
    x, _ = random_inputs()
    for layer, expected in [(fast, True), (other, False)]:
        params = layer.init(jax.random.key(0), FEATURES)
        text = str(jax.make_jaxpr(lambda p, layer=layer: layer.apply(p, x))(params))
        assert ("custom_vjp_call" in text) == expected


def test_forward_mode_autodiff_works_where_autodiff_serves():
    """jax.jvp needs the autodiff pass: collect_gates (explain) and other activations."""
    layer = jaxgru.GRU(UNITS, activation="softsign")
    params = layer.init(jax.random.key(0), FEATURES)
    x, _ = random_inputs()
    tangent = jax.tree.map(jnp.ones_like, params)
    _, out_tangent = jax.jvp(lambda p: layer.apply(p, x), (params,), (tangent,))
    assert out_tangent.shape == (BATCH, UNITS) and np.abs(out_tangent).max() > 0


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("unroll", [False, 1, 3, True])
def test_unroll_factor(unroll, training):
    base = ExecutionOptions(unroll_train=2, unroll_inference=5)
    auto = 2 if training else 5
    expected = {"False": min(auto, TIME), "1": 1, "3": 3, "True": TIME}[str(unroll)]
    options = jaxgru.GRU(UNITS, unroll=unroll, execution=base).options
    assert options.unroll_factor(TIME, training=training) == expected
    assert options.unroll_factor(1, training=training) == 1


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask", ["nomask", "left_padded"])
def test_fused_bidirectional_equals_two_separate_scans(return_sequences, reset_after, mask):
    """Both directions in one vmapped loop give the same outputs and gradients (float64)."""
    x, _ = random_inputs(seed=11)
    m = MASKS[mask]

    def run(fused):
        options = ExecutionOptions(fused_bidirectional_max_units=UNITS if fused else None)
        gru = jaxgru.GRU(UNITS, reset_after=reset_after, return_sequences=return_sequences,
                         dropout=0.2, execution=options)  # fmt: skip
        bidir = jaxgru.Bidirectional(gru)
        with jax.enable_x64(True):
            params = jax.tree.map(
                lambda a: jnp.asarray(a, jnp.float64), bidir.init(jax.random.key(2), FEATURES)
            )
            xs = jnp.asarray(x, jnp.float64)

            def loss(p, xs):
                y = bidir.apply(p, xs, mask=m, training=True, rng=jax.random.key(3))
                scale = jnp.arange(1, y.shape[-1] + 1.0).reshape((1,) * (y.ndim - 1) + (-1,))
                return (jnp.sin(y) * scale).sum(), y

            value_and_grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
            (_, y), grads = jax.jit(value_and_grad)(params, xs)
            text = str(jax.make_jaxpr(loss)(params, xs))
        return y, grads, text

    y_sep, grads_sep, text_sep = run(False)
    y_fused, grads_fused, text_fused = run(True)
    # two jitted passes over time (one jaxpr, called twice) against one pair pass
    calls = [re.findall(r"name=(scan|scan_pair)\b", text) for text in (text_sep, text_fused)]
    assert calls == [["scan", "scan"], ["scan_pair"]]
    assert "custom_vjp_call" in text_sep and "custom_vjp_call" in text_fused
    np.testing.assert_allclose(y_fused, y_sep, rtol=1e-12, atol=1e-12)
    for got, want in zip(jax.tree.leaves(grads_fused), jax.tree.leaves(grads_sep), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
