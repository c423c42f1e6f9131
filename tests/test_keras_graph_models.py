"""Keras functional graphs that are not chains, rebuilt from public models with random weights,
loaded by jaxgru from every file format and compared with the Keras that wrote them.

Each architecture is built once by Keras 3 and once by tf_keras (the same code, the module
swapped): forward outputs within 1e-5, gradients of every weight within 1e-4 relative (against
``tf.GradientTape`` on the Keras model), and jaxgru -> ``.keras`` -> Keras 3 round trips.
Keras 3 and tf_keras differ in two rules that the models exercise and jaxgru reproduces per
file: a GRU given ``initial_state`` does not see its input's mask in Keras 3 (it does in
tf_keras), and a ``training=True`` written in a call loses to ``predict``'s ``training=False``
in Keras 3 (it wins in tf_keras).
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru
from tests.helpers import assert_gradients_match

pytestmark = pytest.mark.oracle


def _encoder_decoder(K):
    """The Keras character-level seq2seq (keras.io/examples/nlp/lstm_seq2seq, with the GRU
    its text suggests; the TensorFlow NMT tutorial wires a GRU the same way): the encoder's
    state is the decoder's ``initial_state``; a Masking layer pads the decoder's input."""
    L = K.layers
    enc_in = K.Input((None, 3), name="encoder_inputs")
    dec_in = K.Input((None, 4), name="decoder_inputs")
    _, state = L.GRU(5, return_state=True, name="encoder")(enc_in)
    masked = L.Masking(name="decoder_mask")(dec_in)
    seq = L.GRU(5, return_sequences=True, name="decoder")(masked, initial_state=state)
    out = L.Dense(4, activation="softmax", name="decoder_dense")(seq)
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 7, 4))]
    x[1][0, 5:] = 0.0  # padded steps the Masking layer masks
    return K.Model([enc_in, dec_in], out, name="seq2seq"), x


def _video_classifier(K):
    """keras.io/examples/vision/video_classification: frame features and a frame mask are two
    inputs; the mask is passed to the first GRU as ``mask=``."""
    L = K.layers
    frames = K.Input((7, 3), name="frame_features")
    mask = K.Input((7,), dtype="bool", name="frame_mask")
    h = L.GRU(6, return_sequences=True)(frames, mask=mask)
    h = L.GRU(4)(h)
    h = L.Dropout(0.4)(h)
    h = L.Dense(5, activation="relu")(h)
    out = L.Dense(3, activation="softmax")(h)
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(2, 7, 3)), np.array([[1] * 7, [1] * 4 + [0] * 3], bool)]
    return K.Model([frames, mask], out, name="video"), x


def _pooled_bigru(K):
    """The Kaggle Toxic Comment "BiGRU with pooling" kernel (Embedding, Bidirectional GRU, a
    global average and a global max pool concatenated, sigmoid head), with mask_zero so the
    average leaves the padding out."""
    L = K.layers
    ids = K.Input((7,), dtype="int32", name="comment")
    e = L.Embedding(11, 4, mask_zero=True)(ids)
    seq = L.Bidirectional(L.GRU(3, return_sequences=True))(e)
    pooled = L.Concatenate()([L.GlobalAveragePooling1D()(seq), L.GlobalMaxPooling1D()(seq)])
    out = L.Dense(6, activation="sigmoid")(pooled)
    x = [np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 0, 0, 0, 0]], np.int32)]
    return K.Model(ids, out, name="toxic"), x


def _state_outputs(K):
    """A BiGRU encoder that outputs its sequence and both final states (``return_state``), as
    attention encoders do (the TensorFlow NMT-with-attention tutorial's encoder)."""
    L = K.layers
    x_in = K.Input((None, 3), name="source")
    seq, h_fwd, h_bwd = L.Bidirectional(
        L.GRU(4, return_sequences=True, return_state=True), name="encoder"
    )(x_in)
    state = L.Concatenate(name="state")([h_fwd, h_bwd])
    x = [np.random.default_rng(3).normal(size=(2, 7, 3))]
    return K.Model(x_in, [seq, state, h_bwd], name="encoder_states"), x


def _siamese(K):
    """A Siamese GRU for question pairs (Kaggle Quora Question Pairs): one GRU called on both
    questions shares its weights; the difference and the product of the codes feed a head."""
    L = K.layers
    a = K.Input((None, 3), name="question_1")
    b = K.Input((None, 3), name="question_2")
    shared = L.GRU(5, name="shared_gru")
    code_a, code_b = shared(a), shared(b)
    merged = L.Concatenate()([L.Subtract()([code_a, code_b]), L.Multiply()([code_a, code_b])])
    out = L.Dense(1, activation="sigmoid")(L.Add()([L.Dense(4)(merged), L.Dense(4)(merged)]))
    rng = np.random.default_rng(4)
    return K.Model([a, b], out, name="siamese"), [rng.normal(size=(2, 7, 3)),
                                                  rng.normal(size=(2, 5, 3))]  # fmt: skip


def _trigger_word(K):
    """The trigger-word detector of deeplearning.ai's Sequence Models course ("Trigger word
    detection" assignment): Conv1D over the spectrogram, BatchNormalization, ReLU, dropout,
    two GRUs each followed by dropout and BatchNormalization, and a per-step sigmoid through
    TimeDistributed(Dense). Sizes scaled down (196 filters, GRU(128) there)."""
    L = K.layers
    spectrogram = K.Input((21, 5), name="spectrogram")
    h = L.Conv1D(6, kernel_size=5, strides=2)(spectrogram)
    h = L.Activation("relu")(L.BatchNormalization()(h))
    h = L.Dropout(0.8)(h)
    h = L.BatchNormalization()(L.Dropout(0.8)(L.GRU(5, return_sequences=True)(h)))
    h = L.GRU(4, return_sequences=True)(h)
    h = L.Dropout(0.8)(L.BatchNormalization()(L.Dropout(0.8)(h)))
    out = L.TimeDistributed(L.Dense(1, activation="sigmoid"))(h)
    x = [np.random.default_rng(5).normal(size=(2, 21, 5))]
    return K.Model(spectrogram, out, name="trigger_word"), x


def _deepspeech2(K):
    """keras.io/examples/audio/ctc_asr (DeepSpeech2-like): the spectrogram reshaped to an
    image, two Conv2D + BatchNormalization + ReLU blocks (bias-free, same padding, strided
    over frequency), reshaped back to a sequence, bidirectional GRUs (reset_after) with
    dropout, a Dense + ReLU + dropout head and a softmax over characters. Sizes scaled down."""
    L = K.layers
    spectrogram = K.Input((None, 9), name="input")
    h = L.Reshape((-1, 9, 1), name="expand_dim")(spectrogram)
    h = L.Conv2D(4, (5, 4), strides=(2, 2), padding="same", use_bias=False, name="conv_1")(h)
    h = L.ReLU(name="conv_1_relu")(L.BatchNormalization(name="conv_1_bn")(h))
    h = L.Conv2D(3, (3, 3), strides=(1, 2), padding="same", use_bias=False, name="conv_2")(h)
    h = L.ReLU(name="conv_2_relu")(L.BatchNormalization(name="conv_2_bn")(h))
    h = L.Reshape((-1, h.shape[-2] * h.shape[-1]))(h)
    for i in range(1, 3):
        h = L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=True,
                                  name=f"gru_{i}"), merge_mode="concat")(h)  # fmt: skip
        h = L.Dropout(0.5)(h) if i < 2 else h
    h = L.Dropout(0.5)(L.ReLU(name="dense_1_relu")(L.Dense(6, name="dense_1")(h)))
    out = L.Dense(5, activation="softmax")(h)
    x = [np.random.default_rng(6).normal(size=(2, 11, 9))]
    return K.Model(spectrogram, out, name="DeepSpeech_2"), x


