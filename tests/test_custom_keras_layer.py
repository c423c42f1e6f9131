"""A user's own Keras layer, registered in jaxgru, in files written by real Keras 3 and tf_keras.

The Keras side is the custom-layer pattern of the Keras guide "Making new layers and models via
subclassing" (keras.io/guides/making_new_layers_and_models_via_subclassing): a layer with one
weight made in ``build`` and a ``get_config``, registered with
``register_keras_serializable``. jaxgru's twin is ``tests/toy_layers.Scale``.
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru
from tests.toy_layers import Scale

pytestmark = pytest.mark.oracle

keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")

X = np.random.default_rng(1).normal(size=(2, 7, 3)).astype(np.float32)


def _twin(base):
    class KerasScale(base.layers.Layer):
        def __init__(self, factor=1.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), name="w", initializer="ones")

        def call(self, x):
            return x * self.w * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    KerasScale.__name__ = KerasScale.__qualname__ = "Scale"
    return base.saving.register_keras_serializable(package="jaxgru_test")(KerasScale)


KerasScale, TfKerasScale = _twin(keras), _twin(tf_keras)


def _randomize(model):
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.8, 0.8, w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model


def _keras_model():
    L = keras.layers
    return _randomize(keras.Sequential([
        keras.Input((7, 3)), KerasScale(1.5), L.GRU(5, return_sequences=True),
        L.GRU(4, reset_after=False), L.Dense(2),
    ]))  # fmt: skip


def _close(model, params, expected):
    np.testing.assert_allclose(np.asarray(model.apply(params, X)), expected, atol=1e-5)


@pytest.mark.parametrize("file_name", ["model.keras", "model.h5"])
def test_a_keras_3_file_with_the_user_layer_loads_exactly(tmp_path, file_name):
    k_model = _keras_model()
    k_model.save(tmp_path / file_name)
    model, params = jaxgru.load_keras(tmp_path / file_name)
    assert isinstance(model.layers[0], Scale) and model.layers[0].factor == 1.5
    _close(model, params, k_model(X).numpy())


def test_keras_3_weights_file_loads_into_a_jaxgru_model(tmp_path):
    k_model = _keras_model()
    k_model.save_weights(tmp_path / "model.weights.h5")
    model, _ = jaxgru.load_keras(_keras_model())  # the architecture, from a live model
    params = jaxgru.load_keras_weights(model, tmp_path / "model.weights.h5")
    _close(model, params, k_model(X).numpy())


def test_jaxgru_writes_files_keras_loads_with_its_custom_layer(tmp_path):
    k_model = _keras_model()
    model, params = jaxgru.load_keras(k_model)
    jaxgru.save_keras(model, params, tmp_path / "back.keras")
    reloaded = keras.models.load_model(tmp_path / "back.keras")
    assert type(reloaded.layers[0]) is KerasScale
    np.testing.assert_allclose(reloaded(X).numpy(), k_model(X).numpy(), atol=1e-6)
    jaxgru.save_keras_weights(model, params, tmp_path / "back.weights.h5")
    fresh = keras.models.clone_model(k_model)
    fresh.load_weights(tmp_path / "back.weights.h5")
    np.testing.assert_allclose(fresh(X).numpy(), k_model(X).numpy(), atol=1e-6)


def test_a_tf_keras_h5_with_the_user_layer_loads_exactly(tmp_path):
    L = tf_keras.layers
    k_model = _randomize(tf_keras.Sequential([
        L.InputLayer((7, 3)), TfKerasScale(0.7), L.GRU(4), L.Dense(1),
    ]))  # fmt: skip
    k_model.save(tmp_path / "model.h5")
    k_model.save_weights(tmp_path / "weights.h5")
    model, params = jaxgru.load_keras(tmp_path / "model.h5")
    assert model.layers[0] == Scale(0.7, name=k_model.layers[0].name)
    expected = k_model(X, training=False).numpy()
    _close(model, params, expected)
    _close(model, jaxgru.load_keras_weights(model, tmp_path / "weights.h5"), expected)


def test_a_file_naming_an_unregistered_layer_says_how_to_register_it(tmp_path):
    @keras.saving.register_keras_serializable(package="jaxgru_test")
    class Shift(keras.layers.Layer):
        def call(self, x):
            return x + 1.0

    model = keras.Sequential([keras.Input((7, 3)), Shift(), keras.layers.GRU(2)])
    model.save(tmp_path / "m.keras")
    with pytest.raises(jaxgru.KerasFileError, match=r"class Shift is not supported.*register_"):
        jaxgru.load_keras(tmp_path / "m.keras")
