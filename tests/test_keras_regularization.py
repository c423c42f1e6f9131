"""Regularizers, constraints and masked losses against real Keras.

Each regularizer and constraint equals Keras's own on random arrays; a model that uses them
(the settings of keras.io's "Layer weight regularizers" and "Layer weight constraints" pages,
https://keras.io/api/layers/regularizers/ and https://keras.io/api/layers/constraints/, on an
Embedding + Conv1D + BiGRU text classifier) loads from every file format with them, its
penalty equals Keras's ``sum(model.losses)``, and it saves back for Keras 3; ``fit`` on a
masked, regularized sequence model with sample weights, metrics and validation data logs
Keras's history. (Per-step parity: ``test_fit_parity.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru
from jaxgru import constraints, regularizers, weight_rules
from jaxgru.errors import KerasFileError

pytestmark = pytest.mark.oracle

keras = pytest.importorskip("keras")

REGULARIZERS = [
    {"class_name": "L1", "config": {"l1": 0.3}},
    {"class_name": "L2", "config": {"l2": 0.2}},
    {"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.05}},
    {"class_name": "L1L2", "config": {}},
    {"class_name": "OrthogonalRegularizer", "config": {"factor": 0.4, "mode": "rows"}},
    {"class_name": "OrthogonalRegularizer", "config": {"factor": 0.2, "mode": "columns"}},
    "l1", "l2", "l1l2", "orthogonal_regularizer",
]  # fmt: skip

CONSTRAINTS = [
    ({"class_name": "MaxNorm", "config": {"max_value": 1.2, "axis": 0}}, (5, 7)),
    ({"class_name": "MaxNorm", "config": {"max_value": 0.8, "axis": [0, 1]}}, (3, 4, 6)),
    (
        {
            "class_name": "MinMaxNorm",
            "config": {"min_value": 0.9, "max_value": 1.4, "rate": 0.7, "axis": 1},
        },
        (5, 7),
    ),
    ({"class_name": "NonNeg", "config": {}}, (5, 7)),
    ({"class_name": "UnitNorm", "config": {"axis": 1}}, (5, 7)),
    ("max_norm", (5, 7)),
    ("min_max_norm", (5, 7)),
    ("non_neg", (4,)),
    ("unit_norm", (5, 7)),
]


def _array(shape, seed=0):
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    x[1] = 0.0  # a zero row: Keras's normalisation guards it with epsilon
    return x


@pytest.mark.parametrize("identifier", REGULARIZERS, ids=str)
def test_each_regularizer_equals_keras_on_random_arrays(identifier):
    x = _array((5, 7))  # given to Keras as a tensor, as its variables are (NumPy differs)
    theirs = float(keras.regularizers.get(identifier)(keras.ops.convert_to_tensor(x)))
    ours = float(regularizers.get(identifier)(x))
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9)
    if theirs == 0.0:  # L1L2() (and "l1l2") adds nothing; the others have a value to compare
        assert identifier in ({"class_name": "L1L2", "config": {}}, "l1l2")


@pytest.mark.parametrize(("identifier", "shape"), CONSTRAINTS, ids=str)
def test_each_constraint_equals_keras_on_random_arrays(identifier, shape):
    w = 2 * _array(shape, seed=3)
    theirs = np.asarray(keras.constraints.get(identifier)(keras.ops.convert_to_tensor(w)))
    ours = np.asarray(constraints.get(identifier)(w))
    assert not np.allclose(theirs, w)  # the constraint changed the array
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def _text_classifier(K):
    """An Embedding + Conv1D + BiGRU classifier with the keras.io pages' settings: the Dense
    regularizers of "Layer weight regularizers" (L1L2(1e-5, 1e-4), L2(1e-4) on the bias,
    L2(1e-5) activity) and "max_norm(2.)" of "Layer weight constraints"; larger factors on the
    recurrent layers so their penalties show, and an ActivityRegularization layer."""
    L, r, c = K.layers, K.regularizers, K.constraints
    ids = K.Input((7,), dtype="int32")
    e = L.Embedding(11, 4, embeddings_regularizer=r.L2(0.01),
                    embeddings_constraint=c.UnitNorm(axis=1))(ids)  # fmt: skip
    conv = L.Conv1D(4, 3, padding="same", kernel_regularizer=r.L2(0.02),
                    activity_regularizer=r.L1(0.01))(e)  # fmt: skip
    conv = L.BatchNormalization(beta_regularizer=r.L1(0.05), gamma_regularizer=r.L2(0.1))(conv)
    gru = L.GRU(3, kernel_regularizer=r.L1L2(0.01, 0.02), recurrent_regularizer=r.L2(0.05),
                bias_regularizer=r.L1(0.03), recurrent_constraint=c.MaxNorm(2.0),
                return_sequences=True)  # fmt: skip
    seq = L.Bidirectional(gru, name="bigru")(conv)
    pooled = L.ActivityRegularization(l1=0.01, l2=0.02)(L.GlobalAveragePooling1D()(seq))
    head = L.Dense(2, kernel_regularizer=r.L1L2(l1=1e-5, l2=1e-4),
                   bias_regularizer=r.L2(1e-4), activity_regularizer=r.L2(1e-5),
                   kernel_constraint=c.MaxNorm(2.0), name="head")(pooled)  # fmt: skip
    model = K.Model(ids, head)
    rng = np.random.default_rng(0)
    weights = [rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()]
    bn = next(layer for layer in model.layers if isinstance(layer, L.BatchNormalization))
    at = [id(w) for w in model.weights].index(id(bn.moving_variance))
    weights[at] = np.abs(weights[at]) + 0.5  # a variance
    model.set_weights([w.astype(np.float32) for w in weights])
    return model


def _penalty(model, params, x):
    """jaxgru's regularization on one batch: every weight's penalty plus the activity's."""
    run = model.forward(params, x)
    return float(weight_rules.weight_penalty(model, params) + run.activity)


