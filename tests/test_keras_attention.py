"""Keras's attention layers (``Attention``, ``AdditiveAttention``, ``MultiHeadAttention``)
against real Keras 3 and tf_keras, every option, with masks on every input.

Each case is a small functional model: ``Masking`` on a query ``(7, 3)``, a value ``(5, 4)``
and a key (``(5, 3)`` or ``(5, 2)``), each padded differently, then the attention layer. Both
frameworks build it; jaxgru loads it from the live model and every file format, and its
forward (1e-5), its gradients of every weight (1e-4 relative, against ``tf.GradientTape``) and
its jaxgru -> ``.keras`` -> Keras 3 round trip are compared with the framework's own numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru
from tests.helpers import assert_gradients_match

pytestmark = pytest.mark.oracle

SHAPES = {"query": (7, 3), "value": (5, 4), "value3": (5, 3), "key3": (5, 3), "key2": (5, 2)}


def _data():
    """Inputs with padded steps (zeros the Masking layers mask), one pattern per input."""
    rng = np.random.default_rng(11)
    x = {name: rng.normal(size=(2, *shape)).astype(np.float32) for name, shape in SHAPES.items()}
    x["query"][1, 5:] = 0.0
    x["query"][0, 2] = 0.0  # a masked query step inside the sequence
    for name in ("value", "value3"):
        x[name][0, 4:] = 0.0
        x[name][1, 3:] = 0.0
    for name in ("key3", "key2"):
        x[name][0, 0] = 0.0
    allowed = rng.uniform(size=(2, 7, 5)) > 0.3
    allowed[:, :, 0] = True
    x["allowed"] = allowed
    return x


# case: (inputs used, build(L, tensors) -> output, frameworks that have it)
CASES = {
    "attention_dot": (
        ("query", "value3"),
        lambda L, t: L.Attention(dropout=0.2)([t["query"], t["value3"]]),
        ("keras", "tf_keras"),
    ),
    "attention_scaled_with_key": (
        ("query", "value", "key3"),
        lambda L, t: L.Attention(use_scale=True)([t["query"], t["value"], t["key3"]]),
        ("keras", "tf_keras"),
    ),
    "attention_concat_causal": (
        ("query", "value", "key3"),
        lambda L, t: L.Attention(use_scale=True, score_mode="concat")(
            [t["query"], t["value"], t["key3"]], use_causal_mask=True
        ),
        ("keras", "tf_keras"),
    ),
    "additive_with_key": (  # tf_keras sizes the scale by the value: all of one size
        ("query", "value3", "key3"),
        lambda L, t: L.AdditiveAttention()([t["query"], t["value3"], t["key3"]]),
        ("keras", "tf_keras"),
    ),
    "additive_unscaled_causal": (
        ("query", "value3"),
        lambda L, t: L.AdditiveAttention(use_scale=False)(
            [t["query"], t["value3"]], use_causal_mask=True
        ),
        ("keras", "tf_keras"),
    ),
    "mha": (
        ("query", "value"),
        lambda L, t: L.MultiHeadAttention(2, 3)(t["query"], t["value"]),
        ("keras", "tf_keras"),
    ),
    "mha_key_value_dim_output_shape_no_bias": (
        ("query", "value", "key2"),
        lambda L, t: L.MultiHeadAttention(3, 2, value_dim=4, output_shape=5, use_bias=False)(
            t["query"], t["value"], key=t["key2"]
        ),
        ("keras", "tf_keras"),
    ),
    "mha_causal_keywords": (
        ("query", "value"),
        lambda L, t: L.MultiHeadAttention(2, 3)(
            query=t["query"], value=t["value"], use_causal_mask=True
        ),
        ("keras", "tf_keras"),
    ),
    "mha_attention_mask": (
        ("query", "value", "allowed"),
        lambda L, t: L.MultiHeadAttention(2, 3)(
            t["query"], t["value"], attention_mask=t["allowed"]
        ),
        ("keras", "tf_keras"),
    ),
    "mha_dropout_masked_rows": (  # fully masked query rows: zeros in Keras 3, uniform in tf_keras
        ("query", "value"),
        lambda L, t: L.MultiHeadAttention(2, 3, dropout=0.3)(t["query"], t["value"]),
        ("keras", "tf_keras"),
    ),
    "mha_sliding_window": (
        ("query", "value"),
        lambda L, t: L.MultiHeadAttention(2, 3, sliding_window=2)(t["query"], t["value"]),
        ("keras",),
    ),
}


def _model(K, name):
    names, build, _ = CASES[name]
    L = K.layers
    inputs, tensors = [], {}
    for item in names:
        if item == "allowed":
            tensors[item] = K.Input((7, 5), dtype="bool", name=item)
            inputs.append(tensors[item])
        else:
            inputs.append(K.Input(SHAPES[item], name=item))
            tensors[item] = L.Masking(name=f"mask_{item}")(inputs[-1])
    model = K.Model(inputs, build(L, tensors), name=name)
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(scale=0.6, size=w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    data = _data()
    return model, [data[item] for item in names]


PAIRS = [(kind, name) for name, (_, _, kinds) in CASES.items() for kind in kinds]
KINDS = ["keras", "tf_keras"]


def _framework(kind):
    if kind == "keras":
        import keras

        return keras
    return pytest.importorskip("tf_keras")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``built(kind, name)``: the case's (model, inputs, files, Keras's output), each built
    once and saved in every format its framework writes."""
    cache = {}

    def get(kind, name):
        if (kind, name) not in cache:
            model, x = _model(_framework(kind), name)
            folder = tmp_path_factory.mktemp(f"{kind}_{name}")
            if kind == "keras":
                files = {".keras": folder / "m.keras", "keras3 .h5": folder / "m.h5"}
                for path in files.values():
                    model.save(path)
                files[".weights.h5"] = folder / "m.weights.h5"
                model.save_weights(files[".weights.h5"])
            else:
                files = {"tf_keras .h5": folder / "m.h5"}
                model.save(files["tf_keras .h5"])
            cache[kind, name] = (model, x, files, np.asarray(model.predict(x, verbose=0)))
        return cache[kind, name]

    return get


