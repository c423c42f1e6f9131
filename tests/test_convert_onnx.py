"""``to_onnx`` run by onnxruntime must reproduce jaxgru (and so Keras) on every layout."""

from __future__ import annotations

import jax
import numpy as np
import onnxruntime as ort
import pytest

import jaxgru
from jaxgru import GRU, Bidirectional, Dense, Dropout, Embedding, Masking, Sequential
from jaxgru.activation_layers import ELU, Activation, LeakyReLU, ReLU, Softmax
from jaxgru.activations import KerasActivation
from jaxgru.convert import ConversionError, to_onnx
from tests.helpers import BATCH, FEATURES, TIME, UNITS
from tests.toy_layers import Scale

pytestmark = pytest.mark.oracle

X = np.random.default_rng(0).normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)
X_PADDED = X.copy()
X_PADDED[0, 4:] = 0.0  # right padding: 4 and 6 valid steps
X_PADDED[1, 6:] = 0.0

LAYOUTS = {
    "last_output": [GRU(UNITS)],
    "sequence_dense": [GRU(UNITS, return_sequences=True), Dense(4, activation="relu")],
    "reset_after_false": [
        GRU(UNITS, reset_after=False, return_sequences=True),
        GRU(4, reset_after=False),
    ],
    "no_bias": [GRU(UNITS, use_bias=False, return_sequences=True)],
    "go_backwards_sequence": [GRU(UNITS, go_backwards=True, return_sequences=True)],
    "go_backwards_last": [GRU(UNITS, go_backwards=True)],
    "hard_sigmoid_linear": [
        GRU(UNITS, recurrent_activation="hard_sigmoid", activation="linear", return_sequences=True)
    ],
    "relu_softsign": [GRU(UNITS, recurrent_activation="softsign", activation="relu")],
    "bidirectional_stack": [
        Bidirectional(GRU(UNITS, return_sequences=True)),
        Dropout(0.3),
        Bidirectional(GRU(4), merge_mode="sum"),
        Dense(2, activation="softmax"),
    ],
    "bidirectional_ave": [Bidirectional(GRU(UNITS, return_sequences=True), merge_mode="ave")],
    "bidirectional_mul_hard_sigmoid": [
        Bidirectional(
            GRU(UNITS, recurrent_activation="hard_sigmoid", activation="linear"), merge_mode="mul"
        )
    ],
    "bidirectional_reset_after_false": [Bidirectional(GRU(UNITS, reset_after=False))],
    "activation_layers": [
        GRU(UNITS, return_sequences=True),
        ReLU(max_value=0.3),
        LeakyReLU(negative_slope=0.2),
        ELU(alpha=0.6),
        Activation("softsign"),
        Dense(4, activation=KerasActivation("ELU", (("alpha", 0.4),))),
        Softmax(axis=1),
    ],
}
MASKED = {
    "masked_sequence": [Masking(), GRU(UNITS, return_sequences=True), Dense(2)],
    "masked_stack_last": [Masking(), GRU(UNITS, return_sequences=True), GRU(4)],
    "masked_go_backwards": [Masking(), GRU(UNITS, go_backwards=True, return_sequences=True)],
    "masked_go_backwards_last": [Masking(), GRU(UNITS, go_backwards=True)],
    "masked_bidirectional": [
        Masking(),
        Bidirectional(GRU(UNITS, return_sequences=True)),
        Bidirectional(GRU(3)),
    ],
    "masked_activation_layers": [Masking(), GRU(UNITS, return_sequences=True), ReLU(), GRU(3)],
}


def random_params(model: Sequential, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape: rng.uniform(-0.7, 0.7, shape).astype(np.float32),
        model.param_shapes(),
        is_leaf=lambda t: isinstance(t, tuple),
    )


def run_onnx(path, x) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


@pytest.mark.parametrize(
    ("name", "x"),
    [(name, X) for name in LAYOUTS] + [(name, X_PADDED) for name in MASKED],
)
def test_onnxruntime_reproduces_the_model(name, x, tmp_path):
    model = Sequential({**LAYOUTS, **MASKED}[name], input_shape=(None, FEATURES))
    params = random_params(model)
    to_onnx(model, params, tmp_path / "model.onnx")
    expected = np.asarray(model.apply(params, x))
    y = run_onnx(tmp_path / "model.onnx", x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=0)
    # symbolic batch and time: another batch size and length run in the same graph
    longer = np.concatenate([x, x[:, :3]], axis=1)[:1] if name in LAYOUTS else x[:1]
    np.testing.assert_allclose(
        run_onnx(tmp_path / "model.onnx", longer),
        np.asarray(model.apply(params, longer)),
        atol=1e-5,
    )


