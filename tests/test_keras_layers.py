"""The layers around GRUs (convolutions, normalisation, pooling, shape layers, PReLU,
TimeDistributed) against real Keras, one layer and option at a time.

For each case: Keras 3 builds the layer on an odd-sized input (batch 2, time 7, features 3)
with random weights and non-zero biases; jaxgru loads it (live, ``.keras``, Keras 3 ``.h5``,
``.weights.h5``) and tf_keras's ``.h5`` of the same layer, and must give Keras's outputs
within 1e-5, Keras's gradients (``tf.GradientTape``) of every trainable weight and of the
input within 1e-4 relative, Keras's parameter count, and a ``.keras`` file Keras 3 loads back
to the same outputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from tests.helpers import max_rel_error

pytestmark = pytest.mark.oracle

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

# name: (input shape without the batch axis, the layer built from a Keras layers module)
CASES = {
    "conv1d_valid_relu": ((7, 3), lambda L: L.Conv1D(4, 3, activation="relu")),
    "conv1d_same_strided": ((7, 3), lambda L: L.Conv1D(4, 3, strides=2, padding="same")),
    "conv1d_same_even_kernel": (
        (7, 3),
        lambda L: L.Conv1D(5, 4, strides=3, padding="same", use_bias=False),
    ),
    "conv1d_causal_dilated_groups": (
        (7, 3),
        lambda L: L.Conv1D(6, 2, padding="causal", dilation_rate=2, groups=3),
    ),
    "conv2d_same_strided": (
        (9, 8, 2),
        lambda L: L.Conv2D(3, (3, 2), strides=(2, 1), padding="same", activation="tanh"),
    ),
    "conv2d_valid_dilated": ((9, 8, 2), lambda L: L.Conv2D(2, 2, dilation_rate=(2, 1))),
    "separable_conv1d": (
        (7, 3),
        lambda L: L.SeparableConv1D(4, 3, depth_multiplier=2, padding="same"),
    ),
    "separable_conv1d_strided": ((7, 3), lambda L: L.SeparableConv1D(2, 2, strides=2)),
    "batch_norm": ((7, 3), lambda L: L.BatchNormalization(momentum=0.9, epsilon=1e-2)),
    "batch_norm_axis1_no_center": ((7, 3), lambda L: L.BatchNormalization(axis=1, center=False)),
    "batch_norm_no_scale": ((7, 3), lambda L: L.BatchNormalization(scale=False)),
    "layer_norm": ((7, 3), lambda L: L.LayerNormalization(epsilon=1e-4)),
    "max_pool": ((7, 3), lambda L: L.MaxPooling1D()),
    "max_pool_same": ((7, 3), lambda L: L.MaxPooling1D(3, strides=2, padding="same")),
    "average_pool": ((7, 3), lambda L: L.AveragePooling1D(2, strides=1)),
    "average_pool_same": ((7, 3), lambda L: L.AveragePooling1D(3, strides=2, padding="same")),
    "reshape": ((7, 3), lambda L: L.Reshape((-1, 7))),
    "reshape_fixed": ((9, 8, 2), lambda L: L.Reshape((9, 16))),
    "flatten": ((7, 3), lambda L: L.Flatten()),
    "permute": ((7, 3), lambda L: L.Permute((2, 1))),
    "repeat_vector": ((3,), lambda L: L.RepeatVector(4)),
    "cropping1d": ((7, 3), lambda L: L.Cropping1D((1, 2))),
    "zero_padding1d": ((7, 3), lambda L: L.ZeroPadding1D((2, 1))),
    "prelu": ((7, 3), lambda L: L.PReLU()),
    "prelu_shared_time": ((7, 3), lambda L: L.PReLU(shared_axes=[1])),
    "time_distributed_dense": (
        (7, 3),
        lambda L: L.TimeDistributed(L.Dense(2, activation="sigmoid")),
    ),
    "time_distributed_conv1d": ((7, 4, 3), lambda L: L.TimeDistributed(L.Conv1D(2, 2))),
    "time_distributed_batch_norm": ((7, 3), lambda L: L.TimeDistributed(L.BatchNormalization())),
    "simple_rnn": ((7, 3), lambda L: L.SimpleRNN(5)),
    "simple_rnn_sequences_backwards_relu": (
        (7, 3),
        lambda L: L.SimpleRNN(5, return_sequences=True, go_backwards=True, activation="relu"),
    ),
    "simple_rnn_no_bias": ((7, 3), lambda L: L.SimpleRNN(4, use_bias=False)),
}
# Keras 3 only: tf_keras has no rms_scaling, and its own predict fails on two axes.
KERAS_3_ONLY = {
    "layer_norm_rms": ((7, 3), lambda L: L.LayerNormalization(rms_scaling=True)),
    "layer_norm_two_axes": ((7, 3), lambda L: L.LayerNormalization(axis=[1, 2])),
}
ALL = {**CASES, **KERAS_3_ONLY}


def _build(K, name: str, seed: int = 0):
    shape, make = ALL[name]
    inputs = K.Input(shape)
    model = K.Model(inputs, make(K.layers)(inputs))
    rng = np.random.default_rng(seed)
    _randomise(model, rng)
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    return model, x


def _randomise(model, rng) -> None:
    """Weights of both signs, none near zero; a variance stays positive."""
    weights = []
    for w, variable in zip(model.get_weights(), model.weights):
        size = rng.uniform(0.2, 1.2, w.shape)
        sign = 1.0 if "variance" in variable.name else rng.choice([-1.0, 1.0], w.shape)
        weights.append((size * sign).astype(np.float32))
    model.set_weights(weights)


@pytest.fixture(scope="module")
def keras3_files(tmp_path_factory):
    """Every case built by Keras 3 and saved in each of its formats."""
    out = {}
    for name in ALL:
        model, x = _build(keras, name)
        folder = tmp_path_factory.mktemp(name)
        files = {f: folder / f"model{f}" for f in (".keras", ".h5", ".weights.h5")}
        model.save(files[".keras"])
        model.save(files[".h5"])
        model.save_weights(files[".weights.h5"])
        out[name] = (model, x, files)
    return out


@pytest.mark.parametrize("name", list(ALL))
def test_a_layer_loads_from_every_keras_3_format_and_computes_as_keras(keras3_files, name):
    k_model, x, files = keras3_files[name]
    expected = np.asarray(k_model(x, training=False))
    live, live_params = jaxgru.load_keras(k_model)
    assert live.count_params() == k_model.count_params()
    assert tuple(live.output_shape()[1:]) == tuple(k_model.output.shape[1:])
    for fmt, (model, params) in {
        "live": (live, live_params),
        ".keras": jaxgru.load_keras(files[".keras"]),
        ".h5": jaxgru.load_keras(files[".h5"]),
        ".weights.h5": (live, jaxgru.load_keras_weights(live, files[".weights.h5"])),
    }.items():
        got = np.asarray(model.apply(params, x))
        assert got.shape == expected.shape, fmt
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=f"{name} {fmt}")


@pytest.mark.parametrize("name", list(ALL))
def test_a_layers_gradients_match_keras(keras3_files, name):
    k_model, x, _ = keras3_files[name]
    model, params = jaxgru.load_keras(k_model)
    shape = (len(x), *k_model.output.shape[1:])
    cot = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    x_tf = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        loss = tf.reduce_sum(k_model(x_tf, training=False) * cot)
    k_grads = tape.gradient(loss, [x_tf, *k_model.trainable_weights])

    def jax_loss(p, inputs):
        return jnp.sum(model.apply(p, inputs) * cot)

    j_params, j_x = jax.grad(jax_loss, argnums=(0, 1))(params, jnp.asarray(x))
    assert max_rel_error(j_x, np.asarray(k_grads[0])) <= 1e-4, "input"
    flat = {f"{layer}/{k}": v for layer, group in j_params.items() for k, v in group.items()}
    for variable, k in zip(k_model.trainable_weights, k_grads[1:]):
        key = next(f for f in flat if f.endswith("/" + variable.name))
        assert max_rel_error(flat[key], np.asarray(k)) <= 1e-4, variable.path
    assert len(k_model.trainable_weights) == sum(
        1 for f in flat if f.rsplit("/", 1)[1] not in ("moving_mean", "moving_variance")
    )


@pytest.mark.parametrize("name", list(ALL))
def test_a_layer_round_trips_through_jaxgru_to_keras_3(keras3_files, name, tmp_path):
    k_model, x, files = keras3_files[name]
    model, params = jaxgru.load_keras(files[".keras"])
    jaxgru.save_keras(model, params, tmp_path / "again.keras")
    again = keras.models.load_model(tmp_path / "again.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), k_model.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)  # fmt: skip
    assert [w.shape for w in again.get_weights()] == [w.shape for w in k_model.get_weights()]
    # jaxgru's own summary counts what Keras counts.
    assert f"Total params: {k_model.count_params():,}" in model.summary()


@pytest.mark.parametrize("name", list(CASES))
def test_a_layer_loads_from_a_tf_keras_h5_file(name, tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    k_model, x = _build(tf_keras, name)
    k_model.save(tmp_path / "model.h5")
    model, params = jaxgru.load_keras(tmp_path / "model.h5")
    np.testing.assert_allclose(model.apply(params, x), k_model.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)  # fmt: skip
    assert model.count_params() == k_model.count_params()


# -- masks, training mode -------------------------------------------------------------------

MASK_CASES = {
    # passes the mask on (Keras's supports_masking)
    "batch_norm": lambda L: L.BatchNormalization(),
    "layer_norm": lambda L: L.LayerNormalization(),
    "prelu": lambda L: L.PReLU(shared_axes=[1]),
    "time_distributed_dense": lambda L: L.TimeDistributed(L.Dense(3)),
    # drops it (Keras 3 warns and drops)
    "conv1d": lambda L: L.Conv1D(3, 2, padding="same"),
    "max_pool": lambda L: L.MaxPooling1D(1),
    "average_pool": lambda L: L.AveragePooling1D(1),
    "reshape": lambda L: L.Reshape((7, 3)),
    "zero_padding1d": lambda L: L.ZeroPadding1D(1),
}


@pytest.mark.parametrize("name", list(MASK_CASES))
def test_the_mask_passes_through_or_stops_as_in_keras_3(name):
    """Masking -> layer -> GRU: a GRU after a layer that passes the mask skips the padded
    steps; after one that drops it, it reads them (the outputs differ, so each case tells)."""
    L = keras.layers
    inputs = keras.Input((7, 3))
    h = MASK_CASES[name](L)(L.Masking()(inputs))
    k_model = keras.Model(inputs, L.GRU(4)(h))
    rng = np.random.default_rng(1)
    k_model.set_weights([rng.uniform(0.2, 1.0, w.shape).astype(np.float32)
                         for w in k_model.get_weights()])  # fmt: skip
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    x[0, 4:] = 0.0
    model, params = jaxgru.load_keras(k_model)
    np.testing.assert_allclose(model.apply(params, x), k_model.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("masked", [False, True])
def test_batch_normalization_in_training_uses_the_batchs_statistics_as_keras_3(masked):
    layer = keras.layers.BatchNormalization(epsilon=1e-2)
    inputs = keras.Input((7, 3))
    k_model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(2)
    _randomise(k_model, rng)
    x = (rng.normal(size=(2, 7, 3)) * 3 + 1).astype(np.float32)
    mask = np.ones((2, 7), bool)
    mask[1, 3:] = False
    ours, params = jaxgru.load_keras(k_model)
    bn = ours.layers[0]
    theirs = layer(x, training=True, mask=mask if masked else None)
    mine = bn.apply(params[bn.name], x, mask=mask if masked else None, training=True)
    np.testing.assert_allclose(mine, np.asarray(theirs), atol=1e-5, rtol=1e-5)
    # A frozen layer (trainable=False) keeps its moving statistics, as Keras 3's.
    layer.trainable = False
    frozen, frozen_params = jaxgru.load_keras(k_model)
    np.testing.assert_allclose(
        frozen.apply(frozen_params, x, training=True), np.asarray(layer(x, training=True)),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


def _bn_model(case: str):
    """BatchNormalization around GRUs, as in the speech-commands and trigger-word models
    (tests/test_keras_graph_models.py cites them), with random weights."""
    L = keras.layers
    if case == "masked":  # Keras 3 leaves masked steps out of the batch statistics
        layers = [L.Masking(), L.BatchNormalization(momentum=0.9),
                  L.GRU(5, return_sequences=True), L.Dense(1)]  # fmt: skip
    elif case == "frozen":
        layers = [L.BatchNormalization(trainable=False), L.GRU(5), L.Dense(1)]
    else:
        layers = [L.BatchNormalization(momentum=0.9), L.GRU(5, return_sequences=True),
                  L.BatchNormalization(momentum=0.8, epsilon=0.01), L.GRU(4),
                  L.Dense(1)]  # fmt: skip
    model = keras.Sequential([keras.Input((7, 3)), *layers])
    rng = np.random.default_rng(0)
    weights = [rng.uniform(-0.6, 0.6, w.shape) for w in model.get_weights()]
    for layer in (item for item in model.layers if "batch_normalization" in item.name):
        k = [id(w) for w in model.weights].index(id(layer.moving_variance))
        weights[k] = np.abs(weights[k]) + 0.5  # a variance
    model.set_weights([w.astype(np.float32) for w in weights])
    return model


def _bn_data(case: str, samples: int, seed: int):
    rng = np.random.default_rng(seed)
    x = (2.0 * rng.normal(size=(samples, 7, 3)) + 1.0).astype(np.float32)
    if case != "masked":
        return x, np.tanh(x.sum(axis=(1, 2)) / 5)[:, None].astype(np.float32)
    lengths = rng.integers(2, 8, samples)
    x[np.arange(7)[None, :] >= lengths[:, None]] = 0.0
    return x, np.tanh(np.cumsum(x.sum(axis=2), axis=1) / 5)[..., None].astype(np.float32)


@pytest.mark.parametrize("case", ["before_and_after_gru", "masked", "frozen"])
def test_fit_trains_batch_normalization_and_its_moving_statistics_as_keras(case):
    """Batch statistics in training (a padded last batch's padding left out, masked steps too),
    the moving mean and variance moved as Keras moves them, out of the optimizer's reach."""
    model = _bn_model(case)
    jax_model, params = jaxgru.load_keras(model)
    (x, y), val = _bn_data(case, 37, 1), _bn_data(case, 11, 2)
    bn = next(item for item in model.layers if "batch_normalization" in item.name)
    before = bn.moving_mean.numpy().copy()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    expected = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, validation_data=val,
                         verbose=0).history  # fmt: skip
    params, history = jaxgru.fit(jax_model, params, x, y, loss="mse", optimizer="adam",
                                 learning_rate=0.01, batch_size=8, epochs=3, shuffle=False,
                                 validation_data=val, verbose=0)  # fmt: skip
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-4, err_msg=key)
    ours = jaxgru.to_keras_weights(jax_model, params)
    for w, ours_w, theirs in zip(model.weights, ours, model.get_weights(), strict=True):
        np.testing.assert_allclose(ours_w, theirs, rtol=0, atol=1e-4, err_msg=w.path)
    assert np.allclose(bn.moving_mean.numpy(), before) == (case == "frozen")