def _attention_rnn_speech(K):
    """The attention RNN for speech commands (de Andrade et al. 2018,
    github.com/douglas125/SpeechCmdRecognition, AttRNNSpeechModel), with GRUs for its LSTMs:
    Conv2D + BatchNormalization over the mel spectrogram, two bidirectional RNNs, the last
    step as the query (a Lambda there; Cropping1D + Flatten here), Dot attention scores, a
    Softmax, a Dot-weighted sum, and a Dense head."""
    L = K.layers
    mel = K.Input((7, 6), name="mel")
    h = L.Reshape((7, 6, 1))(mel)
    h = L.BatchNormalization()(L.Conv2D(3, (5, 1), activation="relu", padding="same")(h))
    h = L.BatchNormalization()(L.Conv2D(1, (5, 1), activation="relu", padding="same")(h))
    h = L.Reshape((7, 6))(h)
    h = L.Bidirectional(L.GRU(4, return_sequences=True))(h)
    seq = L.Bidirectional(L.GRU(4, return_sequences=True))(h)
    last = L.Flatten()(L.Cropping1D((6, 0))(seq))
    query = L.Dense(8)(last)
    scores = L.Softmax(name="attSoftmax")(L.Dot(axes=[1, 2])([query, seq]))
    context = L.Dot(axes=[1, 1])([scores, seq])
    h = L.Dense(6)(L.Dense(7, activation="relu")(context))
    out = L.Dense(4, activation="softmax", name="output")(h)
    x = [np.random.default_rng(7).normal(size=(2, 7, 6))]
    return K.Model(mel, out, name="AttRNNSpeechModel"), x


