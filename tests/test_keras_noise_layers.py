"""The noise layers against real Keras: files that hold them load in every format and predict
as Keras (the identity at inference), and training mode has Keras's statistics (Keras's own
``layer(x, training=True)`` on the same input, moments compared; the random numbers differ)."""

from __future__ import annotations

import numpy as np
import pytest

import jaxgru

pytestmark = pytest.mark.oracle


def _toxic_bigru(K):
    """The Kaggle Toxic Comment "BiGRU with pooling" kernel as published, its
    SpatialDropout1D after the embedding included, plus the other noise layers Keras users put
    in front of a GRU (GaussianNoise on inputs, GaussianDropout, AlphaDropout in a SELU head)."""
    L = K.layers
    ids = K.Input((7,), dtype="int32")
    e = L.SpatialDropout1D(0.2)(L.Embedding(11, 4)(ids))
    e = L.GaussianDropout(0.1)(L.GaussianNoise(0.1)(e))
    seq = L.Bidirectional(L.GRU(3, return_sequences=True))(e)
    pooled = L.Concatenate()([L.GlobalAveragePooling1D()(seq), L.GlobalMaxPooling1D()(seq)])
    hidden = L.AlphaDropout(0.1)(L.Dense(5, activation="selu")(pooled))
    return K.Model(ids, L.Dense(6, activation="sigmoid")(hidden))


@pytest.mark.parametrize("kind", ["keras", "tf_keras"])
def test_a_model_with_noise_layers_loads_from_every_format_and_predicts_as_keras(kind, tmp_path):
    K = pytest.importorskip(kind)
    model = _toxic_bigru(K)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    x = np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]], np.int32)
    expected = model.predict(x, verbose=0)
    paths = [tmp_path / "m.h5"] + ([tmp_path / "m.keras"] if kind == "keras" else [])
    for path in paths:
        model.save(path)
        loaded, params = jaxgru.load_keras(path)
        np.testing.assert_allclose(loaded.apply(params, x, training=False), expected,
                                   rtol=1e-5, atol=1e-5, err_msg=str(path))  # fmt: skip
    if kind == "keras":
        model.save_weights(tmp_path / "m.weights.h5")
        params = jaxgru.load_keras_weights(loaded, tmp_path / "m.weights.h5")
        np.testing.assert_allclose(loaded.apply(params, x), expected, rtol=1e-5, atol=1e-5)
        jaxgru.save_keras(loaded, params, tmp_path / "again.keras")
        again = K.models.load_model(tmp_path / "again.keras")
        np.testing.assert_allclose(again.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, stat",
    [
        (lambda L: L.SpatialDropout1D(0.3), "zeros"),
        (lambda L: L.GaussianNoise(0.4), "moments"),
        (lambda L: L.GaussianDropout(0.2), "moments"),
        (lambda L: L.AlphaDropout(0.25), "moments"),
    ],
)
def test_training_mode_has_keras_statistics(make, stat):
    import jax
    import keras

    layer = make(keras.layers)
    inp = keras.Input((50, 40))
    ours, params = jaxgru.load_keras(keras.Model(inp, layer(inp)))
    x = np.asarray(jax.nn.selu(np.random.default_rng(1).normal(size=(64, 50, 40))), np.float32)
    theirs = np.asarray(layer(x, training=True))
    mine = np.asarray(ours.apply(params, x, training=True, rng=jax.random.key(2)))
    if stat == "zeros":
        # 64 x 40 features, each dropped with probability 0.3 (Keras's draws are unseeded):
        # each framework's share of zeros within 4.5 standard deviations of the rate
        bound = 4.5 * np.sqrt(0.3 * 0.7 / (64 * 40))
        for y in (mine, theirs):
            assert abs((y == 0).mean() - 0.3) < bound
        for y in (mine, theirs):  # whole features dropped, the same at every step
            assert ((y == 0) == (y[:, :1] == 0)).all()
        kept_mine, kept_theirs = (mine / x)[mine != 0], (theirs / x)[theirs != 0]
        np.testing.assert_allclose([kept_mine.min(), kept_mine.max()],
                                   [kept_theirs.min(), kept_theirs.max()], rtol=1e-5)  # fmt: skip
    else:
        for fn in (np.mean, np.std):
            assert abs(fn(mine - x) - fn(theirs - x)) < 0.01, fn.__name__
            assert abs(fn(mine) - fn(theirs)) < 0.01, fn.__name__
