"""Regularizers, constraints and their place in training, against a float64 NumPy reference.

(Against real Keras: ``test_keras_regularization.py`` and the parity cases of
``test_fit_parity.py``.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgru
from jaxgru import constraints, regularizers, weight_rules
from jaxgru.errors import ConfigError

EPS = 1e-7


def _orthogonal_reference(x, factor, mode):
    v = x if mode == "rows" else x.T
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v * np.minimum(1 / np.where(norms == 0, 1e-300, norms), 1 / EPS)
    gram = v @ v.T
    n = len(v)
    return factor * 0.5 * np.abs(gram - np.diag(np.diag(gram))).sum() / (n * (n - 1) / 2)


def _norm(w, axis):
    return np.sqrt((w**2).sum(axis=axis, keepdims=True))


REFERENCES = [
    (regularizers.L1(0.3), lambda x: 0.3 * np.abs(x).sum()),
    (regularizers.L2(0.2), lambda x: 0.2 * (x**2).sum()),
    (regularizers.L1L2(0.1, 0.05), lambda x: 0.1 * np.abs(x).sum() + 0.05 * (x**2).sum()),
    (regularizers.OrthogonalRegularizer(0.4), lambda x: _orthogonal_reference(x, 0.4, "rows")),
    (regularizers.OrthogonalRegularizer(0.2, "columns"),
     lambda x: _orthogonal_reference(x, 0.2, "columns")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("regularizer", "reference"),
    REFERENCES,
    ids=[type(r).__name__ + str(i) for i, (r, _) in enumerate(REFERENCES)],
)
def test_each_regularizer_equals_the_reference(regularizer, reference):
    x = np.random.default_rng(0).normal(size=(5, 7))
    x[2] = 0.0
    assert float(regularizer(jnp.asarray(x, jnp.float32))) == pytest.approx(reference(x), 1e-5)


CONSTRAINT_REFERENCES = [
    (constraints.MaxNorm(1.2, axis=0),
     lambda w: w * np.clip(_norm(w, 0), 0, 1.2) / (EPS + _norm(w, 0))),
    (constraints.MinMaxNorm(0.9, 1.4, rate=0.7, axis=1),
     lambda w: w * (0.7 * np.clip(_norm(w, 1), 0.9, 1.4) + 0.3 * _norm(w, 1))
     / (EPS + _norm(w, 1))),
    (constraints.NonNeg(), lambda w: np.maximum(w, 0)),
    (constraints.UnitNorm(axis=(0, 1)), lambda w: w / (EPS + _norm(w, (0, 1)))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("constraint", "reference"),
    CONSTRAINT_REFERENCES,
    ids=[type(c).__name__ for c, _ in CONSTRAINT_REFERENCES],
)
def test_each_constraint_equals_the_reference(constraint, reference):
    w = 2 * np.random.default_rng(1).normal(size=(5, 7))
    out = np.asarray(constraint(jnp.asarray(w, jnp.float32)))
    assert not np.allclose(out, w)
    np.testing.assert_allclose(out, reference(w), rtol=1e-5, atol=1e-6)


def test_names_and_keras_entries_resolve_with_keras_s_defaults():
    assert regularizers.get("l2") == regularizers.L2(0.01)
    assert regularizers.get("l1l2") == regularizers.L1L2(0.0, 0.0)  # Keras 3's "l1l2"
    assert regularizers.get({"class_name": "L1", "config": {"l1": 0.5}}) == regularizers.L1(0.5)
    assert constraints.get("max_norm") == constraints.MaxNorm(2, 0)
    assert constraints.get({"class_name": "UnitNorm", "config": {"axis": [0, 1]}}).axis == (0, 1)
    entry = regularizers.serialize(regularizers.L1L2(0.1, 0.2))
    assert entry["class_name"] == "L1L2" and entry["config"] == {"l1": 0.1, "l2": 0.2}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: jaxgru.GRU(3, kernel_regularizer="l3"), "unknown regularizer 'l3'"),
        (lambda: jaxgru.Dense(3, kernel_constraint="positive"), "unknown constraint"),
        (lambda: jaxgru.Dense(3, bias_regularizer=regularizers.L2(-1.0)), "float >= 0"),
        (lambda: jaxgru.Dense(3, kernel_regularizer={"class_name": "L2", "config": {"l": 1}}),
         "does not take the arguments"),
        (lambda: jaxgru.Bidirectional(jaxgru.GRU(3, activity_regularizer="l2")),
         "activity_regularizer, which jaxgru does not apply inside a wrapper"),
    ],
)  # fmt: skip
def test_a_bad_regularizer_or_constraint_is_refused_with_the_fix(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def _model():
    gru = jaxgru.GRU(5, kernel_regularizer=regularizers.L2(0.1),
                     recurrent_regularizer=regularizers.L1(0.05),
                     bias_regularizer=regularizers.L1L2(0.01, 0.02),
                     activity_regularizer=regularizers.L2(0.3),
                     recurrent_constraint=constraints.MaxNorm(0.4))  # fmt: skip
    head = jaxgru.Dense(2, kernel_regularizer=regularizers.L1(0.2),
                        kernel_constraint=constraints.NonNeg())  # fmt: skip
    return jaxgru.Sequential([gru, head], input_shape=(7, 3))


def _reference_penalty(params, outputs):
    g, d = (jax.tree.map(lambda a: np.asarray(a, np.float64), params[k]) for k in ("gru", "dense"))
    return (0.1 * (g["kernel"] ** 2).sum() + 0.05 * np.abs(g["recurrent_kernel"]).sum()
            + 0.01 * np.abs(g["bias"]).sum() + 0.02 * (g["bias"] ** 2).sum()
            + 0.2 * np.abs(d["kernel"]).sum()
            + 0.3 * (np.asarray(outputs, np.float64) ** 2).sum() / len(outputs))  # fmt: skip


def test_the_penalty_of_params_held_as_users_hold_them_equals_the_reference():
    """Fresh from init, and after grad, tree_map and an optimizer step (keys re-sorted)."""
    model = _model()
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 7, 3))
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
    optimizer = jaxgru.optimizers.make_optimizer("adam", 0.1)  # Keras's Adam, on optax
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    stepped = jax.tree.map(lambda a: a, optax.apply_updates(params, updates))
    for held in (params, stepped):
        gru_out = model.layers[0].apply(held["gru"], x)
        run = model.forward(held, x)
        ours = float(weight_rules.weight_penalty(model, held) + run.activity)
        assert ours == pytest.approx(_reference_penalty(held, gru_out), rel=1e-5)


def test_padding_rows_neither_add_to_the_activity_penalty_nor_count_in_the_batch():
    model = _model()
    params = model.init(jax.random.key(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 7, 3)))
    padded = np.concatenate([x, np.ones((5, 7, 3), np.float32)])
    rows = jnp.asarray([1.0] * 3 + [0.0] * 5)
    short = model.forward(params, x).activity
    assert float(model.forward(params, padded, rows=rows).activity) == pytest.approx(
        float(short), rel=1e-6
    )
    assert float(model.forward(params, padded).activity) != pytest.approx(float(short), 1e-3)


def test_fit_projects_the_constrained_weights_after_every_step():
    model = _model()
    params = model.init(jax.random.key(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (16, 7, 3)))
    y = np.asarray(jax.random.normal(jax.random.key(2), (16, 2)))
    trained, _ = jaxgru.fit(model, params, x, y, optimizer="sgd", learning_rate=0.5,
                            batch_size=8, epochs=2, verbose=0)  # fmt: skip
    norms = np.linalg.norm(np.asarray(trained["gru"]["recurrent_kernel"]), axis=0)
    assert norms.max() <= 0.4 + 1e-5
    assert float(np.min(trained["dense"]["kernel"])) >= 0.0
    assert not np.allclose(trained["gru"]["kernel"], params["gru"]["kernel"])


def test_a_sequence_output_s_mask_weights_the_loss():
    """Masked steps change neither the loss nor the gradient; the loss is the mean over the
    real steps (float64 reference)."""
    model = jaxgru.Sequential([jaxgru.Masking(), jaxgru.GRU(4, return_sequences=True),
                               jaxgru.Dense(1)], input_shape=(7, 3))  # fmt: skip
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 7, 3)).astype(np.float32)
    x[0, 4:] = x[2, 2:] = 0.0
    y = rng.normal(size=(4, 7, 1)).astype(np.float32)
    logs = jaxgru.evaluate(model, params, x, y, batch_size=4)
    pred = np.asarray(model.apply(params, x), np.float64)
    real = np.any(x != 0, axis=2)
    expected = (((pred - y) ** 2)[..., 0] * real).sum() / real.sum()
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    changed = y.copy()
    changed[0, 5] += 10.0  # a masked step's target
    assert jaxgru.evaluate(model, params, x, changed, batch_size=4)["loss"] == pytest.approx(
        logs["loss"], rel=1e-6
    )


def test_a_toml_config_names_regularizers_and_constraints_as_a_keras_file_does():
    from jaxgru import config as experiment_config
    from jaxgru.experiment import Experiment

    layers = [{"type": "GRU", "units": 4, "kernel_constraint": "max_norm",
               "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.001}}},
              {"type": "Dense", "units": 1, "activity_regularizer": "l1"}]  # fmt: skip
    raw = {
        "name": "t",
        "data": {"kind": "sine", "samples": 20, "val_samples": 8, "test_samples": 8, "window": 6},
        "model": {"layers": layers},
    }
    cfg = experiment_config.resolve(raw)
    text = experiment_config.to_toml(cfg)
    assert experiment_config.resolve(experiment_config.tomllib.loads(text)) == cfg
    gru, dense = Experiment.from_config(cfg).model.layers
    assert gru.kernel_regularizer == regularizers.L2(0.001)
    assert gru.kernel_constraint == constraints.MaxNorm(2, 0)
    assert dense.activity_regularizer == regularizers.L1(0.01)
    layers[0]["kernel_regularizer"] = "l3"
    with pytest.raises(ConfigError, match=r"model.layers\[0\].*unknown regularizer 'l3'"):
        experiment_config.resolve(raw)
