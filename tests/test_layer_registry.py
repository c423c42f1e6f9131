"""The layer protocol and the registry: built-in layers, a user's own layer, the errors."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass

import jax
import numpy as np
import pytest

import jaxgru
from jaxgru import config as experiment_config
from jaxgru.errors import ConfigError
from jaxgru.layer import layer_class, registered_layers
from tests import toy_layers
from tests.reference import gru_reference


def test_every_built_in_layer_is_registered_under_its_keras_name():
    built_in = [jaxgru.GRU, jaxgru.Dense, jaxgru.Embedding, jaxgru.Masking, jaxgru.Dropout,
                jaxgru.Bidirectional]  # fmt: skip
    for cls in built_in:
        assert layer_class(cls.__name__) is cls
    assert layer_class("CuDNNGRU") is jaxgru.GRU  # tf_keras's cuDNN layer loads as a GRU
    assert "CuDNNGRU" not in registered_layers()  # an alias: nothing is saved under it
    assert jaxgru.layer.keras_name(jaxgru.GRU(2)) == "GRU"
    assert layer_class("LSTM") is None


def test_every_built_in_layer_follows_the_protocol():
    layers = [jaxgru.GRU(2), jaxgru.Dense(2), jaxgru.Embedding(4, 2), jaxgru.Masking(),
              jaxgru.Dropout(0.5), jaxgru.Bidirectional(jaxgru.GRU(2))]  # fmt: skip
    assert all(isinstance(layer, jaxgru.Layer) for layer in layers)
    assert not isinstance("GRU", jaxgru.Layer)


def test_register_refuses_a_class_without_the_protocol_methods():
    class NotALayer:
        def apply(self, params, x):
            return x

    with pytest.raises(ConfigError, match=r"lacks \['param_shapes', 'init', 'compute_mask'"):
        jaxgru.register_layer("NotALayer", NotALayer)
    assert layer_class("NotALayer") is None


def test_register_refuses_a_name_held_by_another_class():
    @dataclass(frozen=True)
    class OtherScale(toy_layers.Scale):
        pass

    with pytest.raises(ValueError, match=r"'jaxgru_test>Scale' is already registered to Scale"):
        jaxgru.register_layer(toy_layers.KERAS_NAME, OtherScale)
    jaxgru.register_layer(toy_layers.KERAS_NAME, toy_layers.Scale)  # the same class: no error
    assert layer_class(toy_layers.KERAS_NAME) is toy_layers.Scale


def test_register_works_as_a_decorator():
    @jaxgru.register_layer("jaxgru_test>Decorated")
    @dataclass(frozen=True)
    class Decorated(toy_layers.Scale):
        pass

    assert layer_class("jaxgru_test>Decorated") is Decorated
    assert jaxgru.layer.keras_class_name(Decorated()) == "Decorated"


def _toy_model():
    layers = [toy_layers.Scale(1.5), jaxgru.GRU(5, reset_after=False), jaxgru.Dense(2)]
    return jaxgru.Sequential(layers, input_shape=(7, 3))


def _random_params(model, seed=0):
    rng = np.random.default_rng(seed)
    shapes = model.param_shapes()
    return jax.tree.map(
        lambda shape: rng.normal(scale=0.5, size=shape).astype(np.float32),
        shapes, is_leaf=lambda node: isinstance(node, tuple),
    )  # fmt: skip


def test_a_user_layer_in_a_sequential_matches_the_float64_reference(float64):
    model = _toy_model()
    assert [layer.name for layer in model.layers] == ["scale", "gru", "dense"]  # Keras's names
    assert model.count_params() == 3 + (3 * 15 + 5 * 15 + 15) + (5 * 2 + 2)
    params = _random_params(model)
    x = np.random.default_rng(1).normal(size=(2, 7, 3))
    scaled = x * np.float64(params["scale"]["w"]) * 1.5
    g = {k: np.float64(v) for k, v in params["gru"].items()}
    _, h, _ = gru_reference(scaled, g["kernel"], g["recurrent_kernel"], g["bias"],
                            reset_after=False)  # fmt: skip
    expected = h @ np.float64(params["dense"]["kernel"]) + np.float64(params["dense"]["bias"])
    got = model.apply(jax.tree.map(np.float64, params), x)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-12)


def test_a_user_layer_is_saved_under_its_registered_name_and_loads_back(tmp_path):
    model, params = _toy_model(), _random_params(_toy_model())
    jaxgru.save_keras(model, params, tmp_path / "toy.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "toy.keras").read("config.json"))
    entry = config["config"]["layers"][1]
    assert (entry["module"], entry["class_name"], entry["registered_name"]) == (
        None,
        "Scale",
        "jaxgru_test>Scale",
    )  # fmt: skip, as Keras writes a custom layer
    assert entry["config"]["factor"] == 1.5
    loaded, loaded_params = jaxgru.load_keras(tmp_path / "toy.keras")
    assert loaded.layers[:2] == model.layers[:2]  # (Dense reads back activation "linear")
    jax.tree.map(np.testing.assert_array_equal, loaded_params, params)


def test_an_unregistered_layer_runs_but_is_refused_by_the_keras_writer(tmp_path):
    @dataclass(frozen=True)
    class Unregistered(toy_layers.Scale):
        pass

    model = jaxgru.Sequential([Unregistered(2.0), jaxgru.GRU(2)], input_shape=(4, 3))
    params = model.init(jax.random.key(0))
    assert model.apply(params, np.ones((1, 4, 3))).shape == (1, 2)
    with pytest.raises(jaxgru.KerasFileError, match=r"jaxgru.register_layer\('KerasClassName'"):
        jaxgru.save_keras(model, params, tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_a_sequential_refuses_what_is_not_a_layer():
    with pytest.raises(ConfigError, match=r"cannot hold int: a layer needs name, param_shapes"):
        jaxgru.Sequential([3], input_shape=(4, 3))


def test_a_config_names_a_registered_layer_by_its_keras_name():
    layers = [{"type": toy_layers.KERAS_NAME, "factor": 2.0}, {"type": "GRU", "units": 3}]
    raw = {"name": "t", "data": {"kind": "sine"}, "model": {"layers": layers}}
    resolved = experiment_config.resolve(raw)
    layer = experiment_config.build_layer(resolved["model"]["layers"][0])
    assert layer == toy_layers.Scale(2.0)
    with pytest.raises(experiment_config.ConfigError, match=r"unknown key 'scale'.*factor"):
        experiment_config.resolve({**raw, "model": {"layers": [{**layers[0], "scale": 1}]}})
