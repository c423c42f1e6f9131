"""``to_keras_weights`` / ``from_keras_weights`` on params as users hold them: after
``jax.grad``, ``tree_map`` or an optax step, whose dicts come back with their keys sorted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgru
from tests.helpers import FEATURES, UNITS
from tests.toy_layers import Scale

LAYERS = {
    "gru": jaxgru.GRU(UNITS),
    "gru_reset_before": jaxgru.GRU(UNITS, reset_after=False),
    "dense": jaxgru.Dense(2),
    "bidirectional": jaxgru.Bidirectional(jaxgru.GRU(UNITS)),
    "embedding": jaxgru.Embedding(11, 4),
    "user_layer": Scale(2.0),
}


def _trained(layer, params):
    """One SGD step on a loss of every param: the dict optax returns has its keys re-sorted."""
    loss = lambda p: sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(p))  # noqa: E731
    grads = jax.grad(loss)(params)
    opt = optax.sgd(0.1)
    updates, _ = opt.update(grads, opt.init(params))
    return optax.apply_updates(params, updates)


@pytest.mark.parametrize("name", LAYERS)
def test_a_lone_layer_converts_params_whatever_their_key_order(name):
    layer = LAYERS[name]
    params = layer.init(jax.random.key(0), FEATURES)
    trained = _trained(layer, params)
    if name == "bidirectional":  # Keras lists the forward GRU's arrays, then the backward's
        inner = list(layer.forward_layer.param_shapes(FEATURES))
        expected = [trained[side][k] for side in ("forward_layer", "backward_layer")
                    for k in inner]  # fmt: skip
        assert list(trained["forward_layer"]) != inner  # re-sorted: the case that used to fail
    else:
        keras_order = list(layer.param_shapes(FEATURES))
        expected = [trained[k] for k in keras_order]
        if len(keras_order) > 1:
            assert list(trained) != keras_order  # re-sorted: the case that used to fail
    weights = jaxgru.to_keras_weights(layer, trained)
    assert [w.shape for w in weights] == [e.shape for e in expected]
    for w, e in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(w, np.asarray(e))
    back = jaxgru.from_keras_weights(layer, weights)
    jax.tree.map(np.testing.assert_array_equal, back, trained)
