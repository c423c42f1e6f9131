"""bfloat16 compute (``compute_dtype``) with a float32 carry and float32 master params.

The bounds are stated against float32 and against the float64 NumPy reference; a test also
checks that the matmuls really run in bfloat16 (a bound that float32 itself would pass says
nothing otherwise).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru.data import load_dataset
from tests.helpers import FEATURES, UNITS, max_rel_error, random_inputs, random_weights
from tests.reference import gru_reference

# bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.4%). Measured at these sizes:
# outputs within 0.32% of float32 and gradients within 0.3%, both settings of reset_after.
# The large case uses Keras's initializers: with uniform(-0.7, 0.7) recurrent weights at 64
# units the GRU is chaotic over 100 steps, and any rounding (float32's too) grows to O(1).
OUTPUT_BOUND, GRADIENT_BOUND = 0.01, 0.02


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("batch", "time", "features", "units"),
                         [(2, 7, FEATURES, UNITS), (16, 100, 8, 64)])  # fmt: skip
def test_bfloat16_stays_within_its_bound_of_float32(reset_after, batch, time, features, units):
    layer = jaxgru.GRU(units, return_sequences=True, reset_after=reset_after)
    if units == UNITS:
        params = dict(zip(layer.weight_names, random_weights(layer, features, seed=7)))
    else:
        params = layer.init(jax.random.key(7), features)
    x, h0 = random_inputs(seed=8, batch=batch, time=time, features=features, units=units)
    mixed = dataclasses.replace(layer, compute_dtype="bfloat16")

    def loss(params, gru):
        return jnp.sum(jnp.sin(gru.apply(params, x, initial_state=h0)))

    y32, y16 = layer.apply(params, x, initial_state=h0), mixed.apply(params, x, initial_state=h0)
    assert y16.dtype == jnp.float32  # the carry and the outputs stay float32
    reference = gru_reference(x, *params.values(), reset_after=reset_after, initial_state=h0)[0]
    assert 0 < max_rel_error(y16, y32) <= OUTPUT_BOUND  # > 0: bfloat16 really ran
    assert max_rel_error(y16, reference) <= OUTPUT_BOUND
    g32, g16 = (jax.grad(loss)(params, gru) for gru in (layer, mixed))
    for name in layer.weight_names:
        assert g16[name].dtype == jnp.float32  # gradients for the float32 master params
        assert 0 < max_rel_error(g16[name], g32[name]) <= GRADIENT_BOUND, name


def test_the_matmuls_run_in_bfloat16_and_the_carry_in_float32():
    layer = jaxgru.GRU(UNITS, compute_dtype="bfloat16")
    params = layer.init(jax.random.key(0), FEATURES)
    x = jnp.ones((2, 7, FEATURES))
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(layer.apply(p, x))))(params)
    dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    assert all(e.outvars[0].aval.dtype == jnp.float32 for e in dots)
    scans = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "scan"]
    carries = [v.aval.dtype for e in scans for v in e.outvars if v.aval.ndim == 2]
    assert carries and set(carries) == {jnp.dtype(jnp.float32)}


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)


def test_bfloat16_training_tracks_float32():
    data = load_dataset("sine", samples=512, val_samples=64, test_samples=64)
    model = jaxgru.Sequential([jaxgru.GRU(16), jaxgru.Dense(1)], input_shape=(40, 1))
    params = model.init(jax.random.key(0))
    settings = dict(epochs=4, batch_size=32, learning_rate=0.01, verbose=0)
    _, h32 = jaxgru.fit(model, params, data.train.x, data.train.y, **settings)
    p16, h16 = jaxgru.fit(model, params, data.train.x, data.train.y, compute_dtype="bfloat16",
                          **settings)  # fmt: skip
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(p16))  # master params
    assert h16["loss"][-1] < 0.5 * h16["loss"][0]  # it learns
    np.testing.assert_allclose(h16["loss"], h32["loss"], rtol=0.1)
