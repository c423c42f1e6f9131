"""``jaxgru.Model`` built in Python: the graph it records, shared params, masks along edges,
call arguments, and the errors a wrong graph gets. The numbers against Keras are in
tests/test_keras_graph_models.py; here each graph output is checked against the same layers
applied by hand in float64 NumPy-readable steps (the layers themselves are checked against
Keras and the float64 reference in their own tests)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgru
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import TensorRef


def _seq2seq():
    enc_in = jaxgru.Input((None, 3), name="encoder_in")
    dec_in = jaxgru.Input((None, 4), name="decoder_in")
    _, h = jaxgru.GRU(5, return_state=True, name="encoder")(enc_in)
    y = jaxgru.GRU(5, return_sequences=True, name="decoder")(dec_in, initial_state=h)
    return jaxgru.Model([enc_in, dec_in], [jaxgru.Dense(2, name="head")(y), h], name="s2s")


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2, 6, 3)).astype(np.float32),
            rng.normal(size=(2, 7, 4)).astype(np.float32)]  # fmt: skip


def _user_params(params):
    """Params as a user holds them after a step: through jax.grad, tree_map and optax, whose
    trees come back with re-sorted keys."""
    grads = jax.grad(lambda p: sum(jnp.sum(v) for v in jax.tree.leaves(p)))(params)
    updates, _ = optax.sgd(0.0).update(grads, optax.sgd(0.0).init(params))
    return jax.tree.map(lambda p, u: p + u, params, updates)


def test_the_graph_is_recorded_with_keras_references():
    model = _seq2seq()
    assert [s.name for s in model.inputs] == ["encoder_in", "decoder_in"]
    assert [layer.name for layer in model.layers] == ["encoder", "decoder", "head"]
    decoder = model.calls[1]
    assert decoder.inputs == TensorRef("decoder_in", 0, 0)
    assert dict(decoder.arguments) == {"initial_state": TensorRef("encoder", 0, 1)}
    assert model.outputs == (TensorRef("head", 0, 0), TensorRef("encoder", 0, 1))
    assert model.output_shape() == [(None, None, 2), (None, 5)]
    hash(model)  # a static argument of jax.jit


def test_the_encoder_state_is_the_decoders_initial_state():
    model = _seq2seq()
    params = _user_params(model.init(jax.random.key(0)))
    x_enc, x_dec = _inputs()
    y, h = model.apply(params, [x_enc, x_dec])
    enc, dec, head = model.layers
    _, h_ref = enc.apply(params["encoder"], x_enc)
    y_ref = head.apply(params["head"], dec.apply(params["decoder"], x_dec, h_ref))
    np.testing.assert_allclose(h, h_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    zero_state = head.apply(params["head"], dec.apply(params["decoder"], x_dec))
    assert np.abs(np.asarray(y) - np.asarray(zero_state)).max() > 1e-3  # the wiring matters
    by_name = model.apply(params, {"decoder_in": x_dec, "encoder_in": x_enc})
    np.testing.assert_array_equal(by_name[0], y)
    jitted = jax.jit(model.apply)(params, [x_enc, x_dec])
    np.testing.assert_allclose(jitted[0], y, rtol=1e-6, atol=1e-6)


def test_a_layer_called_twice_shares_its_params_and_numbers_its_calls():
    a, b = jaxgru.Input((None, 3)), jaxgru.Input((None, 3))
    shared = jaxgru.GRU(4, name="shared")
    diff = jaxgru.Subtract()([shared(a), shared(b)])
    model = jaxgru.Model([a, b], diff)
    assert [layer.name for layer in model.layers] == ["shared", "subtract"]
    assert list(model.init(jax.random.key(0))) == ["shared"]
    assert model.calls[2].inputs == (TensorRef("shared", 0, 0), TensorRef("shared", 1, 0))
    assert model.count_params() == jaxgru.GRU(4).param_shapes(3)["kernel"][1] * (3 + 4) + 2 * 12
    params = model.init(jax.random.key(1))
    x = _inputs()[0]
    np.testing.assert_array_equal(model.apply(params, [x, x]), np.zeros((2, 4)))
    assert "shared[1][0]" in model.summary()


def test_masks_flow_along_edges_and_a_written_mask_replaces_them():
    x_in = jaxgru.Input((None, 3))
    masked = jaxgru.Masking()(x_in)
    seq = jaxgru.GRU(4, return_sequences=True)(masked)
    pooled = jaxgru.GlobalAveragePooling1D()(seq)
    model = jaxgru.Model(x_in, pooled)
    params = model.init(jax.random.key(0))
    x = _inputs()[0]
    x[1, 4:] = 0.0
    got = np.asarray(model.apply(params, x), np.float64)
    y = np.asarray(model.layers[1].apply(params[model.layers[1].name], x,
                                         mask=np.any(x != 0, -1)), np.float64)  # fmt: skip
    expected = [y[0].mean(0), y[1, :4].mean(0)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    frames, frame_mask = jaxgru.Input((6, 3)), jaxgru.Input((6,), dtype="bool")
    out = jaxgru.GRU(4)(frames, mask=frame_mask)
    model = jaxgru.Model([frames, frame_mask], out)
    params = model.init(jax.random.key(2))
    keep = np.array([[True] * 6, [True] * 3 + [False] * 3])
    got = model.apply(params, [x, keep])
    gru = model.layers[0]
    np.testing.assert_allclose(got, gru.apply(params[gru.name], x, mask=keep), rtol=1e-6)


def test_keras_3_drops_the_mask_of_a_call_given_initial_state():
    x_in, h_in = jaxgru.Input((None, 3)), jaxgru.Input((4,))
    y = jaxgru.GRU(4)(jaxgru.Masking()(x_in), initial_state=h_in)
    model = jaxgru.Model([x_in, h_in], y)
    params = model.init(jax.random.key(0))
    x, h = _inputs()[0], np.ones((2, 4), np.float32)
    x[0, 3:] = 0.0
    gru = model.layers[1]
    unmasked = gru.apply(params[gru.name], x, h)
    np.testing.assert_allclose(model.apply(params, [x, h]), unmasked, rtol=1e-6)
    legacy = jaxgru.Model(model.inputs, model.outputs, layers=model.layers, calls=model.calls,
                          legacy=True)  # fmt: skip
    masked = gru.apply(params[gru.name], x, h, mask=np.any(x != 0, -1))
    np.testing.assert_allclose(legacy.apply(params, [x, h]), masked, rtol=1e-6)


def test_training_written_in_a_call_applies_when_apply_is_not_told():
    x_in = jaxgru.Input((1000,))
    model = jaxgru.Model(x_in, jaxgru.Dropout(0.25)(x_in, training=True))
    ones = np.ones((4, 1000), np.float32)
    on = np.asarray(model.apply({}, ones, rng=jax.random.key(0)))
    assert abs((on == 0).mean() - 0.25) < 0.03
    np.testing.assert_allclose(np.unique(on), [0.0, 1 / 0.75], rtol=1e-6)
    np.testing.assert_array_equal(model.apply({}, ones, training=False), ones)


def test_fit_and_predict_train_a_one_input_graph():
    x_in = jaxgru.Input((None, 3))
    seq = jaxgru.GRU(4, return_sequences=True)(x_in)
    pooled = jaxgru.Concatenate()([jaxgru.GlobalAveragePooling1D()(seq),
                                   jaxgru.GlobalMaxPooling1D()(seq)])  # fmt: skip
    model = jaxgru.Model(x_in, jaxgru.Dense(1)(pooled))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 7, 3)).astype(np.float32)
    y = x.mean((1, 2))[:, None]
    params, history = jaxgru.fit(model, model.init(jax.random.key(0)), x, y, epochs=15,
                                 batch_size=8, learning_rate=0.02, verbose=0)  # fmt: skip
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert jaxgru.predict(model, params, x).shape == (32, 1)


def test_several_inputs_are_refused_by_fit_with_what_to_do():
    model = _seq2seq()
    with pytest.raises(DataError, match=r"2 inputs and 2 outputs.*jax.jit\(model.apply\)"):
        jaxgru.predict(model, model.init(jax.random.key(0)), _inputs())


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda x: jaxgru.GRU(3)(np.ones((2, 7, 3))), "symbolic tensors"),
        (lambda x: jaxgru.GRU(3)(x, constants=x), r"called with \['constants'\]"),
        (lambda x: jaxgru.Dense(3)(x, training="yes"), "training must be"),
        (lambda x: jaxgru.Concatenate(axis=1)([x, jaxgru.Input((None, 4))]), "cannot take"),
        (lambda x: jaxgru.Model(x, jaxgru.Dense(2)(jaxgru.Input((3,)))), "not in Model"),
        (lambda x: jaxgru.Model(x, [jaxgru.GRU(2)(x), jaxgru.GRU(2, name="gru")(x)]) and
         jaxgru.Model(x, [jaxgru.GRU(2, name="g")(x), jaxgru.GRU(2, name="g")(x)]), "unique"),
    ],
)  # fmt: skip
def test_a_wrong_graph_is_refused_with_the_reason(build, message):
    with pytest.raises(ConfigError, match=message):
        build(jaxgru.Input((None, 3)))


def test_wrong_inputs_to_apply_are_refused():
    model = _seq2seq()
    params = model.init(jax.random.key(0))
    with pytest.raises(DataError, match="takes 2 inputs"):
        model.apply(params, _inputs()[0])
    with pytest.raises(DataError, match=r"missing \['decoder_in'\]"):
        model.apply(params, {"encoder_in": _inputs()[0]})
    with pytest.raises(DataError, match="decoder_in"):
        model.apply(params, [_inputs()[0], _inputs()[0]])


def test_a_stateful_gru_in_a_graph_carries_its_state_between_batches():
    x_in = jaxgru.Input((None, 3), batch_size=2)
    out = jaxgru.Dense(2)(jaxgru.GRU(4, stateful=True, return_sequences=True, name="g")(x_in))
    model = jaxgru.Model(x_in, out)
    params = model.init(jax.random.key(0))
    x = np.random.default_rng(3).normal(size=(2, 8, 3)).astype(np.float32)
    states = model.initial_states(2)
    assert list(states) == ["g"] and states["g"].shape == (2, 4)
    first, states = model.apply(params, x[:, :5], states=states)
    second, states = model.apply(params, x[:, 5:], states=states)
    whole = model.apply(params, x)
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, rtol=1e-5, atol=1e-6)


def test_bidirectional_states_wire_into_another_bidirectional():
    x_in = jaxgru.Input((None, 3))
    seq, h_f, h_b = jaxgru.Bidirectional(jaxgru.GRU(2, return_sequences=True,
                                                    return_state=True))(x_in)  # fmt: skip
    top = jaxgru.Bidirectional(jaxgru.GRU(2), name="top")
    model = jaxgru.Model(x_in, [top(seq, initial_state=[h_f, h_b]), h_b])
    assert model.output_shape() == [(None, 4), (None, 2)]
    params = model.init(jax.random.key(1))
    x = np.random.default_rng(4).normal(size=(2, 7, 3)).astype(np.float32)
    got, h = model.apply(params, x)
    first = model.layer("bidirectional")
    seq_v, hf_v, hb_v = first.apply(params["bidirectional"], x)
    expected = top.apply(params["top"], seq_v, initial_state=[hf_v, hb_v])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h, hb_v, rtol=1e-6, atol=1e-6)
