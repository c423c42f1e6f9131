"""Keras files jaxgru used to load as a different model without a word, or to write so that
Keras refused them: now exact, or refused with the reason and the fix until jaxgru computes
them exactly (the graph-models issue).

Each model is built and saved by real Keras 3; a refusal is checked in every file format
Keras 3 writes (``.keras`` and full-model ``.h5``).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import jaxgru
from tests.helpers import edit_keras_weights, replace_dataset

pytestmark = pytest.mark.oracle

FORMATS = (".keras", ".h5")


def _save(model, tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    model.save(path)
    return path


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
                       for w in model.get_weights()])  # fmt: skip


def _activation_objects():
    import keras

    L = keras.layers
    return {
        "elu": L.ELU(alpha=0.5),
        "softmax_axis_1": L.Softmax(axis=1),  # over time, on a (batch, time, units) input
        "leaky_relu": L.LeakyReLU(negative_slope=0.1),
        "relu_clipped": L.ReLU(max_value=0.4, negative_slope=0.2, threshold=0.1),
        "relu6": L.ReLU(max_value=6.0),
        "activation_layer": L.Activation("softsign"),
    }


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize(
    "which", ["elu", "softmax_axis_1", "leaky_relu", "relu_clipped", "relu6", "activation_layer"]
)
def test_an_activation_layer_object_keeps_its_arguments(tmp_path, suffix, which):
    import jax
    import keras
    import tensorflow as tf

    from tests.helpers import max_rel_error

    L = keras.layers
    model = keras.Sequential([
        keras.Input((7, 3)), L.GRU(4, return_sequences=True),
        L.Dense(5, activation=_activation_objects()[which]),
    ])  # fmt: skip
    _randomise(model, seed=5)
    x = np.random.default_rng(6).normal(size=(2, 7, 3)).astype(np.float32)
    loaded, params = jaxgru.load_keras(_save(model, tmp_path, suffix))
    np.testing.assert_allclose(loaded.apply(params, x), model(x), rtol=1e-5, atol=1e-6)
    cotangent = np.random.default_rng(7).normal(size=(2, 7, 5)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) * cotangent)
    theirs = tape.gradient(loss, model.trainable_weights)
    ours = jaxgru.to_keras_weights(
        loaded, jax.grad(lambda p: (loaded.apply(p, x) * cotangent).sum())(params)
    )
    for o, t in zip(ours, theirs, strict=True):
        t = np.asarray(t)
        if np.abs(t).max() > 1e-5:
            assert max_rel_error(o, t) <= 1e-4
        else:  # zero in exact arithmetic (a bias under a softmax over time): round-off only
            np.testing.assert_allclose(o, t, atol=1e-6)
    jaxgru.save_keras(loaded, params, tmp_path / "jaxgru.keras")
    reloaded = keras.models.load_model(tmp_path / "jaxgru.keras")
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_an_activation_object_with_weights_is_refused(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((7, 3)), keras.layers.GRU(4),
                              keras.layers.Dense(5, activation=keras.layers.PReLU())])  # fmt: skip
    with pytest.raises(jaxgru.KerasFileError, match=r"activation PReLU.*a Keras layer object"):
        jaxgru.load_keras(_save(model, tmp_path, ".keras"))


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_layer_called_with_training_true_loads_and_predict_turns_it_off_as_keras_3(
    tmp_path, suffix
):
    """Monte Carlo dropout as the Keras functional API writes it (Gal & Ghahramani, 2016; the
    pattern of Géron, "Hands-On Machine Learning", ch. 11): Keras 3's ``predict`` runs it in
    inference mode, and so does jaxgru's ``training=False``; its statistics in ``model(x)``
    mode are checked in tests/test_keras_graph_models.py."""
    import keras

    L = keras.layers
    inputs = keras.Input((7, 3))
    hidden = L.GRU(6)(inputs)
    hidden = L.Dropout(0.3)(hidden, training=True)
    model = keras.Model(inputs, L.Dense(2)(hidden))
    _randomise(model)
    path = _save(model, tmp_path, suffix)
    ours, params = jaxgru.load_keras(path)
    assert dict(ours.calls[1].arguments) == {"training": True}
    x = np.random.default_rng(1).normal(size=(2, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(ours.apply(params, x, training=False)), model.predict(x, verbose=0),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_precision_policy_is_refused_not_loaded_as_float32(tmp_path, suffix, policy):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = keras.Sequential([keras.Input((7, 3)), keras.layers.GRU(4),
                                  keras.layers.Dense(2, dtype="float32")])  # fmt: skip
        path = _save(model, tmp_path, suffix)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(jaxgru.KerasFileError, match=rf"uses the dtype policy '{policy}'"):
        jaxgru.load_keras(path)


def test_a_6u_bias_in_a_keras_3_file_is_refused_as_keras_3_refuses_it(tmp_path):
    """Only tf_keras converts a CuDNNGRU's (6u,) bias; in a Keras 3 file it is an error."""
    import keras

    model = keras.Sequential([keras.Input((7, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    _randomise(model)
    good = _save(model, tmp_path, ".keras")
    odd = tmp_path / "odd.keras"  # the bias (2, 12) stored as (24,) = (6u,)
    edit_keras_weights(good, odd, replace_dataset("layers/gru/cell/vars/2", np.ravel))
    with pytest.raises(ValueError):
        keras.models.load_model(odd)
    with pytest.raises(
        jaxgru.KerasFileError, match=r"bias' expected shape \(2, 12\), got \(24,\)"
    ):
        jaxgru.load_keras(odd)
    loaded_model, params = jaxgru.load_keras(good)  # the file as Keras wrote it loads exactly
    x = np.random.default_rng(1).normal(size=(2, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded_model.apply(params, x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_stateful_model_keeps_its_batch_size_so_keras_loads_it_back(tmp_path, suffix):
    """The character model of TensorFlow's text generation tutorial (TF 2.x edition,
    tensorflow.org/text/tutorials/text_generation): Embedding, a stateful GRU, Dense logits,
    built for a fixed batch."""
    import keras

    L = keras.layers
    model = keras.Sequential([
        keras.Input(batch_shape=(2, None), dtype="int32"),
        L.Embedding(11, 4),
        L.GRU(5, return_sequences=True, stateful=True, recurrent_initializer="glorot_uniform"),
        L.Dense(11),
    ])  # fmt: skip
    _randomise(model)
    ids = np.random.default_rng(2).integers(0, 11, size=(2, 7)).astype(np.int32)
    path = _save(model, tmp_path, suffix)
    loaded, params = jaxgru.load_keras(path)
    assert loaded.batch_size == 2 and loaded.layer_input_shapes()[0] == (2, None)
    np.testing.assert_allclose(loaded.apply(params, ids), model(ids), rtol=1e-5, atol=1e-5)
    jaxgru.save_keras(loaded, params, tmp_path / "jaxgru.keras")
    reloaded = keras.models.load_model(tmp_path / "jaxgru.keras")
    assert reloaded.inputs[0].shape[0] == 2
    np.testing.assert_allclose(reloaded(ids), loaded.apply(params, ids), rtol=1e-5, atol=1e-5)


def test_a_stateful_model_without_a_batch_size_is_refused_on_export(tmp_path):
    model = jaxgru.Sequential([jaxgru.GRU(3, stateful=True)], input_shape=(None, 2))
    with pytest.raises(jaxgru.KerasFileError, match=r"batch_size=N"):
        jaxgru.save_keras(model, model.init(__import__("jax").random.key(0)), tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_initializer_arguments_are_kept_drawn_and_written_back(tmp_path):
    import jax
    import keras

    init, L = keras.initializers, keras.layers
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        L.Embedding(50, 3, embeddings_initializer=init.RandomUniform(-1.0, 1.0),
                    name="embedding"),
        L.GRU(40, kernel_initializer=init.RandomNormal(stddev=0.3),
              bias_initializer=init.Constant(0.01),
              recurrent_initializer=init.Orthogonal(gain=2.0), name="gru"),
        L.Dense(2, kernel_initializer=init.Constant(0.5), name="dense"),
    ])  # fmt: skip
    model.save(tmp_path / "m.keras")
    loaded, _ = jaxgru.load_keras(tmp_path / "m.keras")
    fresh = loaded.init(jax.random.key(0))
    np.testing.assert_array_equal(fresh["gru"]["bias"], np.full((2, 120), 0.01, np.float32))
    np.testing.assert_array_equal(fresh["dense"]["kernel"], np.full((40, 2), 0.5, np.float32))
    assert abs(float(np.std(fresh["gru"]["kernel"])) - 0.3) < 0.03  # 360 draws of N(0, 0.3)
    u = np.asarray(fresh["gru"]["recurrent_kernel"])
    np.testing.assert_allclose(u @ u.T, 4.0 * np.eye(40), atol=1e-4)  # orthogonal, gain 2
    embeddings = np.asarray(fresh["embedding"]["embeddings"])
    assert embeddings.min() >= -1.0 and embeddings.max() <= 1.0 and embeddings.max() > 0.5
    jaxgru.save_keras(loaded, fresh, tmp_path / "jaxgru.keras")
    layers = keras.models.load_model(tmp_path / "jaxgru.keras").layers
    assert layers[1].cell.bias_initializer.get_config()["value"] == 0.01
    assert layers[1].cell.kernel_initializer.get_config()["stddev"] == 0.3
    assert layers[1].cell.recurrent_initializer.get_config()["gain"] == 2.0
    assert layers[2].kernel_initializer.get_config()["value"] == 0.5
    assert layers[0].embeddings_initializer.get_config()["minval"] == -1.0


def test_a_subclassed_models_weights_load_by_attribute_name_not_by_position(tmp_path):
    """``MyModel`` of TensorFlow's text generation tutorial (tensorflow.org/text/tutorials/
    text_generation), with a second GRU of the same shape in front (an encoder and a decoder,
    which a load by position could swap silently): Keras 3's ``save_weights`` keeps each layer
    at the file's root under its attribute name."""
    import keras

    L = keras.layers

    class MyModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.embedding = L.Embedding(11, 4)
            self.encoder = L.GRU(4, return_sequences=True)
            self.gru = L.GRU(4, return_sequences=True, return_state=True)
            self.dense = L.Dense(11)

        def call(self, inputs):
            hidden, _ = self.gru(self.encoder(self.embedding(inputs)))
            return self.dense(hidden)

    model = MyModel()
    ids = np.random.default_rng(3).integers(0, 11, size=(2, 7)).astype(np.int32)
    model(ids)
    _randomise(model, seed=4)
    model.save_weights(tmp_path / "my_model.weights.h5")
    with h5py.File(tmp_path / "my_model.weights.h5") as f:
        assert "layers" not in f and {"embedding", "encoder", "gru", "dense"} <= set(f)
    ours = jaxgru.Sequential(
        [jaxgru.Embedding(11, 4, name="embedding"), jaxgru.GRU(4, return_sequences=True,
         name="encoder"), jaxgru.GRU(4, return_sequences=True, name="gru"),
         jaxgru.Dense(11, name="dense")], input_shape=(None,),
    )  # fmt: skip
    params = jaxgru.load_keras_weights(ours, tmp_path / "my_model.weights.h5")
    np.testing.assert_allclose(ours.apply(params, ids), model(ids), rtol=1e-5, atol=1e-5)
    swapped = jaxgru.Sequential(
        [jaxgru.Embedding(11, 4, name="embedding"), jaxgru.GRU(4, return_sequences=True,
         name="decoder"), jaxgru.GRU(4, return_sequences=True, name="gru"),
         jaxgru.Dense(11, name="dense")], input_shape=(None,),
    )  # fmt: skip
    with pytest.raises(jaxgru.KerasFileError, match=r"lacks 'decoder/cell/vars'.*attribute"):
        jaxgru.load_keras_weights(swapped, tmp_path / "my_model.weights.h5")


def test_tensorflow_checkpoints_and_saved_models_get_the_fix(tmp_path):
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((7, 3)), keras.layers.GRU(2)])
    tf.saved_model.save(model, str(tmp_path / "saved"))
    with pytest.raises(jaxgru.KerasFileError, match=r"is a TensorFlow SavedModel.*live model"):
        jaxgru.load_keras(tmp_path / "saved")
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    with pytest.raises(jaxgru.KerasFileError, match=r"is a TensorFlow checkpoint prefix"):
        jaxgru.load_keras_weights(jaxgru.Sequential([jaxgru.GRU(2)], input_shape=(7, 3)),
                                  tmp_path / "ckpt")  # fmt: skip


def test_a_stateful_bidirectional_carries_both_states_from_batch_to_batch_as_keras():
    import keras

    L = keras.layers
    model = keras.Sequential([
        keras.Input(batch_shape=(2, 7, 3)),
        L.Bidirectional(L.GRU(4, stateful=True, return_sequences=True), merge_mode="sum"),
        L.Dense(2),
    ])  # fmt: skip
    _randomise(model, seed=8)
    rng = np.random.default_rng(9)
    batches = [rng.normal(size=(2, 7, 3)).astype(np.float32) for _ in range(3)]
    loaded, params = jaxgru.load_keras(model)
    states = loaded.initial_states(2)
    assert set(states[loaded.layers[0].name]) == {"forward_layer", "backward_layer"}
    for x in batches:  # Keras carries each direction's state into the next call
        ours, states = loaded.apply(params, x, states=states)
        np.testing.assert_allclose(ours, model(x), rtol=1e-5, atol=1e-5)
    fresh = loaded.apply(params, batches[-1])  # from zeros: differs, so the states mattered
    assert np.abs(np.asarray(fresh) - np.asarray(ours)).max() > 1e-3


@pytest.mark.parametrize("merge_mode", ["concat", None])
def test_bidirectional_initial_state_and_return_state_as_keras(merge_mode):
    """Keras's call surface of ``Bidirectional(GRU(return_state=True))``: ``initial_state``
    split into the two directions, ``[output, h_forward, h_backward]`` returned (the
    encoder of a bidirectional seq2seq, e.g. the Keras example "Character-level recurrent
    sequence-to-sequence model", with a bidirectional encoder)."""
    import jax
    import keras
    import tensorflow as tf

    from tests.helpers import max_rel_error

    L = keras.layers
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    h0 = [rng.normal(size=(2, 4)).astype(np.float32) for _ in range(2)]
    theirs_layer = L.Bidirectional(L.GRU(4, return_sequences=True, return_state=True),
                                   merge_mode=merge_mode)  # fmt: skip
    theirs_layer(x, initial_state=h0)
    theirs_layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32)
                              for w in theirs_layer.get_weights()])  # fmt: skip
    ours_layer = jaxgru.Bidirectional(jaxgru.GRU(4, return_sequences=True, return_state=True),
                                      merge_mode=merge_mode)  # fmt: skip
    params = jaxgru.from_keras_weights(ours_layer, theirs_layer.get_weights())
    with tf.GradientTape() as tape:
        theirs = theirs_layer(x, initial_state=h0)
        loss = sum(tf.reduce_sum(t * (i + 1.0)) for i, t in enumerate(theirs))
    grads = tape.gradient(loss, theirs_layer.trainable_weights)
    ours = ours_layer.apply(params, x, initial_state=h0)
    assert len(ours) == len(theirs) == (4 if merge_mode is None else 3)
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(o, t, rtol=1e-5, atol=1e-5)

    def our_loss(p):
        out = ours_layer.apply(p, x, initial_state=h0)
        return sum((o * (i + 1.0)).sum() for i, o in enumerate(out))

    our_grads = jaxgru.to_keras_weights(ours_layer, jax.grad(our_loss)(params))
    for o, t in zip(our_grads, grads, strict=True):
        assert max_rel_error(o, np.asarray(t)) <= 1e-4
    with pytest.raises(jaxgru.errors.ConfigError, match="return_state=True, which a Sequential"):
        jaxgru.Sequential([ours_layer], input_shape=(7, 3))


def test_rnn_of_a_gru_cell_from_tf_keras(tmp_path):
    import tf_keras

    L = tf_keras.layers
    model = tf_keras.Sequential([L.InputLayer((7, 3)), L.RNN(L.GRUCell(4), return_sequences=True),
                                 L.Dense(2)])  # fmt: skip
    _randomise(model, seed=11)
    model.save(tmp_path / "tf_keras.h5")
    x = np.random.default_rng(12).normal(size=(2, 7, 3)).astype(np.float32)
    loaded, params = jaxgru.load_keras(tmp_path / "tf_keras.h5")
    np.testing.assert_allclose(loaded.apply(params, x), model(x), rtol=1e-5, atol=1e-5)


def _stacked_cells(K, go_backwards):
    """``RNN(StackedRNNCells([...]))`` as Keras's RNN guide stacks cells, with cells that
    differ (units, reset_after, activation) after a Masking layer."""
    L = K.layers
    cells = [L.GRUCell(4), L.GRUCell(3, reset_after=False, activation="softsign"),
             L.GRUCell(2)]  # fmt: skip
    return K.Sequential([
        K.Input((7, 3)), L.Masking(),
        L.RNN(L.StackedRNNCells(cells), return_sequences=True, go_backwards=go_backwards),
        L.Dense(2),
    ])  # fmt: skip


@pytest.mark.parametrize("go_backwards", [False, True])
def test_stacked_gru_cells_load_as_the_stack_they_compute_in_every_format(tmp_path, go_backwards):
    import jax
    import keras
    import tensorflow as tf
    import tf_keras

    from tests.helpers import max_rel_error

    x = np.random.default_rng(13).normal(size=(2, 7, 3)).astype(np.float32)
    x[1, 5:] = 0.0  # masked steps
    built = {"keras": _stacked_cells(keras, go_backwards),
             "tf_keras": _stacked_cells(tf_keras, go_backwards)}  # fmt: skip
    for kind, model in built.items():
        _randomise(model, seed=14)
        expected = model.predict(x, verbose=0)
        paths = [tmp_path / f"{kind}.h5"]
        if kind == "keras":
            paths += [tmp_path / "k.keras", tmp_path / "k.weights.h5"]
        for path in paths:
            if path.name.endswith(".weights.h5"):
                model.save_weights(path)
                loaded, _ = jaxgru.load_keras(paths[1])
                params = jaxgru.load_keras_weights(loaded, path)
            else:
                model.save(path)
                loaded, params = jaxgru.load_keras(path)
            assert type(loaded.layers[1]).__name__ == "StackedGRUCells"
            got = loaded.apply(params, x)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=str(path))
        weights = np.random.default_rng(15).normal(size=expected.shape).astype(np.float32)

        def loss(p, model=loaded, weights=weights):
            return (model.apply(p, x) * weights).sum()

        grads = jax.grad(loss)(params)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(model(x) * weights)
        theirs = tape.gradient(total, model.trainable_weights)
        ours = jaxgru.keras_io.to_keras_weights(loaded, grads)
        assert len(ours) == len(theirs) == 3 * 3 + 2
        for g, t in zip(ours, theirs):
            assert max_rel_error(g, np.asarray(t)) < 1e-4
        jaxgru.save_keras(loaded, params, tmp_path / f"{kind}_again.keras")
        again = keras.models.load_model(tmp_path / f"{kind}_again.keras")
        assert isinstance(again.layers[1].cell, keras.layers.StackedRNNCells)
        np.testing.assert_allclose(again.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_stacked_gru_cells_return_every_cells_state_in_a_graph():
    import keras

    L = keras.layers
    inp = keras.Input((7, 3))
    out = L.RNN(L.StackedRNNCells([L.GRUCell(4), L.GRUCell(2)]), return_state=True)(inp)
    model = keras.Model(inp, out)
    _randomise(model, seed=16)
    x = np.random.default_rng(17).normal(size=(2, 7, 3)).astype(np.float32)
    loaded, params = jaxgru.load_keras(model)
    expected = model.predict(x, verbose=0)
    got = loaded.apply(params, x)
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [1, -1, [1, 2]])
def test_the_softmax_layer_with_a_mask_as_keras(axis):
    import keras

    rng = np.random.default_rng(13)
    x = rng.normal(size=(2, 7, 5)).astype(np.float32)
    mask = rng.random((2, 7, 1)) > 0.3
    mask[0] = False  # a whole row masked: Keras outputs zeros there
    theirs = keras.layers.Softmax(axis=axis)(x, mask=mask)
    ours = jaxgru.activation_layers.Softmax(axis=axis).apply({}, x, mask=mask)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    with pytest.raises(jaxgru.errors.DataError, match="must broadcast to the input"):
        jaxgru.activation_layers.Softmax().apply({}, x, mask=np.ones((2, 7), bool))