def test_embedding_with_mask_zero_exports_ids_and_lengths(tmp_path):
    model = Sequential(
        [Embedding(10, FEATURES, mask_zero=True), GRU(UNITS, return_sequences=True), GRU(4)],
        input_shape=(None,),
    )
    params = random_params(model)
    ids = np.array([[3, 1, 4, 1, 0, 0, 0], [2, 7, 1, 8, 2, 8, 0]], np.int64)
    to_onnx(model, params, tmp_path / "ids.onnx")
    np.testing.assert_allclose(
        run_onnx(tmp_path / "ids.onnx", ids), np.asarray(model.apply(params, ids)), atol=1e-5
    )


def test_onnx_of_a_real_keras_model_matches_keras(tmp_path):
    import keras

    import jaxgru

    keras_model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(name="mask"),
            keras.layers.Bidirectional(
                keras.layers.GRU(UNITS, return_sequences=True, name="g"), name="bi"
            ),
            keras.layers.GRU(4, reset_after=False, name="g2"),
            keras.layers.Dense(2, activation="sigmoid", name="head"),
        ]
    )
    rng = np.random.default_rng(2)
    keras_model.set_weights(
        [rng.uniform(-0.7, 0.7, w.shape).astype(np.float32) for w in keras_model.get_weights()]
    )
    keras_model.save(tmp_path / "k.keras")
    model, params = jaxgru.load_keras(tmp_path / "k.keras")
    to_onnx(model, params, tmp_path / "k.onnx")
    np.testing.assert_allclose(
        run_onnx(tmp_path / "k.onnx", X_PADDED),
        keras_model.predict(X_PADDED, verbose=0),
        atol=1e-5,
    )


