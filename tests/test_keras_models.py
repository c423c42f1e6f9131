"""Whole models against real Keras 3: predictions, every weight's gradient, .keras round trips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from tests.helpers import max_rel_error
from tests.keras_models import NAMES, build

pytestmark = pytest.mark.oracle

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


def _as_list(out):
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


@pytest.mark.parametrize("name", NAMES)
def test_live_model_predictions_and_gradients_match_keras(name):
    k_model, x = build(name)
    model, params = jaxgru.load_keras(k_model)
    keras_layers = [la.name for la in k_model.layers if type(la).__name__ != "InputLayer"]
    assert [layer.name for layer in model.layers] == keras_layers
    assert model.count_params() == k_model.count_params()

    k_out = _as_list(k_model(x, training=False))
    j_out = _as_list(model.apply(params, x))
    assert [o.shape for o in j_out] == [o.shape for o in k_out]
    for j, k in zip(j_out, k_out):
        assert np.max(np.abs(j - k)) <= 1e-5

    cots = [np.random.default_rng(3).normal(size=o.shape).astype(np.float32) for o in k_out]
    with tf.GradientTape() as tape:
        outs = _as_list_tf(k_model(x, training=False))
        loss = sum(tf.reduce_sum(o * c) for o, c in zip(outs, cots))
    k_grads = tape.gradient(loss, k_model.trainable_weights)

    def jax_loss(params):
        outs = model.apply(params, x)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        return sum(jnp.sum(o * c) for o, c in zip(outs, cots))

    j_grads = jaxgru.to_keras_weights(model, jax.grad(jax_loss)(params))
    assert len(j_grads) == len(k_grads)
    for variable, j, k in zip(k_model.trainable_weights, j_grads, k_grads):
        assert max_rel_error(j, np.asarray(tf.convert_to_tensor(k))) <= 1e-4, variable.path


def _as_list_tf(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("name", NAMES)
def test_keras_file_loads_and_round_trips_through_jaxgru(name, tmp_path):
    k_model, x = build(name)
    k_model.save(tmp_path / "keras.keras")
    expected = _as_list(k_model(x, training=False))

    model, params = jaxgru.load_keras(tmp_path / "keras.keras")
    for j, k in zip(_as_list(model.apply(params, x)), expected):
        assert np.max(np.abs(j - k)) <= 1e-5

    jaxgru.save_keras(model, params, tmp_path / "jaxgru.keras")
    reloaded = keras.models.load_model(tmp_path / "jaxgru.keras")
    for r, k in zip(_as_list(reloaded(x, training=False)), expected):
        assert np.max(np.abs(r - k)) <= 1e-5
    assert [w.shape for w in reloaded.get_weights()] == [w.shape for w in k_model.get_weights()]


@pytest.mark.parametrize("name", ["stacked_grus", "bidirectional_ave_seq", "embedding_mask_zero"])
def test_weights_files_both_ways(name, tmp_path):
    k_model, _ = build(name)
    model, params = jaxgru.load_keras(k_model)
    k_model.save_weights(tmp_path / "keras.weights.h5")
    loaded = jaxgru.load_keras_weights(model, tmp_path / "keras.weights.h5")
    for a, b in zip(jaxgru.to_keras_weights(model, loaded), k_model.get_weights()):
        np.testing.assert_array_equal(a, b)

    jaxgru.save_keras_weights(model, params, tmp_path / "jaxgru.weights.h5")
    fresh, _ = build(name)
    fresh.load_weights(tmp_path / "jaxgru.weights.h5")
    for a, b in zip(fresh.get_weights(), k_model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["stacked_grus", "masking_padded", "functional_chain"])
def test_full_model_h5_written_by_keras_3(name, tmp_path):
    k_model, x = build(name)
    k_model.save(tmp_path / "model.h5")
    model, params = jaxgru.load_keras(tmp_path / "model.h5")
    for j, k in zip(_as_list(model.apply(params, x)), _as_list(k_model(x, training=False))):
        assert np.max(np.abs(j - k)) <= 1e-5


def test_whole_model_weight_lists_follow_get_weights_order():
    k_model, _ = build("bidirectional_concat_seq")
    model, _ = jaxgru.load_keras(k_model)
    params = jaxgru.from_keras_weights(model, k_model.get_weights())
    assert list(params) == [layer.name for layer in k_model.layers[1:]]  # no Masking params
    assert list(params[k_model.layers[1].name]) == ["forward_layer", "backward_layer"]
    for a, b in zip(jaxgru.to_keras_weights(model, params), k_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"'bidirectional\w*/backward_layer/bias' expected shape"):
        bad = k_model.get_weights()
        bad[5] = bad[5][:, :3]  # the backward GRU bias, (2, 12) cut to (2, 3)
        jaxgru.from_keras_weights(model, bad)