def test_fit_refuses_batch_normalization_inside_time_distributed():
    model = jaxgru.Sequential([jaxgru.TimeDistributed(jaxgru.BatchNormalization()),
                               jaxgru.GRU(2)], input_shape=(7, 3))  # fmt: skip
    params = model.init(jax.random.key(0))
    x, y = np.ones((4, 7, 3), np.float32), np.ones((4, 2), np.float32)
    with pytest.raises(jaxgru.errors.ConfigError, match=r"time_distributed \(TimeDistributed"):
        jaxgru.fit(model, params, x, y, epochs=1)


@pytest.mark.parametrize(
    "shapes, axes, normalize",
    [
        (((5,), (7, 5)), (1, 2), False),  # an attention score: (batch, t)
        (((7,), (7, 5)), (1, 1), False),  # a weighted sum: (batch, 5)
        (((5,), (5,)), 1, True),  # a cosine: (batch, 1)
        (((7, 3), (4, 3)), -1, False),  # (batch, 7, 4)
        (((7, 3), (7, 4)), (1, 1), True),
    ],
)
def test_dot_as_keras(shapes, axes, normalize, tmp_path):
    L = keras.layers
    inputs = [keras.Input(s) for s in shapes]
    k_model = keras.Model(inputs, L.Dot(axes=axes, normalize=normalize)(inputs))
    rng = np.random.default_rng(3)
    x = [rng.normal(size=(2, *s)).astype(np.float32) for s in shapes]
    model, params = jaxgru.load_keras(k_model)
    expected = k_model.predict(x, verbose=0)
    np.testing.assert_allclose(model.apply(params, x), expected, atol=1e-5, rtol=1e-5)
    assert tuple(model.output_shape()) == (None, *k_model.output.shape[1:])
    jaxgru.save_keras(model, params, tmp_path / "dot.keras")
    again = keras.models.load_model(tmp_path / "dot.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, atol=1e-5, rtol=1e-5)


# -- SimpleRNN: masks, states, dropout, and a float64 NumPy reference ------------------------


def _simple_rnn_reference(x, mask, params, h0, activation, go_backwards, zero_output):
    """The recurrence written out in float64: Keras's masked-step rule included."""
    kernel, recurrent = (np.asarray(params[k], np.float64) for k in ("kernel", "recurrent_kernel"))
    bias = np.asarray(params.get("bias", np.zeros(kernel.shape[1])), np.float64)
    h, previous, outputs = h0.astype(np.float64), np.zeros_like(h0, np.float64), []
    steps = range(x.shape[1])[::-1] if go_backwards else range(x.shape[1])
    for t in steps:
        new = activation(x[:, t] @ kernel + bias + h @ recurrent)
        keep = mask[:, t : t + 1]
        out = np.where(keep, new, 0.0 if zero_output else previous)
        h, previous = np.where(keep, new, h), out
        outputs.append(out)
    return np.stack(outputs, axis=1), h


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_simple_rnn_with_mask_and_states_as_keras_and_the_float64_reference(
    go_backwards, zero_output
):
    L = keras.layers
    seq, state = keras.Input((7, 3)), keras.Input((5,))
    steps = keras.Input((7,), dtype="bool")  # Keras 3 drops a propagated mask next to a state
    layer = L.SimpleRNN(5, return_sequences=True, return_state=True, go_backwards=go_backwards,
                        zero_output_for_mask=zero_output)  # fmt: skip
    outputs = layer(seq, mask=steps, initial_state=state)
    k_model = keras.Model([seq, steps, state], list(outputs))
    rng = np.random.default_rng(4)
    _randomise(k_model, rng)
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    mask = np.ones((2, 7), bool)
    mask[0, 4:] = False
    mask[1, :2] = False  # left padding too
    h0 = rng.normal(size=(2, 5)).astype(np.float32)
    model, params = jaxgru.load_keras(k_model)
    got = [np.asarray(o) for o in model.apply(params, [x, mask, h0])]
    expected = k_model.predict([x, mask, h0], verbose=0)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)
    ref_seq, ref_state = _simple_rnn_reference(
        x, mask, params[layer.name], h0, np.tanh, go_backwards, zero_output
    )
    np.testing.assert_allclose(got[0], ref_seq, atol=1e-5)
    np.testing.assert_allclose(got[1], ref_state, atol=1e-5)


