"""Sequential and the layers beside GRU: naming, shapes, counts, masks, dropout, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru.errors import ConfigError


def test_keras_auto_naming_and_params_keyed_by_name():
    model = jaxgru.Sequential(
        [
            jaxgru.Masking(),
            jaxgru.GRU(6, return_sequences=True),
            jaxgru.Bidirectional(jaxgru.GRU(4, return_sequences=True)),
            jaxgru.GRU(3, name="head_gru"),
            jaxgru.Dropout(0.2),
            jaxgru.Dense(2),
            jaxgru.Dense(1, name="dense_1"),
        ],
        input_shape=(None, 3),
    )
    names = [layer.name for layer in model.layers]
    assert names == ["masking", "gru", "bidirectional", "head_gru", "dropout", "dense", "dense_1"]
    assert model.layers[2].forward_layer.name == "forward_gru_1"  # the inner GRU is gru_1
    assert model.layers[2].backward.name == "backward_gru_1"
    params = model.init(jax.random.key(0))
    assert list(params) == ["gru", "bidirectional", "head_gru", "dense", "dense_1"]
    assert model.apply(params, jnp.ones((2, 7, 3))).shape == (2, 1)


@pytest.mark.oracle
def test_summary_counts_equal_keras_count_params():
    pytest.importorskip("keras")
    from tests.keras_models import build

    k_model, _ = build("embedding_mask_zero")
    model, _ = jaxgru.load_keras(k_model)
    summary = model.summary()
    for layer in k_model.layers:
        row = next(line for line in summary.splitlines() if line.startswith(layer.name + " "))
        assert row.split()[-1].replace(",", "") == str(layer.count_params()), row
    assert f"Total params: {k_model.count_params():,}" in summary
    assert "(None, None, 3)" in summary  # the embedding's output shape


def test_duplicate_names_and_unchainable_layers_are_refused():
    with pytest.raises(ValueError, match=r"duplicates \['x'\]"):
        jaxgru.Sequential([jaxgru.GRU(2, name="x"), jaxgru.Dense(1, name="x")], input_shape=(4, 3))
    with pytest.raises(ValueError, match=r"needs \(batch, time, features\) input"):
        jaxgru.Sequential([jaxgru.GRU(2), jaxgru.GRU(2)], input_shape=(4, 3))
    with pytest.raises(ValueError, match=r"merge_mode=None outputs a pair"):
        pair = jaxgru.Bidirectional(jaxgru.GRU(2, return_sequences=True), merge_mode=None)
        jaxgru.Sequential([pair, jaxgru.Dense(1)], input_shape=(4, 3))
    with pytest.raises(ConfigError, match=r"cannot hold str"):
        jaxgru.Sequential(["gru"], input_shape=(4, 3))
    with pytest.raises(ValueError, match=r"return_state=True"):
        jaxgru.Sequential([jaxgru.GRU(2, return_state=True)], input_shape=(4, 3))


def test_apply_checks_input_rank_and_params():
    model = jaxgru.Sequential([jaxgru.GRU(2), jaxgru.Dense(1)], input_shape=(None, 3))
    params = model.init(jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"expects input of shape \(batch, None, 3\), got \(7, 3\)"
    ):
        model.apply(params, jnp.ones((7, 3)))
    with pytest.raises(ValueError, match=r"no entry for layers \['dense'\]"):
        model.apply({"gru": params["gru"]}, jnp.ones((2, 7, 3)))


def test_dropout_layer_trains_with_rng_and_is_identity_at_inference():
    layer = jaxgru.Dropout(0.25)
    x = jnp.ones((64, 50))
    np.testing.assert_array_equal(layer.apply({}, x), x)
    y = np.asarray(layer.apply({}, x, training=True, rng=jax.random.key(0)))
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs(np.mean(y == 0) - 0.25) < 0.03
    with pytest.raises(ValueError, match=r"needs rng"):
        layer.apply({}, x, training=True)


def test_masks_flow_from_embedding_through_grus():
    model = jaxgru.Sequential(
        [
            jaxgru.Embedding(10, 3, mask_zero=True),
            jaxgru.GRU(4, return_sequences=True),
            jaxgru.GRU(2),
        ],
        input_shape=(None,),
    )
    params = model.init(jax.random.key(1))
    ids = jnp.array([[5, 6, 0, 0, 0], [5, 6, 7, 0, 0]])
    out = model.apply(params, ids)
    short = model.apply(params, ids[:, :2])  # padding must not change the result
    np.testing.assert_allclose(out[0], short[0], atol=1e-6)
    assert not np.allclose(out[1], short[1])


def test_sequential_jits_with_the_model_static():
    model = jaxgru.Sequential([jaxgru.GRU(4), jaxgru.Dense(1)], input_shape=(None, 3))
    params = model.init(jax.random.key(0))
    x = jnp.ones((2, 5, 3))
    jitted = jax.jit(jaxgru.Sequential.apply, static_argnums=0)
    np.testing.assert_allclose(jitted(model, params, x), model.apply(params, x), atol=1e-6)


def test_a_bidirectional_backward_layer_follows_keras_rules_and_converters_refuse_it():
    from jaxgru.convert._common import inner_gru
    from jaxgru.errors import ConversionError

    forward = jaxgru.GRU(4, return_sequences=True)
    with pytest.raises(ConfigError, match="opposite go_backwards"):
        jaxgru.Bidirectional(forward, backward_layer=jaxgru.GRU(4, return_sequences=True))
    with pytest.raises(ConfigError, match="the same return_sequences"):
        jaxgru.Bidirectional(forward, backward_layer=jaxgru.GRU(4, go_backwards=True))
    mirror = jaxgru.GRU(4, return_sequences=True, go_backwards=True, name="backward_x")
    assert jaxgru.Bidirectional(forward, backward_layer=mirror).mirrored
    custom = jaxgru.Bidirectional(
        forward, backward_layer=jaxgru.GRU(4, return_sequences=True, go_backwards=True,
                                           activation="relu"),
    )  # fmt: skip
    assert not custom.mirrored and custom.backward.activation == "relu"
    model = jaxgru.Sequential([custom], input_shape=(None, 3))
    assert model.layers[0].backward.name == "backward_gru"
    stateful = model.with_gru_fields(stateful=True).layers[0]
    assert stateful.layer.stateful and stateful.backward_layer.stateful  # both directions
    with pytest.raises(ConversionError, match="backward_layer with settings of its own"):
        inner_gru(model.layers[0])