X_IDS = np.array([[3, 1, 4, 1, 5, 0, 0], [6, 5, 3, 5, 8, 9, 7]], np.int32)


@pytest.mark.parametrize("kind", ["keras", "tf_keras"])
def test_a_regularized_model_loads_from_every_format_with_keras_s_penalty(kind, tmp_path):
    K = pytest.importorskip(kind)
    model = _text_classifier(K)
    model(X_IDS)  # Keras records the activity penalties of this call in model.losses
    expected = float(sum(float(loss) for loss in model.losses))
    paths = [tmp_path / "m.h5"] + ([tmp_path / "m.keras"] if kind == "keras" else [])
    for path in paths:
        model.save(path)
        loaded, params = jaxgru.load_keras(path)
        assert _penalty(loaded, params, X_IDS) == pytest.approx(expected, rel=1e-5), path
        layers = {item.name: item for item in loaded.layers}
        gru = layers["bigru"].layer
        assert type(gru.recurrent_regularizer) is regularizers.L2  # tf_keras keeps float32's
        assert gru.recurrent_regularizer.l2 == pytest.approx(0.05)  # 0.05000000074505806
        assert gru.recurrent_constraint == constraints.MaxNorm(2.0, 0)
        dense = layers["head"].kernel_regularizer
        assert (type(dense), dense.l1, dense.l2) == (regularizers.L1L2, pytest.approx(1e-5),
                                                     pytest.approx(1e-4))  # fmt: skip
    if kind == "keras":  # back to Keras 3, which reads the same regularizers
        jaxgru.save_keras(loaded, params, tmp_path / "again.keras")
        again = K.models.load_model(tmp_path / "again.keras")
        again(X_IDS)
        assert float(sum(float(v) for v in again.losses)) == pytest.approx(expected, rel=1e-5)
        saved = {item.name: _rules(item.get_config()) for item in again.layers}
        for item in model.layers[1:]:
            assert saved[item.name] == _rules(item.get_config()), item.name
        assert saved["bigru"]["layer"]["recurrent_constraint"]["class_name"] == "MaxNorm"


def _rules(config: dict) -> dict:
    """The regularizer and constraint entries of a Keras layer config, nested layers' too."""
    found = {k: v for k, v in config.items() if k.endswith(("_regularizer", "_constraint"))}
    for key in ("layer", "backward_layer"):
        if isinstance(config.get(key), dict):
            found[key] = _rules(config[key]["config"])
    return found


def _masked_regressor(K):
    L, r = K.layers, K.regularizers
    model = K.Sequential([
        K.Input((7, 3)), L.Masking(),
        L.GRU(5, return_sequences=True, kernel_regularizer=r.L2(0.01),
              recurrent_regularizer=r.L1(0.005), activity_regularizer=r.L2(0.01)),
        L.Dense(1, kernel_regularizer=r.L1(0.01), kernel_constraint=K.constraints.MaxNorm(0.5)),
    ])  # fmt: skip
    rng = np.random.default_rng(2)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model


