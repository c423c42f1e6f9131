"""Bad Keras files get one clear KerasFileError (a ValueError); writes never leave half a file."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxgru
from jaxgru import KerasFileError
from tests.helpers import edit_keras_weights, rewrite_zip
from tests.keras_models import build

pytestmark = pytest.mark.oracle

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    """A real .keras written by Keras 3, an input, and jaxgru's predictions from that file."""
    k_model, x = build("stacked_grus")
    path = tmp_path_factory.mktemp("files") / "model.keras"
    k_model.save(path)
    model, params = jaxgru.load_keras(path)
    return path, x, np.asarray(model.apply(params, x))


def test_missing_path(tmp_path):
    with pytest.raises(KerasFileError, match=r"nope\.keras: no such file"):
        jaxgru.load_keras(tmp_path / "nope.keras")


def test_not_a_keras_file(tmp_path):
    (tmp_path / "notes.keras").write_text("hello")
    with pytest.raises(KerasFileError, match=r"neither a \.keras \(zip\) nor an HDF5"):
        jaxgru.load_keras(tmp_path / "notes.keras")


@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_keras_file(keras_file, tmp_path, fraction):
    data = keras_file[0].read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(KerasFileError, match=r"damaged or truncated"):
        jaxgru.load_keras(tmp_path / "cut.keras")


