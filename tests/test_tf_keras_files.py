"""Files written by real tf_keras 2.x: full-model and weights-only .h5, hard_sigmoid, CuDNNGRU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import jaxgru

pytestmark = pytest.mark.oracle

tf_keras = pytest.importorskip("tf_keras")
L = tf_keras.layers


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return model


def _sequential():
    return _randomize(
        tf_keras.Sequential([
            L.GRU(5, return_sequences=True, input_shape=(None, 3),
                  recurrent_activation="hard_sigmoid"),
            L.GRU(4, return_sequences=True, reset_after=False, activation="relu"),
            L.Bidirectional(L.GRU(3, use_bias=False), merge_mode="sum"),
            L.Dense(2, activation="softmax"),
        ])
    )  # fmt: skip


X = np.random.default_rng(1).normal(size=(2, 7, 3)).astype(np.float32)


def test_full_model_h5_with_tf_keras_hard_sigmoid(tmp_path):
    k_model = _sequential()
    k_model.save(tmp_path / "model.h5")
    model, params = jaxgru.load_keras(tmp_path / "model.h5")
    assert model.layers[0].recurrent_activation == "hard_sigmoid_tf_keras"
    expected = k_model(X, training=False).numpy()
    assert np.max(np.abs(np.asarray(model.apply(params, X)) - expected)) <= 1e-5
    # Keras 3's hard_sigmoid would give other numbers: the distinction matters.
    keras3_meaning = dataclasses.replace(model.layers[0], recurrent_activation="hard_sigmoid")
    other = jaxgru.Sequential([keras3_meaning, *model.layers[1:]], input_shape=model.input_shape)
    assert np.max(np.abs(np.asarray(other.apply(params, X)) - expected)) > 1e-3


def test_weights_only_h5_by_name_and_by_order(tmp_path):
    k_model = _sequential()
    k_model.save(tmp_path / "model.h5")
    k_model.save_weights(tmp_path / "weights.h5")
    model, _ = jaxgru.load_keras(tmp_path / "model.h5")
    by_name = jaxgru.load_keras_weights(model, tmp_path / "weights.h5")
    for a, b in zip(jaxgru.to_keras_weights(model, by_name), k_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A model whose layer names differ reads the file by order, as tf_keras does.
    renamed = jaxgru.Sequential(
        [dataclasses.replace(layer, name=f"mine_{i}") for i, layer in enumerate(model.layers)],
        input_shape=(None, 3),
    )
    by_order = jaxgru.load_keras_weights(renamed, tmp_path / "weights.h5")
    assert np.max(np.abs(np.asarray(renamed.apply(by_order, X)) - k_model(X).numpy())) <= 1e-5
    with pytest.raises(jaxgru.KerasFileError, match="holds weights only"):
        jaxgru.load_keras(tmp_path / "weights.h5")


def test_functional_chain_h5(tmp_path):
    inputs = tf_keras.Input((None, 3))
    h = L.GRU(4, return_sequences=True, name="enc")(inputs)
    outputs = L.Dense(2, name="out")(L.GRU(3, name="dec")(h))
    k_model = _randomize(tf_keras.Model(inputs, outputs))
    k_model.save(tmp_path / "functional.h5")
    model, params = jaxgru.load_keras(tmp_path / "functional.h5")
    assert [layer.name for layer in model.layers] == ["enc", "dec", "out"]
    assert np.max(np.abs(np.asarray(model.apply(params, X)) - k_model(X).numpy())) <= 1e-5


def test_embedding_mask_zero_h5(tmp_path):
    k_model = _randomize(
        tf_keras.Sequential([
            L.Embedding(9, 3, mask_zero=True, input_shape=(None,)),
            L.GRU(4),
        ])
    )  # fmt: skip
    ids = np.array([[3, 4, 0, 0], [1, 2, 8, 0]], np.int32)
    k_model.save(tmp_path / "embedding.h5")
    model, params = jaxgru.load_keras(tmp_path / "embedding.h5")
    assert np.max(np.abs(np.asarray(model.apply(params, ids)) - k_model(ids).numpy())) <= 1e-5


def test_cudnn_gru_weights_are_converted_as_tf_keras_converts_them(tmp_path):
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU

    cudnn = _randomize(tf_keras.Sequential([CuDNNGRU(4, input_shape=(None, 3)), L.Dense(1)]))
    assert cudnn.get_weights()[2].shape == (24,)
    cudnn.save(tmp_path / "cudnn.h5")
    cudnn.save_weights(tmp_path / "cudnn_weights.h5")
    # The oracle: tf_keras's own GRU loading the cuDNN weights converts them.
    gru = tf_keras.Sequential([
        L.GRU(4, input_shape=(None, 3), reset_after=True, recurrent_activation="sigmoid"),
        L.Dense(1),
    ])  # fmt: skip
    gru.load_weights(tmp_path / "cudnn_weights.h5")
    model, params = jaxgru.load_keras(tmp_path / "cudnn.h5")
    ours = jaxgru.to_keras_weights(model, params)
    assert [w.shape for w in ours] == [w.shape for w in gru.get_weights()]
    for a, b in zip(ours, gru.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(np.asarray(model.apply(params, X)) - gru(X).numpy())) <= 1e-5


def test_live_tf_keras_model():
    k_model = _sequential()
    model, params = jaxgru.load_keras(k_model)
    assert model.layers[0].recurrent_activation == "hard_sigmoid_tf_keras"
    assert np.max(np.abs(np.asarray(model.apply(params, X)) - k_model(X).numpy())) <= 1e-5