@pytest.mark.parametrize(("kind", "name"), PAIRS)
def test_an_attention_layer_loads_from_every_format_and_predicts_as_keras(built, kind, name):
    keras_model, x, files, expected = built(kind, name)
    loaded = {"live": jaxgru.load_keras(keras_model)}
    for fmt, path in files.items():
        if fmt == ".weights.h5":
            model, _ = jaxgru.load_keras(files[".keras"])
            loaded[fmt] = (model, jaxgru.load_keras_weights(model, path))
        else:
            loaded[fmt] = jaxgru.load_keras(path)
    for fmt, (model, params) in loaded.items():
        assert model.count_params() == keras_model.count_params(), fmt
        got = np.asarray(model.apply(params, x, training=False))
        assert got.shape == expected.shape, fmt
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=f"{name} {fmt}")


@pytest.mark.parametrize("kind", KINDS)
def test_the_masks_change_the_answer(built, kind):
    """The padded steps matter for these inputs: without its masks an attention layer gives
    other numbers, so the parity above checks the masks too."""
    keras_model, x, _files, expected = built(kind, "mha")
    model, params = jaxgru.load_keras(keras_model)
    layer = next(item for item in model.layers if isinstance(item, jaxgru.MultiHeadAttention))
    raw = np.asarray(layer.apply(params[layer.name], [x[0], x[1]]))  # no masks
    assert np.abs(raw - expected).max() > 1e-2


@pytest.mark.parametrize(("kind", "name"), PAIRS)
def test_an_attention_layers_gradients_match_keras(built, kind, name):
    import jax
    import jax.numpy as jnp
    import tensorflow as tf

    keras_model, x, _files, expected = built(kind, name)
    model, params = jaxgru.load_keras(keras_model)
    weights = np.random.default_rng(3).normal(size=expected.shape).astype(np.float32)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x, training=False) * weights))(params)
    grads = jax.tree.map(lambda g: g, grads)  # held as users hold them (re-sorted keys)
    ours = jaxgru.keras_io.to_keras_weights(model, grads, trainable_only=True)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(keras_model(x, training=False) * weights)
    theirs = tape.gradient(total, keras_model.trainable_weights)
    assert_gradients_match(ours, theirs)