def test_truncated_h5_file(tmp_path):
    k_model, _ = build("gru_dense_softmax")
    k_model.save(tmp_path / "model.h5")
    data = (tmp_path / "model.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(KerasFileError, match=r"damaged or truncated"):
        jaxgru.load_keras(tmp_path / "cut.h5")


@pytest.mark.parametrize("entry", ["config.json", "model.weights.h5"])
def test_missing_zip_entry(keras_file, tmp_path, entry):
    rewrite_zip(keras_file[0], tmp_path / "m.keras", drop=[entry])
    with pytest.raises(KerasFileError, match=rf"has no '{entry}' entry"):
        jaxgru.load_keras(tmp_path / "m.keras")


@pytest.mark.parametrize(
    ("layer", "class_name"),
    [("lstm", "LSTM"), ("unit_normalization", "UnitNormalization")],
)
def test_unsupported_layer_names_layer_class_and_what_is_supported(tmp_path, layer, class_name):
    inner = keras.layers.LSTM(3) if class_name == "LSTM" else keras.layers.UnitNormalization()
    keras.Sequential([keras.Input((7, 3)), inner]).save(tmp_path / "m.keras")
    pattern = rf"layer '{layer}\w*' of class {class_name} is not supported \(.*\); jaxgru reads "
    with pytest.raises(KerasFileError, match=pattern):
        jaxgru.load_keras(tmp_path / "m.keras")


def test_every_unsupported_layer_is_named_at_once_with_what_to_do(tmp_path):
    """A model mixing layers jaxgru reads (Conv1D, BatchNormalization, Activation, GRU,
    TimeDistributed) with ones it refuses, each for its own reason: an LSTM, a Lambda, a
    preprocessing layer, and one not built yet (twice)."""
    L = keras.layers
    model = keras.Sequential([
        keras.Input((20, 3)), L.Rescaling(0.5), L.Conv1D(4, 5, strides=2),
        L.BatchNormalization(), L.Activation("relu"), L.UnitNormalization(),
        L.Lambda(lambda t: t * 2), L.GRU(4, return_sequences=True), L.UnitNormalization(),
        L.LSTM(3, return_sequences=True), L.TimeDistributed(L.Dense(1, activation="sigmoid")),
    ])  # fmt: skip
    model.save(tmp_path / "mixed.keras", zipped=True)
    with pytest.raises(KerasFileError) as caught:
        jaxgru.load_keras(tmp_path / "mixed.keras")
    message = str(caught.value)
    assert "\n" not in message
    for part in ("of class UnitNormalization is not supported (not supported yet)",
                 "of class LSTM is not supported (jaxgru implements GRUs, not LSTMs)",
                 "of class Lambda is not supported (its Python code cannot be read",
                 "of class Rescaling is not supported (a preprocessing layer"):  # fmt: skip
        assert part in message
    assert message.count("is not supported") == 5  # two UnitNormalization layers
    refused = message.split("; jaxgru reads")[0]
    for read in ("Conv1D", "BatchNormalization", "Activation", "TimeDistributed", "GRU"):
        assert f"class {read} " not in refused
    assert message.endswith("(jaxgru.register_layer adds your own)")


def test_branching_functional_graphs_now_load_as_keras_computes_them(tmp_path):
    """Graphs this file once checked for refusal (a merge, two outputs, a Dense-made
    initial_state) load as graph models and predict what Keras predicts."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    inputs = keras.Input((None, 3))
    merged = keras.layers.Add()([keras.layers.GRU(4)(inputs), keras.layers.GRU(4)(inputs)])
    two = [keras.layers.GRU(4)(inputs), keras.layers.GRU(3)(inputs)]
    feed = keras.layers.GRU(4, return_sequences=True)(inputs)
    wired = keras.layers.GRU(2)(
        feed, initial_state=keras.layers.Dense(2)(keras.layers.GRU(5)(inputs))
    )
    for i, outputs in enumerate([merged, two, wired]):
        model = keras.Model(inputs, outputs)
        model.set_weights([rng.normal(size=w.shape).astype(np.float32)
                           for w in model.get_weights()])  # fmt: skip
        model.save(tmp_path / f"graph{i}.keras")
        ours, params = jaxgru.load_keras(tmp_path / f"graph{i}.keras")
        expected = model.predict(x, verbose=0)
        got = ours.apply(params, x, training=False)
        for g, e in zip(got if i == 1 else [got], expected if i == 1 else [expected]):
            np.testing.assert_allclose(np.asarray(g), e, atol=1e-5, rtol=1e-5)


def test_weight_shape_that_does_not_match_its_config(keras_file, tmp_path):
    def shrink(f):
        del f["layers/gru_1/cell/vars/1"]
        f["layers/gru_1/cell/vars"].create_dataset("1", data=np.zeros((5, 12), np.float32))

    edit_keras_weights(keras_file[0], tmp_path / "m.keras", shrink)
    with pytest.raises(
        KerasFileError, match=r"'gru\w*/recurrent_kernel' expected shape \(5, 15\)"
    ):
        jaxgru.load_keras(tmp_path / "m.keras")


def test_missing_weight(keras_file, tmp_path):
    edit_keras_weights(
        keras_file[0], tmp_path / "m.keras", lambda f: f.__delitem__("layers/dense/vars/1")
    )
    with pytest.raises(KerasFileError, match=r"expected 10 arrays .* got 9"):
        jaxgru.load_keras(tmp_path / "m.keras")


def test_extra_weight(keras_file, tmp_path):
    def add(f):
        f["layers/dense/vars"].create_dataset("2", data=np.zeros(3, np.float32))

    edit_keras_weights(keras_file[0], tmp_path / "m.keras", add)
    with pytest.raises(KerasFileError, match=r"expected 10 arrays .* got 11"):
        jaxgru.load_keras(tmp_path / "m.keras")


def test_weights_for_a_layer_the_model_lacks(keras_file, tmp_path):
    def add(f):
        f.create_group("layers/dense_9/vars").create_dataset("0", data=np.zeros(3, np.float32))

    edit_keras_weights(keras_file[0], tmp_path / "m.keras", add)
    with pytest.raises(KerasFileError, match=r"holds arrays \['layers/dense_9/vars/0'\]"):
        jaxgru.load_keras(tmp_path / "m.keras")


def test_bad_config_json(keras_file, tmp_path):
    def strip_units(data):
        config = json.loads(data)
        del config["config"]["layers"][1]["config"]["units"]
        return json.dumps(config).encode()

    rewrite_zip(keras_file[0], tmp_path / "m.keras", replace={"config.json": strip_units})
    with pytest.raises(KerasFileError, match=r"config lacks 'units'"):
        jaxgru.load_keras(tmp_path / "m.keras")


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(keras_file, tmp_path, monkeypatch):
    model, params = jaxgru.load_keras(keras_file[0])
    target = tmp_path / "out.keras"
    jaxgru.save_keras(model, params, target)
    before = target.read_bytes()

    def crash(self, name, data, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", crash)
    with pytest.raises(OSError, match="disk full"):
        jaxgru.save_keras(model, params, target)
    with pytest.raises(OSError, match="disk full"):
        jaxgru.save_keras(model, params, tmp_path / "new.keras")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.keras"]


def test_invalid_params_are_refused_before_anything_is_written(keras_file, tmp_path):
    model, params = jaxgru.load_keras(keras_file[0])
    head = model.layers[-1].name  # Keras's auto-name: dense, dense_3, ...
    params[head]["bias"] = params[head]["bias"][:1]
    with pytest.raises(ValueError, match=rf"'{head}/bias' expected shape \(2,\), got \(1,\)"):
        jaxgru.save_keras(model, params, tmp_path / "out.keras")
    assert list(tmp_path.iterdir()) == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_corrupted_keras_file_loads_identically_or_raises_the_documented_error(
    keras_file, tmp_path, data
):
    path, x, expected = keras_file
    original = path.read_bytes()
    corrupted = bytearray(original)
    if data.draw(st.booleans(), label="truncate"):
        corrupted = corrupted[: data.draw(st.integers(0, len(original) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 3), label="flips")):
            i = data.draw(st.integers(0, len(original) - 1), label="offset")
            corrupted[i] ^= data.draw(st.integers(1, 255), label="xor")
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(bytes(corrupted))
    try:
        model, params = jaxgru.load_keras(damaged)
    except KerasFileError:
        return
    np.testing.assert_array_equal(np.asarray(model.apply(params, x)), expected)