def _gru_autoencoder(K):
    """The sequence-to-sequence autoencoder of the Keras blog ("Building Autoencoders in
    Keras", F. Chollet, 2016), with GRUs for its LSTMs: the encoder's code is repeated over
    time (RepeatVector) and decoded by a GRU and a TimeDistributed(Dense)."""
    L = K.layers
    seq = K.Input((7, 3), name="sequence")
    code = L.GRU(4, name="encoder")(seq)
    h = L.GRU(5, return_sequences=True, name="decoder")(L.RepeatVector(7)(code))
    out = L.TimeDistributed(L.Dense(3))(h)
    x = [np.random.default_rng(8).normal(size=(2, 7, 3))]
    return K.Model(seq, out, name="autoencoder"), x


def _cnn_gru_text(K):
    """keras/examples/imdb_cnn_lstm.py (the Keras 2 examples), with a GRU for its LSTM:
    Embedding, dropout, Conv1D + ReLU, MaxPooling1D, a GRU, a sigmoid. Sizes scaled down."""
    L = K.layers
    ids = K.Input((13,), dtype="int32", name="review")
    h = L.Dropout(0.25)(L.Embedding(11, 4)(ids))
    h = L.Conv1D(5, 3, padding="valid", activation="relu", strides=1)(h)
    h = L.GRU(3)(L.MaxPooling1D(pool_size=2)(h))
    out = L.Activation("sigmoid")(L.Dense(1)(h))
    rng = np.random.default_rng(9)
    return K.Model(ids, out, name="cnn_gru"), [rng.integers(0, 11, (2, 13)).astype(np.int32)]


def _nmt_with_attention(K):
    """The TensorFlow "Neural machine translation with attention" tutorial
    (tensorflow.org/text/tutorials/nmt_with_attention): the encoder embeds the context
    (mask_zero) into a Bidirectional GRU summed over directions; the decoder embeds the target,
    runs a GRU, and its CrossAttention is MultiHeadAttention(key_dim=units, num_heads=1) on
    (query=decoder sequence, value=context), Add, LayerNormalization, then a Dense over the
    vocabulary. Sizes scaled down (units 256 there)."""
    L = K.layers
    context = K.Input((7,), dtype="int32", name="context")
    target = K.Input((6,), dtype="int32", name="target")
    c = L.Embedding(13, 4, mask_zero=True)(context)
    c = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="sum")(c)
    x = L.Embedding(11, 4, mask_zero=True)(target)
    x = L.GRU(5, return_sequences=True)(x)
    attended = L.MultiHeadAttention(key_dim=5, num_heads=1)(query=x, value=c)
    x = L.LayerNormalization()(L.Add()([x, attended]))
    out = L.Dense(11)(x)
    ids = [np.array([[2, 7, 4, 9, 1, 3, 5], [6, 12, 3, 0, 0, 0, 0]], np.int32),
           np.array([[1, 4, 8, 2, 10, 3], [1, 5, 9, 0, 0, 0]], np.int32)]  # fmt: skip
    return K.Model([context, target], out, name="nmt_with_attention"), ids