def test_what_onnx_cannot_express_is_refused_and_no_file_is_written(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    cases = {
        "merge_mode=None": [Bidirectional(GRU(UNITS), merge_mode=None)],
        "wraps a go_backwards GRU": [Bidirectional(GRU(UNITS, go_backwards=True))],
        "activation 'selu' has no ONNX equivalent": [GRU(UNITS, activation="selu")],
        "activation 'gelu' has no ONNX equivalent": [GRU(UNITS), Dense(2, activation="gelu")],
        r"layer 'scale' \(Scale\) has no ONNX export; to_onnx exports Embedding, Masking": [
            Scale(2.0),
            GRU(UNITS),
        ],  # a user's registered layer
        r"ReLU\(max_value=None, negative_slope=0.0, threshold=0.1\) has no ONNX operator": [
            GRU(UNITS),
            ReLU(threshold=0.1),
        ],
        r"Softmax 'softmax' receives a mask": [
            Masking(),
            GRU(UNITS, return_sequences=True),
            Softmax(),
        ],
    }
    for message, layers in cases.items():
        model = Sequential(layers, input_shape=(None, FEATURES))
        with pytest.raises(ConversionError, match=message):
            to_onnx(model, random_params(model), out)
        assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


# The layers around GRUs, on a fixed-length input (Flatten and Reshape need it).
AROUND_GRUS = {
    "conv_front_end": [
        jaxgru.Conv1D(4, 3, strides=2, padding="same", activation="relu"),
        jaxgru.BatchNormalization(epsilon=1e-2),
        jaxgru.GRU(UNITS, return_sequences=True),
        jaxgru.LayerNormalization(),
        jaxgru.TimeDistributed(Dense(2, activation="sigmoid")),
    ],
    "causal_dilated_groups": [
        jaxgru.Conv1D(6, 2, padding="causal", dilation_rate=2, groups=3),
        jaxgru.PReLU(shared_axes=(1,)),
        jaxgru.MaxPooling1D(3, strides=2, padding="same"),
        jaxgru.GRU(UNITS),
    ],
    "pools_and_shapes": [
        jaxgru.Conv1D(4, 2, use_bias=False),
        jaxgru.AveragePooling1D(3, strides=2, padding="same"),
        jaxgru.Permute((2, 1)),
        jaxgru.Reshape((-1, 2)),
        jaxgru.GRU(UNITS, return_sequences=True),
        jaxgru.GlobalMaxPooling1D(),
    ],
    "pooled_classifier": [
        jaxgru.SpatialDropout1D(0.2),
        jaxgru.GRU(UNITS, return_sequences=True),
        jaxgru.GlobalAveragePooling1D(keepdims=True),
        jaxgru.Flatten(),
        Dense(2),
    ],
    "conv2d_spectrogram": [
        jaxgru.Reshape((TIME, FEATURES, 1)),
        jaxgru.Conv2D(3, (3, 2), strides=(2, 1), padding="same", activation="relu"),
        jaxgru.Conv2D(2, (2, 2), dilation_rate=(2, 1), use_bias=False),
        jaxgru.Reshape((-1, 2 * 2)),
        GRU(UNITS),
    ],
    "separable_crop_pad": [
        jaxgru.SeparableConv1D(
            4, 3, depth_multiplier=2, padding="same", dilation_rate=2, activation="tanh"
        ),
        jaxgru.SeparableConv1D(3, 2, strides=2, use_bias=False),
        jaxgru.ZeroPadding1D((2, 1)),
        jaxgru.Cropping1D((1, 2)),
        GRU(UNITS, return_sequences=True),
    ],
    "repeat_vector_autoencoder": [
        GRU(4),
        jaxgru.RepeatVector(TIME),
        GRU(3, return_sequences=True),
    ],
    "simple_rnn": [
        jaxgru.SimpleRNN(UNITS, return_sequences=True, go_backwards=True),
        jaxgru.SimpleRNN(4, activation="relu", return_sequences=True),
        jaxgru.SimpleRNN(3, use_bias=False),
    ],
}


@pytest.mark.parametrize("name", list(AROUND_GRUS))
def test_onnxruntime_reproduces_the_layers_around_grus(name, tmp_path):
    model = Sequential(AROUND_GRUS[name], input_shape=(TIME, FEATURES))
    params = random_params(model)
    # a BatchNormalization's variance stays positive
    params = {k: {n: np.abs(v) + 0.2 if n == "moving_variance" else v for n, v in p.items()}
              for k, p in params.items()}  # fmt: skip
    to_onnx(model, params, tmp_path / "model.onnx")
    expected = np.asarray(model.apply(params, X))
    y = run_onnx(tmp_path / "model.onnx", X)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=0)


def _graph_model():
    """Two inputs, masks from Masking, every merge and Dot (normalised and not)."""
    a, b = jaxgru.Input((TIME, FEATURES), name="first"), jaxgru.Input((5, FEATURES), name="second")
    seq_a = GRU(UNITS, return_sequences=True)(Masking()(a))
    code_a = GRU(4)(seq_a)
    code_b = GRU(4)(b)
    merged = [
        jaxgru.Add()([code_a, code_b]),
        jaxgru.Subtract()([code_a, code_b]),
        jaxgru.Multiply()([code_a, code_b, code_a]),
        jaxgru.Average()([code_a, code_b]),
        jaxgru.Maximum()([code_a, code_b]),
        jaxgru.Minimum()([code_a, code_b]),
        jaxgru.Dot(axes=1, normalize=True)([code_a, code_b]),
    ]
    scores = jaxgru.Dot(axes=(1, 2))([Dense(UNITS)(code_a), seq_a])  # (batch, time)
    pooled = jaxgru.Dot(axes=(1, 1))([scores, seq_a])  # (batch, units)
    head = Dense(2)(jaxgru.Concatenate()([*merged, pooled]))
    per_step = Dense(3)(jaxgru.Concatenate()([seq_a, seq_a]))
    return jaxgru.Model([a, b], [head, GRU(2)(per_step)])


