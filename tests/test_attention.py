"""The attention layers against a readable float64 NumPy reference (loops over batch, heads
and steps, the equations as Keras documents them), with masks, causal masking and params as
users hold them (after an optimizer step); dropout's statistics in training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgru


def _softmax(scores, allowed, replace=False):
    """Keras's masked softmax: a disallowed score has 1e9 subtracted (``Attention``) or is
    replaced by -1e9 (``MultiHeadAttention``; a fully masked row is then uniform)."""
    scores = np.where(allowed, scores, -1e9 if replace else scores - 1e9)
    e = np.exp(scores - scores.max())
    return e / e.sum()


def reference_attention(q, v, k, q_mask, v_mask, scale, concat_weight, additive, causal):
    """One batch item at a time, one query step at a time."""
    out = np.zeros((q.shape[0], q.shape[1], v.shape[-1]))
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            if additive:
                scores = np.array([np.sum(scale * np.tanh(q[b, i] + k[b, j]))
                                   for j in range(k.shape[1])])  # fmt: skip
            elif concat_weight is not None:
                scores = np.array([concat_weight * np.sum(np.tanh(scale * (q[b, i] + k[b, j])))
                                   for j in range(k.shape[1])])  # fmt: skip
            else:
                scores = scale * np.array([q[b, i] @ k[b, j] for j in range(k.shape[1])])
            allowed = v_mask[b].copy()
            if causal:
                allowed &= np.arange(k.shape[1]) <= i
            out[b, i] = _softmax(scores, allowed) @ v[b] if q_mask[b, i] else 0.0
    return out


def reference_mha(p, q, v, k, q_mask, v_mask, k_mask, heads, key_dim, causal):
    """Project per head, attend per head and query step, project the heads back."""
    p = jax.tree.map(np.asarray, p)
    out = np.zeros((q.shape[0], q.shape[1], p["attention_output"]["kernel"].shape[-1]))
    for b in range(q.shape[0]):
        per_head = []
        for n in range(heads):
            qh = q[b] @ p["query"]["kernel"][:, n] + p["query"]["bias"][n]
            kh = k[b] @ p["key"]["kernel"][:, n] + p["key"]["bias"][n]
            vh = v[b] @ p["value"]["kernel"][:, n] + p["value"]["bias"][n]
            rows = []
            for i in range(q.shape[1]):
                allowed = q_mask[b, i] & v_mask[b] & k_mask[b]
                if causal:
                    allowed &= np.arange(k.shape[1]) <= i
                scores = np.array([qh[i] @ kh[j] for j in range(k.shape[1])]) / np.sqrt(key_dim)
                rows.append(_softmax(scores, allowed, replace=True) @ vh)
            per_head.append(np.array(rows))
        for i in range(q.shape[1]):
            out[b, i] = sum(per_head[n][i] @ p["attention_output"]["kernel"][n]
                            for n in range(heads)) + p["attention_output"]["bias"]  # fmt: skip
    return out


def _inputs():
    rng = np.random.default_rng(4)
    q, v, k = rng.normal(size=(2, 7, 3)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3))
    q_mask = np.ones((2, 7), bool)
    q_mask[1, 5:] = False
    v_mask = np.ones((2, 5), bool)
    v_mask[0, 3:] = False
    k_mask = np.ones((2, 5), bool)
    k_mask[1, 0] = False
    return q, v, k, q_mask, v_mask, k_mask


def _stepped(params):
    """Params as users hold them: after a gradient, tree_map and an optimizer step."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3) * jnp.cos(p), params)
    optimizer = optax.sgd(0.5)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return jax.tree.map(lambda p: p, optax.apply_updates(params, updates))