def _luong_seq2seq(K):
    """A GRU encoder-decoder with Luong (dot-product) attention: the keras.io
    lstm_seq2seq example's encoder state as the decoder's initial_state (GRUs, as its text
    suggests), and the keras.io Attention layer docs' ``Attention()([query, value])`` over
    the encoder's sequence (Embedding(mask_zero) masks its padding), concatenated with the
    decoder's sequence and read out per step by a tanh Dense and a softmax Dense."""
    L = K.layers
    source = K.Input((None,), dtype="int32", name="source")
    decoder_in = K.Input((None, 4), name="decoder_inputs")
    encoded = L.Embedding(9, 3, mask_zero=True)(source)
    enc_seq, state = L.GRU(5, return_sequences=True, return_state=True, name="encoder")(encoded)
    dec_seq = L.GRU(5, return_sequences=True, name="decoder")(decoder_in, initial_state=state)
    context = L.Attention(use_scale=True)([dec_seq, enc_seq])
    h = L.Dense(6, activation="tanh")(L.Concatenate()([dec_seq, context]))
    out = L.Dense(4, activation="softmax")(h)
    rng = np.random.default_rng(10)
    x = [np.array([[3, 1, 4, 1, 5, 8, 2], [6, 5, 3, 0, 0, 0, 0]], np.int32),
         rng.normal(size=(2, 6, 4))]  # fmt: skip
    return K.Model([source, decoder_in], out, name="luong_seq2seq"), x


ARCHITECTURES = {
    "encoder_decoder": _encoder_decoder,
    "video_classifier": _video_classifier,
    "pooled_bigru": _pooled_bigru,
    "state_outputs": _state_outputs,
    "siamese": _siamese,
    "trigger_word": _trigger_word,
    "deepspeech2": _deepspeech2,
    "attention_rnn_speech": _attention_rnn_speech,
    "gru_autoencoder": _gru_autoencoder,
    "cnn_gru_text": _cnn_gru_text,
    "nmt_with_attention": _nmt_with_attention,
    "luong_seq2seq": _luong_seq2seq,
}


def _randomise(model, seed=0):
    """Random weights; a BatchNormalization's moving variance stays positive."""
    rng = np.random.default_rng(seed)
    model.set_weights([np.abs(rng.normal(scale=0.5, size=w.shape)).astype(w.dtype) + 0.5
                       if "moving_variance" in v.name else
                       rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
                       for w, v in zip(model.get_weights(), model.weights)])  # fmt: skip


def _inputs(x):
    return [np.asarray(v, np.float32) if np.asarray(v).dtype == np.float64 else v for v in x]


def _as_list(y):
    return [np.asarray(v) for v in (y if isinstance(y, (list, tuple)) else [y])]


@pytest.fixture(scope="module", params=["keras", "tf_keras"])
def framework(request):
    if request.param == "keras":
        import keras
    else:
        keras = pytest.importorskip("tf_keras")
    return request.param, keras


