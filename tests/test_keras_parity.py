"""jaxgru.GRU against real Keras 3 (TensorFlow backend): forward and gradients, same grid.

Weights go into Keras and back out through ``to_keras_weights`` / ``from_keras_weights``.
Where the oneDNN kernel applies (tanh and sigmoid, no mask), the same case also runs through
it (``ExecutionOptions(kernel="onednn")``), against the same Keras numbers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru import execution
from jaxgru.execution import ExecutionOptions
from tests.helpers import (
    FEATURES,
    GRID,
    MASKS,
    UNITS,
    Case,
    keras_gru,
    max_rel_error,
    onednn_supported,
    random_inputs,
    random_weights,
)

pytestmark = pytest.mark.oracle

tf = pytest.importorskip("tensorflow")


def _cotangents(layer: jaxgru.GRU, out_shapes):
    """Fixed random weights for the scalar loss sum(output * c), so every element matters."""
    rng = np.random.default_rng(11)
    return [rng.normal(size=shape).astype(np.float32) for shape in out_shapes]


def _keras_forward_and_grads(layer, weights, x, h0, mask):
    k = keras_gru(layer, FEATURES, weights)
    x_t = tf.constant(x)
    h0_t = None if h0 is None else tf.constant(h0)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        if h0_t is not None:
            tape.watch(h0_t)
        out = k(x_t, initial_state=None if h0_t is None else [h0_t], mask=mask)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        cots = _cotangents(layer, [o.shape for o in outs])
        loss = sum(tf.reduce_sum(o * c) for o, c in zip(outs, cots))
    sources = [k.cell.kernel, k.cell.recurrent_kernel]
    sources += [k.cell.bias] if layer.use_bias else []
    sources += [x_t] + ([h0_t] if h0_t is not None else [])
    grads = tape.gradient(loss, sources)
    # Export from Keras and import into jaxgru: the weights must survive the round trip.
    params = jaxgru.from_keras_weights(layer, k.get_weights())
    return params, [o.numpy() for o in outs], [np.asarray(g) for g in grads]


def _jax_forward_and_grads(layer, params, x, h0, mask, cots):
    def loss(params, x, h0):
        out = layer.apply(params, x, initial_state=h0, mask=mask)
        outs = list(out) if isinstance(out, tuple) else [out]
        return sum(jnp.sum(o * c) for o, c in zip(outs, cots)), outs

    argnums = (0, 1, 2) if h0 is not None else (0, 1)
    (_, outs), grads = jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))(params, x, h0)
    flat = [grads[0][name] for name in layer.weight_names] + list(grads[1:])
    return outs, flat


@pytest.mark.parametrize("case", GRID, ids=str)
def test_forward_and_gradients_match_keras(case: Case):
    layer = case.layer()
    weights = random_weights(layer, FEATURES, seed=21)
    x, h0 = random_inputs(seed=22)
    h0 = h0 if case.initial_state else None
    mask = MASKS[case.mask]
    params, k_outs, k_grads = _keras_forward_and_grads(layer, weights, x, h0, mask)
    for name, w in zip(layer.weight_names, jaxgru.to_keras_weights(layer, params)):
        np.testing.assert_array_equal(w, weights[layer.weight_names.index(name)])
    cots = _cotangents(layer, [o.shape for o in k_outs])
    layers = [layer]
    if case.activations == ("tanh", "sigmoid") and mask is None and onednn_supported():
        native = dataclasses.replace(layer, execution=ExecutionOptions(kernel="onednn"))
        assert execution.serving(native) == ("onednn", None)
        layers.append(native)
    names = [*layer.weight_names, "inputs"] + (["initial_state"] if h0 is not None else [])
    for each in layers:
        j_outs, j_grads = _jax_forward_and_grads(each, params, x, h0, mask, cots)
        assert len(j_outs) == len(k_outs)
        for j, k in zip(j_outs, k_outs):
            assert j.shape == k.shape
            assert np.max(np.abs(np.asarray(j) - k)) <= 1e-5
        for name, j, k in zip(names, j_grads, k_grads, strict=True):
            assert max_rel_error(j, k) <= 1e-4, f"{each.options.kernel}: gradient w.r.t. {name}"


def test_a_batch_time_1_mask_is_read_as_keras_reads_it():
    """Keras's RNNs take a mask of shape (batch, time, 1) as well as (batch, time)."""
    layer = jaxgru.GRU(UNITS, return_sequences=True)
    weights = random_weights(layer, FEATURES)
    x, _ = random_inputs()
    mask = MASKS["left_padded"]
    params = dict(zip(layer.param_shapes(FEATURES), map(jnp.asarray, weights)))
    keras_out = np.asarray(keras_gru(layer, FEATURES, weights)(x, mask=mask[..., None]))
    ours = np.asarray(layer.apply(params, x, mask=mask[..., None]))
    np.testing.assert_allclose(ours, keras_out, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(ours, np.asarray(layer.apply(params, x, mask=mask)))
    assert np.abs(ours - np.asarray(layer.apply(params, x))).max() > 1e-3  # the mask matters