def test_simple_rnn_params_after_an_optimizer_step_still_compute_as_keras():
    """Params as users hold them: after jax.grad, tree_map and an optax step (keys re-sorted)."""
    import optax

    k_model, x = _build(keras, "simple_rnn_sequences_backwards_relu")
    model, params = jaxgru.load_keras(k_model)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
    optimizer = optax.sgd(0.1)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    stepped = jax.tree.map(lambda p: p, optax.apply_updates(params, updates))
    k_model.set_weights(jaxgru.to_keras_weights(model, stepped))
    np.testing.assert_allclose(model.apply(stepped, x), k_model.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def test_simple_rnn_dropout_in_training_has_keras_statistics():
    """Dropout masks differ from Keras's random numbers; their effect on the first step's
    output (one input mask per sequence) is compared by its share of exact zeros with relu."""
    layer = keras.layers.SimpleRNN(64, dropout=0.5, activation="relu", use_bias=False,
                                   return_sequences=True)  # fmt: skip
    inputs = keras.Input((1, 200))
    k_model = keras.Model(inputs, layer(inputs))
    ours, params = jaxgru.load_keras(k_model)
    x = np.ones((256, 1, 200), np.float32)
    theirs = np.asarray(layer(x, training=True))
    mine = np.asarray(ours.apply(params, x, training=True, rng=jax.random.key(0)))
    np.testing.assert_allclose(mine.mean(), theirs.mean(), rtol=0.05)
    np.testing.assert_allclose(mine.std(), theirs.std(), rtol=0.05)
    assert not np.allclose(mine, ours.apply(params, x, training=False))


def test_a_stateful_simple_rnn_carries_its_state_from_batch_to_batch_as_keras(tmp_path):
    L = keras.layers
    k_model = keras.Sequential([
        keras.Input(batch_shape=(2, 7, 3)),
        L.SimpleRNN(4, stateful=True, return_sequences=True),
        L.Dense(2),
    ])  # fmt: skip
    _randomise(k_model, np.random.default_rng(8))
    k_model.save(tmp_path / "stateful.keras")
    rng = np.random.default_rng(9)
    batches = [rng.normal(size=(2, 7, 3)).astype(np.float32) for _ in range(3)]
    model, params = jaxgru.load_keras(tmp_path / "stateful.keras")
    states = model.initial_states(2)
    for x in batches:
        ours, states = model.apply(params, x, states=states)
        np.testing.assert_allclose(ours, k_model(x), rtol=1e-5, atol=1e-5)
    fresh = model.apply(params, batches[-1])
    assert np.abs(np.asarray(fresh) - np.asarray(ours)).max() > 1e-3