@pytest.fixture(scope="module")
def saved(framework, tmp_path_factory):
    """Every architecture built by the framework, saved in every format it writes."""
    kind, K = framework
    out = {}
    for name, build in ARCHITECTURES.items():
        model, x = build(K)
        _randomise(model)
        folder = tmp_path_factory.mktemp(f"{kind}_{name}")
        files = {}
        if kind == "keras":
            files[".keras"] = folder / "model.keras"
            files["keras3 .h5"] = folder / "model.h5"
            model.save(files[".keras"])
            model.save(files["keras3 .h5"])
            files[".weights.h5"] = folder / "model.weights.h5"
            model.save_weights(files[".weights.h5"])
        else:
            files["tf_keras .h5"] = folder / "model.h5"
            model.save(files["tf_keras .h5"])
        x = _inputs(x)
        raw = model.predict(x if len(x) > 1 else x[0], verbose=0)
        out[name] = (model, x, files, _as_list(raw), isinstance(raw, list))
    return kind, out


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_graph_model_loads_from_every_format_and_predicts_as_keras(saved, name):
    _kind, models = saved
    keras_model, x, files, expected, several = models[name]
    for fmt, path in files.items():
        if fmt == ".weights.h5":
            model, _ = jaxgru.load_keras(files[".keras"])
            params = jaxgru.load_keras_weights(model, path)
        else:
            model, params = jaxgru.load_keras(path)
        assert isinstance(model, (jaxgru.Model, jaxgru.Sequential)), fmt  # a chain: Sequential
        assert model.count_params() == keras_model.count_params(), fmt
        raw = model.apply(params, x if len(x) > 1 else x[0], training=False)
        assert isinstance(raw, list) == several, fmt  # one array, or a list, as Keras returns
        got = _as_list(raw)
        assert len(got) == len(expected), fmt
        for g, e in zip(got, expected):
            assert g.shape == e.shape, fmt
            np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5, err_msg=f"{name} {fmt}")
    # The live model reads the same.
    model, params = jaxgru.load_keras(keras_model)
    got = _as_list(model.apply(params, x if len(x) > 1 else x[0], training=False))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_graph_models_gradients_match_keras(saved, name):
    import jax
    import jax.numpy as jnp
    import tensorflow as tf

    _kind, models = saved
    keras_model, x, _files, expected, _ = models[name]
    model, params = jaxgru.load_keras(keras_model)
    rng = np.random.default_rng(7)
    weights = [rng.normal(size=e.shape).astype(np.float32) for e in expected]

    def loss(p):
        out = model.apply(p, x if len(x) > 1 else x[0], training=False)
        outs = out if isinstance(out, list) else [out]
        return sum(jnp.sum(o * w) for o, w in zip(outs, weights))

    grads = jax.grad(loss)(params)
    # Held the way users hold params: after tree_map and an optimizer step's re-sorting.
    grads = jax.tree.map(lambda g: g, grads)
    ours = jaxgru.keras_io.to_keras_weights(model, grads, trainable_only=True)
    with tf.GradientTape() as tape:
        out = keras_model(x if len(x) > 1 else x[0], training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        total = sum(tf.reduce_sum(o * w) for o, w in zip(outs, weights))
    theirs = tape.gradient(total, keras_model.trainable_weights)
    assert len(ours) == len(theirs)
    theirs = [np.zeros(g.shape, np.float32) if t is None else tf.convert_to_tensor(t)
              for g, t in zip(ours, theirs)]  # fmt: skip
    assert_gradients_match(ours, theirs)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_graph_model_round_trips_through_keras_3(saved, name, tmp_path):
    import keras

    kind, models = saved
    _, x, files, expected, _ = models[name]
    model, params = jaxgru.load_keras(next(iter(files.values())))
    path = tmp_path / "again.keras"
    if kind == "tf_keras" and name == "encoder_decoder":
        with pytest.raises(jaxgru.KerasFileError, match="Keras 3 drops it"):
            jaxgru.save_keras(model, params, path)
        assert not path.exists()
        return
    jaxgru.save_keras(model, params, path)
    reloaded = keras.models.load_model(path)
    got = _as_list(reloaded.predict(x if len(x) > 1 else x[0], verbose=0))
    if kind == "tf_keras" and name == "video_classifier":
        expected = _as_list(model.apply(params, x, training=False))  # Keras 3's own rules
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)
    again, _ = jaxgru.load_keras(path)
    assert sorted(item.name for item in again.layers) == sorted(i.name for i in model.layers)


