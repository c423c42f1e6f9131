"""The oneDNN kernel (``ExecutionOptions(kernel="onednn")``, ``jaxgru.onednn``) against the
float64 NumPy reference (outputs) and the XLA path's autodiff in float64 (every gradient), over
reset_after x use_bias x go_backwards x Bidirectional, each with and without initial_state and
return_sequences (one compiled program per case), with params as a user holds them (after an
optax step: JAX re-sorts dict keys). Then what stays on XLA, and why, and that a pass oneDNN
serves is one FFI call in the compiled program.

``make test`` and ``make check`` build the kernel first (``make native``), and the first test
here fails when it is not built or does not load, so a silently skipped build cannot pass.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgru
from jaxgru import execution, onednn
from jaxgru.execution import ExecutionOptions, Serving
from tests.helpers import BATCH, FEATURES, MASKS, TIME, UNITS, onednn_supported, random_inputs
from tests.reference import gru_reference

# PyPI's oneDNN wheels (pyproject's `native` extra) exist for x86_64 Linux only; there, the
# kernel must be built and serve.
pytestmark = pytest.mark.skipif(not onednn_supported(), reason="no oneDNN wheel here")

ONEDNN = ExecutionOptions(kernel="onednn")
ORACLE = ExecutionOptions(backward="autodiff")  # the XLA path, differentiated by JAX
FORWARD_NAME = "jaxgru_onednn_gru_forward"
VARIANTS = list(itertools.product([False, True], [False, True]))  # initial_state, sequences


def test_the_kernel_is_built_loads_and_serves():
    assert onednn.available(), onednn._load()[1]
    assert onednn.version().startswith("3.")
    assert execution.serving(jaxgru.GRU(UNITS, execution=ONEDNN)) == Serving("onednn", None)


def _user_params(layer, seed):
    """Random asymmetric params with non-zero biases, after one optax SGD step (sorted keys)."""
    params = layer.init(jax.random.key(seed), FEATURES)
    params = jax.tree.map(
        lambda p: p + 0.3 * jax.random.normal(jax.random.key(seed + 1), p.shape), params
    )
    grads = jax.grad(lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)[0])))(params, _inputs()[0])
    optimizer = optax.sgd(0.05)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates)


def _inputs():
    x, h0 = random_inputs(seed=5)
    return jnp.asarray(x), jnp.asarray(h0)


def _gru(reset_after, use_bias, go_backwards, options, sequences=True):
    return jaxgru.GRU(
        UNITS, reset_after=reset_after, use_bias=use_bias, go_backwards=go_backwards,
        return_sequences=sequences, return_state=True, execution=options,
    )  # fmt: skip


def _layers(reset_after, use_bias, go_backwards, bidirectional, options):
    """One layer per variant: ``(initial_state, return_sequences) -> layer``."""
    layers = {}
    for initial_state, sequences in VARIANTS:
        gru = _gru(reset_after, use_bias, go_backwards, options, sequences)
        layers[initial_state, sequences] = jaxgru.Bidirectional(gru) if bidirectional else gru
    return layers


def _apply(layer, params, x, h0, initial_state):
    if isinstance(layer, jaxgru.Bidirectional):
        return layer.apply(params, x, initial_state=[h0, -h0] if initial_state else None)
    return layer.apply(params, x, initial_state=h0 if initial_state else None)


def _outputs_and_grads(layers, params, x, h0):
    """Every variant's outputs and the gradients (params, x, h0) of a loss reading them all:
    one compiled program."""

    def loss(params, x, h0):
        outs = {v: _apply(layer, params, x, h0, v[0]) for v, layer in layers.items()}
        total = 0.0
        for i, o in enumerate(jax.tree.leaves(outs)):  # fixed random weights per output
            c = np.random.default_rng(i).normal(size=o.shape)
            total = total + jnp.sum(jnp.sin(o) * jnp.asarray(c, o.dtype)) + jnp.sum(o * o)
        return total, outs

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, x, h0)


def _reference(layer, params, x, h0, initial_state):
    """The float64 NumPy reference for one variant: what ``layer.apply`` returns."""
    if isinstance(layer, jaxgru.Bidirectional):
        fwd = _reference(layer.directions[0], params["forward_layer"], x, h0, initial_state)
        bwd = _reference(layer.directions[1], params["backward_layer"], x, -h0, initial_state)
        y_f, y_b = fwd[0], bwd[0]
        if layer.layer.return_sequences:
            y_b = y_b[:, ::-1]
        return (np.concatenate([y_f, y_b], axis=-1), fwd[1], bwd[1])
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    outputs, last, state = gru_reference(
        np.asarray(x), p["kernel"], p["recurrent_kernel"], p.get("bias"),
        reset_after=layer.reset_after, go_backwards=layer.go_backwards,
        initial_state=np.asarray(h0) if initial_state else None,
    )  # fmt: skip
    return (outputs if layer.return_sequences else last, state)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["gru", "bidirectional"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "go_backwards"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_onednn_equals_the_reference_and_the_xla_gradients(
    reset_after, use_bias, go_backwards, bidirectional
):
    layers = _layers(reset_after, use_bias, go_backwards, bidirectional, ONEDNN)
    for layer in layers.values():
        assert execution.serving(layer) == Serving("onednn", None)
    any_layer = next(iter(layers.values()))
    params = _user_params(any_layer, seed=7)
    x, h0 = _inputs()
    (_, outs), grads = _outputs_and_grads(layers, params, x, h0)
    for (initial_state, sequences), layer in layers.items():
        expected = _reference(layer, params, x, h0, initial_state)
        got = outs[initial_state, sequences]
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=2e-6)

    with jax.enable_x64(True):
        oracle_layers = {
            v: _with_options(layer, ORACLE) for v, layer in layers.items()
        }  # fmt: skip
        as64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, x, h0))
        _, oracle_grads = _outputs_and_grads(oracle_layers, *as64)
        oracle_grads = jax.tree.map(np.asarray, oracle_grads)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    for (path, g), o in zip(leaves, jax.tree.leaves(oracle_grads), strict=True):
        scale = max(np.abs(o).max(), 1e-3)
        error = np.abs(np.asarray(g, np.float64) - o).max() / scale
        assert error <= 2e-5, f"gradient {jax.tree_util.keystr(path)}: {error:.2e}"


def _with_options(layer, options):
    if isinstance(layer, jaxgru.Bidirectional):
        return dataclasses.replace(
            layer, layer=dataclasses.replace(layer.layer, execution=options)
        )
    return dataclasses.replace(layer, execution=options)


def _ffi_calls(fn, *args) -> int:
    """How many oneDNN forward calls the compiled (optimised, inlined) program makes."""
    return (
        jax.jit(fn).lower(*args).compile().as_text().count(f'custom_call_target="{FORWARD_NAME}"')
    )


def test_a_served_pass_is_one_ffi_call_and_a_refused_one_none():
    layer = _gru(True, True, False, ONEDNN)
    params = _user_params(layer, seed=3)
    x, _ = _inputs()
    mask = jnp.asarray(MASKS["right_padded"])
    assert _ffi_calls(lambda p, x: layer.apply(p, x), params, x) == 1
    assert _ffi_calls(jax.grad(lambda p, x: layer.apply(p, x)[1].sum()), params, x) == 1
    assert _ffi_calls(lambda p, x: layer.apply(p, x, mask=mask), params, x) == 0
    pair = jaxgru.Bidirectional(layer)
    pair_params = _user_params(pair, seed=4)
    assert _ffi_calls(lambda p, x: pair.apply(p, x), pair_params, x) == 2
    xla = _with_options(layer, ExecutionOptions())
    assert _ffi_calls(lambda p, x: xla.apply(p, x), params, x) == 0


@pytest.mark.parametrize(
    "change, call, reason",
    [
        ({}, {"mask": MASKS["left_padded"]}, "a mask"),
        ({"recurrent_dropout": 0.25}, {"training": True}, "recurrent dropout"),
        ({"activation": "relu"}, {}, "activation='tanh'"),
        ({"recurrent_activation": "hard_sigmoid"}, {}, "recurrent_activation='sigmoid'"),
        ({"compute_dtype": "bfloat16"}, {}, "compute_dtype"),
        ({"remat_chunk": 3}, {}, "remat_chunk"),
    ],
    ids=["mask", "recurrent_dropout", "activation", "recurrent_activation", "bf16", "remat"],
)
def test_what_onednn_does_not_compute_stays_on_xla_and_says_why(change, call, reason):
    layer = dataclasses.replace(_gru(True, True, True, ONEDNN), **change)
    served = execution.serving(layer, masked="mask" in call, training=call.get("training", False))
    assert served.kernel == "xla" and reason in served.reason
    params = _user_params(dataclasses.replace(layer, recurrent_dropout=0.0), seed=9)
    x, _ = _inputs()
    rng = jax.random.key(0)
    kwargs = {k: jnp.asarray(v) if k == "mask" else v for k, v in call.items()}
    run = lambda p, x: layer.apply(p, x, rng=rng, **kwargs)  # noqa: E731
    assert _ffi_calls(run, params, x) == 0
    xla = _with_options(layer, ExecutionOptions())
    for got, want in zip(run(params, x), xla.apply(params, x, rng=rng, **kwargs)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_input_dropout_is_applied_before_the_onednn_call():
    layer = dataclasses.replace(_gru(False, True, False, ONEDNN), dropout=0.4)
    assert execution.serving(layer, training=True) == Serving("onednn", None)
    params = _user_params(layer, seed=11)
    x, _ = _inputs()
    rng = jax.random.key(1)
    got = layer.apply(params, x, training=True, rng=rng)
    want = _with_options(layer, ExecutionOptions()).apply(params, x, training=True, rng=rng)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=2e-6)
    assert _ffi_calls(lambda p, x: layer.apply(p, x, training=True, rng=rng), params, x) == 1


def test_float64_stays_on_xla():
    layer = _gru(True, True, False, ONEDNN)
    assert "float32" in execution.serving(layer, dtype="float64").reason
    params32, (x32, _) = _user_params(layer, 2), _inputs()
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params32)
        x = jnp.asarray(x32, jnp.float64)
        assert _ffi_calls(lambda p, x: layer.apply(p, x), params, x) == 0
        assert layer.apply(params, x)[0].dtype == jnp.float64


def test_under_vmap_each_sequence_batch_is_its_own_call():
    layer = _gru(True, True, False, ONEDNN)
    xla = _with_options(layer, ORACLE)
    params = _user_params(layer, seed=13)
    xs = jax.random.normal(jax.random.key(2), (3, BATCH, TIME, FEATURES))

    def loss(layer):
        def value(params, x):
            y, h = layer.apply(params, x)
            return jnp.sum(jnp.sin(y)) + jnp.sum(h * h)

        return value

    grads = jax.jit(jax.vmap(jax.grad(loss(layer)), in_axes=(None, 0)))(params, xs)
    for i in range(3):
        one = jax.grad(loss(layer))(params, xs[i])
        expected = jax.grad(loss(xla))(params, xs[i])
        for name in params:
            np.testing.assert_allclose(grads[name][i], one[name], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(grads[name][i], expected[name], rtol=2e-4, atol=1e-5)


def test_fit_through_onednn_follows_the_xla_path():
    """A many-to-one model trained by jaxgru.fit (``gru_kernel="onednn"``, which sets every
    GRU's kernel): the loss history and the weights after training, oneDNN against XLA (the
    same data, init and batches)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 9, 4)).astype(np.float32)
    y = np.sin(x.sum(axis=(1, 2)))[:, None].astype(np.float32)
    histories, finals = [], []
    layers = [jaxgru.GRU(6, name="gru"), jaxgru.Dense(1, name="dense")]
    model = jaxgru.Sequential(layers, input_shape=x.shape[1:])
    for kernel in ("xla", "onednn"):
        params, history = jaxgru.fit(model, model.init(jax.random.key(0)), x, y, epochs=3,
                                     batch_size=16, learning_rate=1e-2, gru_kernel=kernel,
                                     verbose=0)  # fmt: skip
        histories.append(np.asarray(history["loss"]))
        finals.append(params)
    assert execution.serving(jaxgru.GRU(6, execution=ONEDNN)).kernel == "onednn"
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-4)
    assert histories[0][-1] < histories[0][0]
    for got, want in zip(jax.tree.leaves(finals[1]), jax.tree.leaves(finals[0])):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_fit_sets_the_kernel_and_keeps_each_grus_other_options():
    x = np.zeros((8, 5, 3), np.float32)
    y = np.zeros((8, 1), np.float32)
    own = ExecutionOptions(unroll_train=2, backward_chunk=4)
    layers = [jaxgru.GRU(4, return_sequences=True, execution=own), jaxgru.GRU(3),
              jaxgru.Dense(1)]  # fmt: skip
    model = jaxgru.Sequential(layers, input_shape=(5, 3))
    config = jaxgru.train.TrainConfig(gru_kernel="onednn", batch_size=4)
    prepared = jaxgru.train.prepare_fit(model, model.init(jax.random.key(0)), x, y, config)
    first, second, dense = prepared.model.layers
    assert first.execution == own.replace(kernel="onednn")
    assert second.execution == execution.for_backend().replace(kernel="onednn")
    assert execution.serving(first) == execution.serving(second) == Serving("onednn", None)
    assert dense == model.layers[2]


