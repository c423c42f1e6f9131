"""Long sequences: rematerialised chunks (``remat_chunk``) and truncated BPTT (``tbptt_steps``).

Remat must change memory, never numbers: gradients are compared with the plain pass in float64.
TBPTT is compared with a hand-written loop over windows that carries the state without
gradient. The memory bound of a T = 10,000 step is read from XLA's own buffer assignment
(``Compiled.memory_analysis``), which does not depend on what else the process holds.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from tests.helpers import FEATURES, MASKS, TIME, UNITS, random_inputs, random_weights


def _float64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


# The masked case runs both mask kinds (left padding, a fully masked row) in one vmapped program.
REMAT_MASKS = {
    "nomask": None,
    "masked": np.stack([MASKS["left_padded"], MASKS["row_fully_masked"]]),
}


def _remat_grads(layer: jaxgru.GRU, mask: str):
    """float64 ``(loss, (d params, d x, d h0))`` of ``sum(sin(3 y))``, per mask kind."""
    weights = random_weights(layer, FEATURES, seed=4)
    x, h0 = random_inputs(seed=5)
    with jax.enable_x64(True):
        params = _float64(dict(zip(layer.weight_names, weights)))
        x, h0 = _float64((x, h0))

        def loss(params, x, h0, m):
            y = layer.apply(params, x, initial_state=h0, mask=m)
            return jnp.sum(jnp.sin(3.0 * y))  # asymmetric in every output

        grad = jax.value_and_grad(loss, argnums=(0, 1, 2))
        if REMAT_MASKS[mask] is None:
            return jax.jit(grad)(params, x, h0, None)
        masks = jnp.asarray(REMAT_MASKS[mask])
        return jax.jit(jax.vmap(grad, in_axes=(None, None, None, 0)))(params, x, h0, masks)


@functools.cache
def _plain_grads(activation: str, mask: str, return_sequences: bool):
    """The pass without remat, computed once for every chunk size compared with it."""
    layer = jaxgru.GRU(UNITS, activation=activation, return_sequences=return_sequences)
    return _remat_grads(layer, mask)


@pytest.mark.parametrize("activation", ["tanh", "relu"])  # the hand-written VJP, then autodiff
@pytest.mark.parametrize("mask", list(REMAT_MASKS))
@pytest.mark.parametrize("chunk", [2, 3, 7])  # pads the first chunk, divides time, one chunk
@pytest.mark.parametrize("return_sequences", [False, True])
def test_remat_gradients_equal_the_plain_pass(activation, mask, chunk, return_sequences):
    layer = jaxgru.GRU(UNITS, activation=activation, return_sequences=return_sequences,
                       remat_chunk=chunk)  # fmt: skip
    got = _remat_grads(layer, mask)
    want = _plain_grads(activation, mask, return_sequences)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.abs(w).max() > 0
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def test_remat_bidirectional_and_stacked_model_gradients_are_unchanged():
    model = jaxgru.Sequential(
        [jaxgru.Bidirectional(jaxgru.GRU(4, return_sequences=True)), jaxgru.GRU(3),
         jaxgru.Dense(2)], input_shape=(TIME, FEATURES),
    )  # fmt: skip
    x, _ = random_inputs(seed=6)
    with jax.enable_x64(True):
        params = model.init(jax.random.key(2), jnp.float64)
        x = jnp.asarray(x, jnp.float64)

        def loss(params, m):
            return jnp.sum(jnp.cos(m.apply(params, x)))

        want = jax.grad(loss)(params, model)
        got = jax.grad(loss)(params, model.with_execution(remat_chunk=3))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


LONG, LONG_BATCH, LONG_UNITS = 10_000, 16, 64
# The bound this test holds a T = 10,000 train step to: XLA's temporary buffers with
# remat_chunk = 100. Without remat the same step needs 196 MB (every step's gates); with it,
# about 4 MB (one chunk's gates and one (batch, units) state per chunk).
REMAT_TEMP_BOUND_MB = 16


def _long_step_temp_mb(remat_chunk):
    model = jaxgru.Sequential([jaxgru.GRU(LONG_UNITS), jaxgru.Dense(1)], input_shape=(LONG, 1))
    model = model.with_execution(remat_chunk=remat_chunk)
    params = model.init(jax.random.key(0))
    x = jax.ShapeDtypeStruct((LONG_BATCH, LONG, 1), jnp.float32)

    def loss(params, x):
        return jnp.mean(model.apply(params, x) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def test_a_ten_thousand_step_train_step_fits_the_memory_bound_with_remat():
    with_remat, without = _long_step_temp_mb(100), _long_step_temp_mb(None)
    assert with_remat <= REMAT_TEMP_BOUND_MB, with_remat
    assert without > 8 * REMAT_TEMP_BOUND_MB, without  # the bound is one remat makes possible


def test_a_ten_thousand_step_run_completes_with_remat():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * LONG_BATCH, LONG, 1)).astype(np.float32)
    y = x[:, -50:, 0].mean(axis=1, keepdims=True)  # a target that needs the recent past
    model = jaxgru.Sequential([jaxgru.GRU(8), jaxgru.Dense(1)], input_shape=(LONG, 1))
    _, history = jaxgru.fit(
        model, model.init(jax.random.key(0)), x, y, batch_size=LONG_BATCH, epochs=2,
        learning_rate=0.01, remat_chunk=100, verbose=0,
    )  # fmt: skip
    assert len(history["batch_loss"]) == 4 and np.all(np.isfinite(history["batch_loss"]))
    assert history["loss"][1] < history["loss"][0]


def _stream(samples=6, time=11, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, time, FEATURES)).astype(np.float32)
    y = np.cumsum(x[..., :1], axis=1).astype(np.float32) * 0.3  # needs the carried state
    return x, y


def _tbptt_model():
    layers = [jaxgru.GRU(UNITS, return_sequences=True), jaxgru.Dense(1)]
    return jaxgru.Sequential(layers, input_shape=(None, FEATURES))


def test_tbptt_equals_a_hand_written_window_loop():
    x, y = _stream()
    model, window, batch_size, lr = _tbptt_model(), 4, 3, 0.05
    params = model.init(jax.random.key(3))
    got, history = jaxgru.fit(
        model, params, x, y, batch_size=batch_size, epochs=2, optimizer="sgd",
        learning_rate=lr, shuffle=False, tbptt_steps=window, verbose=0,
    )  # fmt: skip
    gru = model.layers[0]
    carrying = dataclasses.replace(gru, return_state=True)

    def window_loss(params, h, xw, yw):
        seq, h_next = carrying.apply(params[gru.name], xw, initial_state=h)
        pred = model.layers[1].apply(params[model.layers[1].name], seq)
        return jnp.mean((pred - yw) ** 2), h_next

    step = jax.jit(jax.value_and_grad(window_loss, has_aux=True))
    want, losses = params, []
    for _ in range(2):
        for start in range(0, len(x), batch_size):
            h = jnp.zeros((batch_size, UNITS))
            for t in range(0, x.shape[1], window):  # windows of 4, 4, 3
                rows, steps = slice(start, start + batch_size), slice(t, t + window)
                (loss, h), grads = step(want, h, x[rows, steps], y[rows, steps])
                want = jax.tree.map(lambda p, g: p - lr * g, want, grads)
                losses.append(float(loss))
    np.testing.assert_allclose(history["batch_loss"], losses, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_tbptt_with_one_window_is_plain_training():
    x, y = _stream()
    model = _tbptt_model()
    params = model.init(jax.random.key(3))
    settings = dict(batch_size=3, epochs=2, shuffle=False, verbose=0)
    plain = jaxgru.fit(model, params, x, y, **settings)
    whole = jaxgru.fit(model, params, x, y, tbptt_steps=x.shape[1], **settings)
    np.testing.assert_allclose(whole[1]["batch_loss"], plain[1]["batch_loss"], rtol=1e-6)


@pytest.mark.parametrize(
    ("layers", "y_shape", "message"),
    [
        ([jaxgru.GRU(UNITS), jaxgru.Dense(1)], (6, 1), r"needs a target per time step"),
        (
            [jaxgru.Bidirectional(jaxgru.GRU(UNITS, return_sequences=True)), jaxgru.Dense(1)],
            (6, 11, 1),
            r"tbptt_steps cannot train \['bidirectional'\]: a backward direction reads the "
            r"future.*no tbptt_steps",
        ),
        ([jaxgru.Dense(1)], (6, 11, 1), r"needs a model with a GRU"),
    ],
)
def test_tbptt_refuses_what_it_cannot_train(layers, y_shape, message):
    x, _ = _stream()
    model = jaxgru.Sequential(layers, input_shape=(None, FEATURES))
    with pytest.raises(ValueError, match=message):
        jaxgru.fit(model, model.init(jax.random.key(0)), x, np.zeros(y_shape, np.float32),
                   tbptt_steps=4, verbose=0)  # fmt: skip


def test_remat_chunk_and_compute_dtype_are_checked():
    with pytest.raises(ValueError, match=r"remat_chunk must be None or a number of steps >= 1"):
        jaxgru.GRU(3, remat_chunk=0)
    with pytest.raises(ValueError, match=r"compute_dtype must be one of"):
        jaxgru.GRU(3, compute_dtype="int8")