@pytest.mark.parametrize(
    ("layer", "additive", "causal"),
    [
        (jaxgru.Attention(), False, False),
        (jaxgru.Attention(use_scale=True), False, True),
        (jaxgru.Attention(use_scale=True, score_mode="concat"), False, False),
        (jaxgru.AdditiveAttention(), True, True),
        (jaxgru.AdditiveAttention(use_scale=False), True, False),
    ],
)
def test_attention_and_additive_attention_equal_the_reference(float64, layer, additive, causal):
    q, v, k, q_mask, v_mask, k_mask = _inputs()
    params = _stepped(layer.init(jax.random.key(0), 3, jnp.float64))
    if "scale" in params and params["scale"].ndim == 0:
        params = {**params, "scale": params["scale"] * 1.7}  # away from Keras's initial 1
    got = layer.apply(params, [q, v, k], mask=[q_mask, v_mask, k_mask],
                      use_causal_mask=causal)  # fmt: skip
    scale = np.asarray(params.get("scale", 1.0))
    concat = params.get("concat_score_weight")
    expected = reference_attention(q, v, k, q_mask, v_mask, scale,
                                   None if concat is None else float(concat), additive,
                                   causal)  # fmt: skip
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_equals_the_reference(float64, causal):
    q, v, k, q_mask, v_mask, k_mask = _inputs()
    layer = jaxgru.MultiHeadAttention(3, 2, value_dim=4, output_dim=6)
    params = _stepped(layer.init(jax.random.key(1), [(2, 7, 3), (2, 5, 4), (2, 5, 3)],
                                 jnp.float64))  # fmt: skip
    got = layer.apply(params, [q, v, k], mask=[q_mask, v_mask, k_mask], use_causal_mask=causal)
    expected = reference_mha(params, q, v, k, q_mask, v_mask, k_mask, 3, 2, causal)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-12)


def test_attention_dropout_drops_weights_in_training_only():
    """Uniform scores over 2000 value steps of ones: each output is the kept share of the
    weights scaled by 1 / (1 - rate), so about 1 on average, not 1 each time."""
    layer = jaxgru.Attention(dropout=0.25)
    q, v = jnp.zeros((4, 3, 2)), jnp.ones((4, 2000, 2))
    np.testing.assert_allclose(np.asarray(layer.apply({}, [q, v])), 1.0, rtol=1e-4)
    trained = np.asarray(layer.apply({}, [q, v], training=True, rng=jax.random.key(0)))
    assert abs(trained.mean() - 1.0) < 0.01
    assert trained.std() > 0.005  # a different share kept per query step
    kept = trained[..., 0] * 2000 * 0.75  # how many weights each step kept
    np.testing.assert_allclose(kept, np.round(kept), atol=0.05)  # whole counts
    assert abs(kept.mean() / 2000 - 0.75) < 0.01
    with pytest.raises(jaxgru.errors.DataError, match="rng"):
        layer.apply({}, [q, v], training=True)


def test_multi_head_attention_in_a_jaxgru_graph_trains_and_counts_params():
    """Built in jaxgru, called as Keras is (query, value, keywords), fit for a few steps."""
    tokens = jaxgru.Input((6,), dtype="int32")
    seq = jaxgru.GRU(5, return_sequences=True)(jaxgru.Embedding(9, 4, mask_zero=True)(tokens))
    attended = jaxgru.MultiHeadAttention(2, 3)(seq, seq, use_causal_mask=True)
    out = jaxgru.Dense(1)(jaxgru.GRU(4)(jaxgru.Add()([seq, attended])))
    model = jaxgru.Model(tokens, out)
    # MultiHeadAttention(2, 3) on 5 features: 3 * (5*2*3 + 2*3) + 2*3*5 + 5 = 143, as Keras.
    assert model.param_shapes()["multi_head_attention"]["query"]["kernel"] == (5, 2, 3)
    embedding, gru = 9 * 4, 3 * (4 * 5 + 5 * 5 + 2 * 5)  # GRU: kernel, recurrent, 2 biases
    gru_2, dense = 3 * (5 * 4 + 4 * 4 + 2 * 4), 4 + 1
    assert model.count_params() == embedding + gru + 143 + gru_2 + dense
    rng = np.random.default_rng(0)
    x = rng.integers(1, 9, (16, 6)).astype(np.int32)
    x[::2, 4:] = 0
    y = (x > 4).mean(axis=1, keepdims=True).astype(np.float32)  # the share of large ids
    params = model.init(jax.random.key(0))
    _, history = jaxgru.fit(model, params, x, y, epochs=8, batch_size=8, learning_rate=0.02)
    assert history["loss"][-1] < history["loss"][0]