def _padded_sequences(samples, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 7, 3)).astype(np.float32)
    lengths = rng.integers(2, 8, samples)
    x[np.arange(7)[None, :] >= lengths[:, None]] = 0.0
    y = np.tanh(np.cumsum(x.sum(axis=2), axis=1))[..., None].astype(np.float32)
    return x, y


def test_fit_on_a_masked_regularized_model_logs_keras_s_history():
    """The masked loss and metric, sample weights, the regularization in loss and val_loss,
    the constraint after each step, a last partial batch: Keras's history, epoch by epoch."""
    model = _masked_regressor(keras)
    jax_model, params = jaxgru.load_keras(model)
    x, y = _padded_sequences(29, seed=4)
    x_val, y_val = _padded_sequences(11, seed=5)
    # per step: Keras 3 cannot combine a (samples,) weight with a (batch, time) mask
    weight = np.random.default_rng(6).uniform(0.2, 2.0, (29, 7)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    expected = model.fit(x, y, sample_weight=weight, batch_size=8, epochs=4, shuffle=False,
                         validation_data=(x_val, y_val), verbose=0).history  # fmt: skip
    params, history = jaxgru.fit(
        jax_model, params, x, y, sample_weight=weight, loss="mse", metrics=["mae"],
        optimizer="sgd", learning_rate=0.1, batch_size=8, epochs=4, shuffle=False,
        validation_data=(x_val, y_val), verbose=0,
    )  # fmt: skip
    for key in ("loss", "mae", "val_loss", "val_mae"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5, err_msg=key)
    assert expected["loss"][-1] < expected["loss"][0]
    for ours, theirs in zip(jaxgru.to_keras_weights(jax_model, params), model.get_weights(),
                            strict=True):  # fmt: skip
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    evaluated = jaxgru.evaluate(jax_model, params, x_val, y_val, metrics=["mae"], batch_size=8)
    theirs = model.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert evaluated["mae"] == pytest.approx(theirs["mae"], rel=1e-5)


def test_regularizers_jaxgru_does_not_apply_are_refused_naming_each(tmp_path):
    L, r = keras.layers, keras.regularizers
    model = keras.Sequential([
        keras.Input((7, 3)), L.ReLU(activity_regularizer=r.L2(0.1), name="relu"),
        L.LayerNormalization(beta_constraint="non_neg", name="norm"), L.GRU(4),
        L.Softmax(activity_regularizer=r.L1(0.1), name="soft"),
    ])  # fmt: skip
    with pytest.raises(KerasFileError) as refused:
        jaxgru.load_keras(model)
    message = str(refused.value)  # both layers, each with its key, in one message
    assert "layer 'relu' (ReLU): it sets activity_regularizer" in message
    assert "layer 'soft' (Softmax): it sets activity_regularizer" in message
    assert "set them to None" in message and "'norm'" not in message  # LayerNorm takes it

    class Custom(keras.regularizers.Regularizer):
        def __call__(self, x):
            return 0.1 * keras.ops.sum(x)

        def get_config(self):
            return {}

    custom = keras.Sequential([keras.Input((7, 3)), L.GRU(4, kernel_regularizer=Custom())])
    with pytest.raises(KerasFileError, match="unknown regularizer 'Custom'"):
        jaxgru.load_keras(custom)
    cell = keras.Sequential([keras.Input((7, 3)), L.RNN(L.GRUCell(4, bias_regularizer="l2"))])
    with pytest.raises(KerasFileError, match="bias_regularizer on its GRUCell"):
        jaxgru.load_keras(cell)


def test_an_activity_regularizer_sees_every_output_of_a_return_state_gru():
    """Keras regularizes each output tensor of the call (the sequence and the state) and
    divides each by the batch size."""
    L = keras.layers
    x_in = keras.Input((7, 3))
    seq, state = L.GRU(4, return_sequences=True, return_state=True,
                       activity_regularizer=keras.regularizers.L1L2(0.01, 0.02))(x_in)  # fmt: skip
    model = keras.Model(x_in, L.Dense(1)(L.Concatenate()([L.GlobalMaxPooling1D()(seq), state])))
    x = np.random.default_rng(7).normal(size=(3, 7, 3)).astype(np.float32)
    model(x)
    expected = float(sum(float(v) for v in model.losses))
    loaded, params = jaxgru.load_keras(model)
    assert _penalty(loaded, params, x) == pytest.approx(expected, rel=1e-5)
    seq_only = float(keras.regularizers.L1L2(0.01, 0.02)(model.layers[1](x)[0])) / 3
    assert expected > 1.05 * seq_only  # the state's penalty is in it