def test_one_openmp_thread_computes_the_same_numbers():
    layer = _gru(True, True, False, ONEDNN)
    single = _with_options(layer, ONEDNN.replace(onednn_threads=1))
    params = _user_params(layer, seed=17)
    x, h0 = _inputs()

    def grads(layer):
        def loss(p, x, h0):
            y, h = layer.apply(p, x, initial_state=h0)
            return jnp.sum(jnp.sin(y)) + jnp.sum(h * h)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, x, h0)

    for got, want in zip(jax.tree.leaves(grads(single)), jax.tree.leaves(grads(layer))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert _ffi_calls(lambda p, x: single.apply(p, x), params, x) == 1
    with pytest.raises(jaxgru.errors.ConfigError, match="onednn_threads must be an int >= 1"):
        ExecutionOptions(kernel="onednn", onednn_threads=0)


def test_without_the_library_every_gru_runs_on_xla_and_serving_says_so(tmp_path):
    """A plain ``pip install jaxgru`` has no built kernel: ``kernel="onednn"`` then runs on
    XLA, with the same numbers (a fresh process, pointed at a library that is not there)."""
    script = (
        "import jax, jax.numpy as jnp, numpy as np, jaxgru\n"
        "from jaxgru import execution, onednn\n"
        "layer = jaxgru.GRU(5, execution=jaxgru.ExecutionOptions(kernel='onednn'))\n"
        "xla = jaxgru.GRU(5)\n"
        "params = layer.init(jax.random.key(0), 3)\n"
        "x = jax.random.normal(jax.random.key(1), (2, 7, 3))\n"
        "print(onednn.available(), execution.serving(layer).kernel)\n"
        "print(execution.serving(layer).reason)\n"
        "print(np.array_equal(layer.apply(params, x), xla.apply(params, x)))\n"
    )
    missing = tmp_path / "libjaxgru_onednn.so"
    env = {**os.environ, "JAXGRU_ONEDNN_LIB": str(missing), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    available, reason, same = proc.stdout.strip().splitlines()
    assert available == "False xla"
    assert reason == f"{missing} is not built (run `make native`)"
    assert same == "True"
