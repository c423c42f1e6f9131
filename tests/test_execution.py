"""Every execution strategy (jaxgru.execution) against the float64 NumPy reference (outputs)
and against JAX's autodiff of the plain CPU layout (gradients), so an accelerator run only has
to measure speed. One compiled program per case; the three mask kinds share it (vmapped)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru import execution, recurrence
from jaxgru.errors import ConfigError
from jaxgru.execution import ExecutionOptions
from tests.helpers import BATCH, FEATURES, MASKS, TIME, UNITS, random_inputs, random_weights
from tests.reference import gru_reference

LAYOUTS = list(itertools.product(execution.INPUT_PROJECTIONS, execution.RECURRENT_MATMULS))
STRATEGIES = {
    f"{projection}-{matmul}-{backward}": ExecutionOptions(
        input_projection=projection,
        recurrent_matmul=matmul,
        backward=backward,
        backward_chunk=3,
        backward_chunk_min_bytes=0,
        unroll_train=2,
        precision="highest",
    )
    for (projection, matmul), backward in itertools.product(LAYOUTS, ("hand_written", "autodiff"))
}
STRATEGIES["gpu-defaults"] = execution.for_backend("gpu")
STRATEGIES["cpu-defaults-remat"] = execution.for_backend("cpu").replace(remat_chunk=3)
ORACLE = ExecutionOptions(backward="autodiff")  # JAX's autodiff of the per-step, per-gate scan
MASKED = np.stack([MASKS[k] for k in ("right_padded", "left_padded", "row_fully_masked")])


def _arguments(spec, seed=3):
    rng = np.random.default_rng(seed)
    weights = random_weights(spec, FEATURES, seed=seed)  # spec.param_shapes, as a layer's
    x, h0 = random_inputs(seed=seed + 1)
    rec_mask = rng.choice([0.0, 1.25], size=(BATCH, UNITS))
    scale = rng.normal(size=(TIME, BATCH, UNITS))
    return weights, x, h0, rec_mask, scale


def _value_and_grads(spec, options, params, xs, h0, mask_tm, rec_mask, scale):
    """Outputs and the gradients of a loss that reads every output, the last one and the state."""

    def loss(params, xs, h0):
        inputs = recurrence.ScanInputs(xs, h0, mask_tm, rec_mask)
        out = recurrence.scan(spec, options, params, inputs, True)
        total = (jnp.sin(out.outputs) * scale).sum() + (out.last_output**2).sum()
        return total + (out.state * scale[0]).sum(), out[:3]

    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, h0)


def _run(spec, options, masked: bool):
    weights, x, h0, rec_mask, scale = _arguments(spec)
    with jax.enable_x64(True):
        params = {n: jnp.asarray(w, jnp.float64) for n, w in zip(spec.weight_names, weights)}
        args = (jnp.asarray(np.swapaxes(x, 0, 1), jnp.float64), jnp.asarray(h0, jnp.float64))
        extra = (jnp.asarray(rec_mask), jnp.asarray(scale))

        def run(mask_tm):
            return _value_and_grads(spec, options, params, *args, mask_tm, *extra)

        if masked:
            (_, outputs), grads = jax.jit(jax.vmap(run))(jnp.asarray(np.swapaxes(MASKED, 1, 2)))
        else:
            (_, outputs), grads = jax.jit(run)(None)
    return weights, x, h0, rec_mask, jax.tree.map(np.asarray, (outputs, grads))


@functools.cache
def _oracle_grads(reset_after: bool, use_bias: bool, masked: bool):
    spec = jaxgru.GRU(UNITS, reset_after=reset_after, use_bias=use_bias).cell_spec
    return _run(spec, ORACLE, masked)[-1][1]


CASES = [
    (name, reset_after, use_bias, masked)
    for name in STRATEGIES
    for reset_after, use_bias, masked in itertools.product(
        [True, False], [True, False], [True, False]
    )
    if masked or use_bias  # without a mask, the bias-free cases add nothing new
]


@pytest.mark.parametrize(("strategy", "reset_after", "use_bias", "masked"), CASES)
def test_strategy_equals_reference_and_autodiff(strategy, reset_after, use_bias, masked):
    spec = jaxgru.GRU(UNITS, reset_after=reset_after, use_bias=use_bias).cell_spec
    weights, x, h0, rec_mask, (outputs, grads) = _run(spec, STRATEGIES[strategy], masked)
    want_grads = _oracle_grads(reset_after, use_bias, masked)
    masks = MASKED if masked else [None]
    for i, mask in enumerate(masks):
        pick = (lambda a, i=i: a[i]) if masked else (lambda a: a)
        want = gru_reference(
            x, *weights[:2], weights[2] if use_bias else None, reset_after=reset_after,
            mask=mask, initial_state=h0, zero_output_for_mask=True,
            recurrent_dropout_mask=rec_mask,
        )  # fmt: skip
        got = (np.swapaxes(pick(outputs[0]), 0, 1), pick(outputs[1]), pick(outputs[2]))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        assert np.abs(w).max() > 0
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)


def test_the_check_catches_a_swapped_gate():
    """The comparison above fails when z and r trade places in the kernel."""
    spec = jaxgru.GRU(UNITS).cell_spec
    weights, x, h0, rec_mask, (outputs, _) = _run(spec, STRATEGIES["hoisted-fused-autodiff"],
                                                  False)  # fmt: skip
    z, r, h = np.split(weights[0], 3, axis=1)
    kernel = np.concatenate([r, z, h], axis=1)
    want = gru_reference(x, kernel, *weights[1:], initial_state=h0, zero_output_for_mask=True,
                         recurrent_dropout_mask=rec_mask)  # fmt: skip
    assert not np.allclose(np.swapaxes(outputs[0], 0, 1), want[0], rtol=1e-3)


def test_backend_defaults_and_the_layer_options():
    cpu, gpu = execution.for_backend("cpu"), execution.for_backend("gpu")
    assert (cpu.input_projection, cpu.recurrent_matmul) == ("per_step", "per_gate")
    assert (gpu.input_projection, gpu.recurrent_matmul, gpu.precision) == (
        "hoisted", "fused", "highest")  # fmt: skip
    assert execution.for_backend("tpu") == gpu
    assert jaxgru.GRU(3).options == execution.for_backend()
    layer = jaxgru.GRU(3, unroll=3, remat_chunk=5, execution=gpu)
    assert layer.options == gpu.replace(unroll=3, remat_chunk=5)
    assert hash(layer) == hash(jaxgru.GRU(3, unroll=3, remat_chunk=5, execution=gpu))


def test_a_layer_with_other_options_compiles_its_own_program():
    """Options are static: a jitted apply sees the change (no module global behind it)."""
    x, _ = random_inputs()
    traced = []

    @jax.jit
    def run(params, x):
        traced.append(1)
        return layer.apply(params, x)

    layer = jaxgru.GRU(UNITS)
    params = layer.init(jax.random.key(0), FEATURES)
    run(params, x)
    run(params, x)
    assert len(traced) == 1
    other = jax.jit(lambda p, x, layer: layer.apply(p, x), static_argnums=2)
    fused = jaxgru.GRU(UNITS, execution=execution.for_backend("gpu"))
    np.testing.assert_allclose(other(params, x, fused), other(params, x, layer), atol=1e-5)
    assert other._cache_size() == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unroll", 0),
        ("backward", "fast"),
        ("input_projection", "before"),
        ("recurrent_matmul", "one"),
        ("precision", "float32"),
        ("backward_chunk", 0),
        ("remat_chunk", -1),
        ("fused_bidirectional_max_units", 1.5),
    ],
)
def test_bad_options_are_refused_with_the_field_named(field, value):
    with pytest.raises(ValueError, match=field):
        ExecutionOptions(**{field: value})
    with pytest.raises(ConfigError, match="ExecutionOptions"):
        jaxgru.GRU(3, execution={"unroll": 2})


@pytest.mark.parametrize("strategy", ["gpu-defaults", "per_step-per_gate-hand_written"])
def test_params_as_users_hold_them_after_grad_and_an_optimizer_step(strategy):
    """JAX re-sorts dict keys (bias first) in grad, tree_map and optax; the layouts read by
    name, so a step on the re-sorted params equals the reference on the stepped arrays."""
    import optax

    layer = jaxgru.GRU(UNITS, return_sequences=True, execution=STRATEGIES[strategy])
    weights = random_weights(layer, FEATURES, seed=9)
    params = jaxgru.from_keras_weights(layer, weights)
    x, h0 = random_inputs(seed=10)
    grads = jax.grad(lambda p: (layer.apply(p, x, initial_state=h0) ** 2).sum())(params)
    optimizer = optax.sgd(0.1)
    updates, _ = optimizer.update(grads, optimizer.init(params))
    stepped = jax.tree.map(lambda a: a, optax.apply_updates(params, updates))
    assert list(stepped) == sorted(layer.weight_names)  # re-sorted: bias first
    want = gru_reference(x, *[np.asarray(stepped[n]) for n in layer.weight_names],
                         initial_state=h0)  # fmt: skip
    got = layer.apply(stepped, x, initial_state=h0)
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(stepped["kernel"]), weights[0])  # the step moved them