def test_keras_3_drops_the_mask_next_to_initial_state_and_tf_keras_keeps_it(saved):
    """The rule both files follow, seen in the numbers: with the mask dropped the padded
    steps change the decoder's output, so the two frameworks' models differ."""
    kind, models = saved
    keras_model, x, _files, expected, _ = models["encoder_decoder"]
    model, params = jaxgru.load_keras(keras_model)
    assert model.legacy == (kind == "tf_keras")
    flipped = type(model)(model.inputs, model.outputs, model.name, model.layers, model.calls,
                          legacy=not model.legacy)  # fmt: skip
    other = np.asarray(flipped.apply(params, x, training=False))
    assert np.abs(other - expected[0]).max() > 1e-3  # the rule matters for this input


def test_monte_carlo_dropout_written_in_the_graph_follows_each_frameworks_rule(framework):
    """``Dropout(0.5)(x, training=True)``: active in ``model(x)`` for both; ``predict`` turns it
    off in Keras 3 and not in tf_keras. Random numbers differ from Keras's, so the test reads
    the statistics: the share of zeros is the rate and the kept values are scaled by 2."""
    import jax

    kind, K = framework
    inp = K.Input((4000,))
    out = K.layers.Dropout(0.5)(inp, training=True)
    model, params = jaxgru.load_keras(K.Model(inp, out))
    ones = np.ones((2, 4000), np.float32)
    active = np.asarray(model.apply(params, ones, rng=jax.random.key(0)))  # Keras's model(x)
    assert abs((active == 0).mean() - 0.5) < 0.02
    assert set(np.unique(active)) == {0.0, 2.0}
    with pytest.raises(jaxgru.errors.DataError, match="rng"):
        model.apply(params, ones)
    predicted = np.asarray(model.apply(params, ones, training=False, rng=jax.random.key(1)))
    if kind == "keras":
        np.testing.assert_array_equal(predicted, ones)
    else:
        assert abs((predicted == 0).mean() - 0.5) < 0.02


def test_a_graph_built_in_jaxgru_exchanges_weights_files_with_the_same_keras_graph(tmp_path):
    """Two Dense(4) of the same shapes at different depths: weights files name layers by a
    class counter in Keras's layer order, so a wrong order would swap them silently."""
    import jax
    import keras

    def build(api, Input, Model):
        a, b = Input((None, 3), name="question_1"), Input((None, 3), name="question_2")
        shared = api.GRU(5, name="shared_gru")
        code_a, code_b = shared(a), shared(b)
        side = api.Dense(4)(code_a)  # made first, but Keras orders it after the deeper two
        deep = api.Dense(4)(api.Dense(4)(api.Subtract()([code_a, code_b])))
        out = api.Dense(1)(api.Concatenate()([deep, side]))
        return Model([a, b], out)

    ours = build(jaxgru, jaxgru.Input, jaxgru.Model)
    theirs = build(keras.layers, keras.Input, keras.Model)
    assert ours.count_params() == theirs.count_params()
    params = ours.init(jax.random.key(3))
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases
    x = [np.random.default_rng(5).normal(size=(2, 7, 3)).astype(np.float32),
         np.random.default_rng(6).normal(size=(2, 6, 3)).astype(np.float32)]  # fmt: skip
    expected = np.asarray(ours.apply(params, x))
    jaxgru.save_keras_weights(ours, params, tmp_path / "ours.weights.h5")
    theirs.load_weights(tmp_path / "ours.weights.h5")
    np.testing.assert_allclose(theirs.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    _randomise(theirs, seed=8)
    theirs.save_weights(tmp_path / "theirs.weights.h5")
    back = jaxgru.load_keras_weights(ours, tmp_path / "theirs.weights.h5")
    np.testing.assert_allclose(np.asarray(ours.apply(back, x)), theirs.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    jaxgru.save_keras(ours, back, tmp_path / "ours.keras")
    reloaded = keras.models.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