@pytest.mark.parametrize(("kind", "name"), PAIRS)
def test_an_attention_layer_round_trips_through_keras_3(built, kind, name, tmp_path):
    import keras

    _keras_model, x, files, expected = built(kind, name)
    model, params = jaxgru.load_keras(next(iter(files.values())))
    path = tmp_path / "again.keras"
    if kind == "tf_keras" and name == "mha_dropout_masked_rows":
        with pytest.raises(jaxgru.KerasFileError, match="fully masked row"):
            jaxgru.save_keras(model, params, path)
        assert not path.exists()
        return
    jaxgru.save_keras(model, params, path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-5, rtol=1e-5)
    again, _ = jaxgru.load_keras(path)
    assert again.count_params() == model.count_params()


@pytest.mark.parametrize("kind", KINDS)
def test_fully_masked_rows_differ_between_keras_3_and_tf_keras_with_dropout(built, kind):
    """The rule the dropout case pins down: a query step the mask removes gets zero weights
    in Keras 3 (output = the projection's bias) and uniform weights in tf_keras."""
    keras_model, _x, _files, expected = built(kind, "mha_dropout_masked_rows")
    model, params = jaxgru.load_keras(keras_model)
    layer = next(item for item in model.layers if isinstance(item, jaxgru.MultiHeadAttention))
    assert layer.tf_keras_softmax == (kind == "tf_keras")
    bias = params[layer.name]["attention_output"]["bias"]
    masked_row = expected[1, 6]  # the query's padded step
    assert np.allclose(masked_row, bias, atol=1e-6) == (kind == "keras")


def _shared_mask_graph(K):
    """Two attention layers read one masked tensor, one through a Dropout that hands the
    tensor on unchanged at inference: Keras 3's MultiHeadAttention removes the mask of what
    it reads once it has run, so the layers after it attend without the mask."""
    L = K.layers
    ids = K.Input((7,), dtype="int32", name="ids")
    seq = L.GRU(5, return_sequences=True)(L.Embedding(11, 4, mask_zero=True)(ids))
    dropped = L.Dropout(0.3)(seq)
    first = L.MultiHeadAttention(2, 3, name="first")(dropped, dropped)
    second = L.MultiHeadAttention(2, 3, name="second")(seq, seq)
    third = L.Attention(name="third")([seq, seq])
    merged = L.Concatenate()([first, second, third])
    model = K.Model(ids, L.GRU(3)(merged))
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model, np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 0, 0, 0, 0]], np.int32)


@pytest.mark.parametrize("kind", KINDS)
def test_keras_3s_multi_head_attention_clears_the_masks_it_reads_as_keras_does(kind, tmp_path):
    keras_model, x = _shared_mask_graph(_framework(kind))
    expected = keras_model.predict(x, verbose=0)
    path = tmp_path / ("m.keras" if kind == "keras" else "m.h5")
    keras_model.save(path)
    for model, params in (jaxgru.load_keras(keras_model), jaxgru.load_keras(path)):
        got = np.asarray(model.apply(params, x, training=False))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
        # The rule matters here: the other framework's rule gives other numbers.
        flipped = type(model)(model.inputs, model.outputs, model.name, model.layers,
                              model.calls, legacy=not model.legacy)  # fmt: skip
        assert np.abs(np.asarray(flipped.apply(params, x)) - expected).max() > 1e-3


def test_return_attention_scores_and_use_gate_are_refused_with_the_fix(tmp_path):
    import keras

    L = keras.layers
    q = keras.Input((7, 3))
    out, _scores = L.MultiHeadAttention(2, 3)(q, q, return_attention_scores=True)
    with pytest.raises(jaxgru.KerasFileError, match=r"return_attention_scores.*attended values"):
        jaxgru.load_keras(keras.Model(q, out))
    gated = keras.Model(q, L.MultiHeadAttention(2, 3, use_gate=True)(q, q))
    gated.save(tmp_path / "gated.keras")
    with pytest.raises(jaxgru.KerasFileError, match="use_gate"):
        jaxgru.load_keras(tmp_path / "gated.keras")