def test_onnxruntime_reproduces_a_graph_model_with_merges_and_masks(tmp_path):
    model = _graph_model()
    params = random_params(model)
    x = [X_PADDED, np.random.default_rng(3).normal(size=(BATCH, 5, FEATURES)).astype(np.float32)]
    to_onnx(model, params, tmp_path / "graph.onnx")
    session = ort.InferenceSession(
        str(tmp_path / "graph.onnx"), providers=["CPUExecutionProvider"]
    )
    got = session.run(["output_0", "output_1"], {"first": x[0], "second": x[1]})
    expected = model.apply(params, x)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, np.asarray(e), atol=1e-5, rtol=0)
    # The mask matters: the second output reads it through both Concatenates.
    unmasked = model.apply(params, [X_PADDED + (X_PADDED == 0), x[1]])[1]
    assert np.abs(np.asarray(unmasked) - got[1]).max() > 1e-3


def test_a_keras_3_graph_with_recorded_mask_operations_exports_to_onnx(tmp_path):
    """Keras 3 records the masks as operation nodes (NotEqual, Any) feeding each GRU's
    mask=; the export follows the propagated masks those nodes compute."""
    import keras

    L = keras.layers
    ids = keras.Input((TIME,), dtype="int32", name="ids")
    extra = keras.Input((FEATURES,), name="extra")
    seq = L.GRU(UNITS, return_sequences=True)(L.Embedding(11, 4, mask_zero=True)(ids))
    code = L.GRU(4)(L.Concatenate()([seq, L.Dense(2)(seq)]))
    out = L.Dense(2)(L.Concatenate()([code, L.Dense(3)(extra)]))
    keras_model = keras.Model([ids, extra], out)
    rng = np.random.default_rng(0)
    keras_model.set_weights([rng.uniform(-0.7, 0.7, w.shape).astype(np.float32)
                             for w in keras_model.get_weights()])  # fmt: skip
    x_ids = np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 0, 0, 0, 0]], np.int32)
    x_extra = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    model, params = jaxgru.load_keras(keras_model)
    to_onnx(model, params, tmp_path / "keras.onnx")
    session = ort.InferenceSession(
        str(tmp_path / "keras.onnx"), providers=["CPUExecutionProvider"]
    )
    got = session.run(["output"], {"ids": x_ids.astype(np.int64), "extra": x_extra})[0]
    np.testing.assert_allclose(got, keras_model.predict([x_ids, x_extra], verbose=0), atol=1e-5)


def test_graph_models_onnx_cannot_express_are_refused(tmp_path):
    q = jaxgru.Input((TIME, FEATURES))
    seq = GRU(UNITS, return_sequences=True)(q)
    _, state = GRU(UNITS, return_state=True)(q)
    h0 = jaxgru.Input((UNITS,))
    cases = {
        r"no ONNX export: ONNX \(opset 17\) has no attention operator": jaxgru.Model(
            q, jaxgru.MultiHeadAttention(2, 3)(seq, seq)
        ),
        "several outputs": jaxgru.Model(q, state),
        "given initial_state": jaxgru.Model([q, h0], GRU(UNITS)(q, initial_state=h0)),
        "along axis 1": jaxgru.Model(q, jaxgru.Concatenate(axis=1)([Masking()(q), q])),
    }
    for message, model in cases.items():
        with pytest.raises(ConversionError, match=message):
            to_onnx(model, random_params(model), tmp_path / "model.onnx")
        assert not (tmp_path / "model.onnx").exists()


def test_layers_around_grus_onnx_cannot_express_are_refused(tmp_path):
    cases = {
        "SimpleRNN 'simple_rnn' receives a mask": [Masking(), jaxgru.SimpleRNN(UNITS)],
        "only axis=-1 is exported": [jaxgru.BatchNormalization(axis=1), GRU(UNITS)],
        "rms_scaling has no ONNX operator": [jaxgru.LayerNormalization(rms_scaling=True)],
        "GlobalAveragePooling1D 'global_average_pooling1d' receives a mask": [
            Masking(), GRU(UNITS, return_sequences=True), jaxgru.GlobalAveragePooling1D()],
        r"only TimeDistributed\(Dense\)": [jaxgru.TimeDistributed(jaxgru.ReLU())],
    }  # fmt: skip
    for message, layers in cases.items():
        model = Sequential(layers, input_shape=(TIME, FEATURES))
        with pytest.raises(ConversionError, match=message):
            to_onnx(model, random_params(model), tmp_path / "model.onnx")
        assert not (tmp_path / "model.onnx").exists()
