"""Optimizers and schedules against Keras's own, step by step, where epsilon matters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

from jaxgru.optimizers import ScheduleConfig, make_optimizer, make_schedule

pytestmark = pytest.mark.oracle

SHAPE = (3, 4)


def _gradients(scale: float, steps: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(scale * rng.normal(size=SHAPE)).astype(np.float32) for _ in range(steps)]


def _keras_trajectory(optimizer, start, gradients) -> list[np.ndarray]:
    variable = keras.Variable(start)
    out = []
    for g in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        out.append(np.array(variable))
    return out


def _jaxgru_trajectory(optimizer, start, gradients) -> list[np.ndarray]:
    params = {"w": jnp.asarray(start)}
    state = optimizer.init(params)
    out = []
    for g in gradients:
        updates, state = optimizer.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
        out.append(np.array(params["w"]))
    return out


OPTIMIZERS = {
    "adam": (lambda: keras.optimizers.Adam(0.01), {"name": "adam", "learning_rate": 0.01}),
    "adamw": (lambda: keras.optimizers.AdamW(0.01), {"name": "adamw", "learning_rate": 0.01}),
    "adamw_decay_0.1": (
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
        {"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1},
    ),
    "sgd": (lambda: keras.optimizers.SGD(0.1), {"name": "sgd", "learning_rate": 0.1}),
    "sgd_momentum": (
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
    ),
    "sgd_nesterov": (
        lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
    ),
    "rmsprop": (
        lambda: keras.optimizers.RMSprop(0.01),
        {"name": "rmsprop", "learning_rate": 0.01},
    ),
    "adam_clipnorm": (
        lambda: keras.optimizers.Adam(0.01, clipnorm=0.5),
        {"name": "adam", "learning_rate": 0.01, "clipnorm": 0.5},
    ),
    "sgd_global_clipnorm": (
        lambda: keras.optimizers.SGD(0.1, global_clipnorm=0.5),
        {"name": "sgd", "learning_rate": 0.1, "global_clipnorm": 0.5},
    ),
}


# Gradients of 1e-6 make Keras's epsilon placement visible: optax's adam(eps=1e-7) moves
# these weights by a visibly different amount.
@pytest.mark.parametrize("scale", [1e-6, 1.0])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_updates_match_keras(name, scale):
    keras_factory, ours = OPTIMIZERS[name]
    start = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    gradients = _gradients(scale)
    expected = _keras_trajectory(keras_factory(), start, gradients)
    actual = _jaxgru_trajectory(make_optimizer(**ours), start, gradients)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=4e-7)


def test_optax_adam_epsilon_differs_from_keras_where_it_matters():
    """The reason for scale_by_keras_adam: optax's epsilon placement is not Keras's."""
    start = np.zeros(SHAPE, np.float32)
    gradients = _gradients(1e-6)
    expected = _keras_trajectory(keras.optimizers.Adam(0.01), start, gradients)
    with jax.numpy_dtype_promotion("standard"):  # optax's own bias correction mixes dtypes
        optax_adam = _jaxgru_trajectory(optax.adam(0.01, eps=1e-7), start, gradients)
    ours = _jaxgru_trajectory(make_optimizer("adam", 0.01), start, gradients)
    assert np.max(np.abs(ours[-1] - expected[-1])) < 4e-7
    assert np.max(np.abs(optax_adam[-1] - expected[-1])) > 1e-4


def test_keras_defaults():
    for name, keras_cls in [("adam", keras.optimizers.Adam), ("sgd", keras.optimizers.SGD),
                            ("rmsprop", keras.optimizers.RMSprop)]:  # fmt: skip
        start = np.ones(SHAPE, np.float32)
        gradients = _gradients(1.0, steps=2)
        expected = _keras_trajectory(keras_cls(), start, gradients)
        actual = _jaxgru_trajectory(make_optimizer(name), start, gradients)
        np.testing.assert_allclose(actual[-1], expected[-1], rtol=1e-5)


def _keras_rates(schedule, steps):
    return np.array([float(schedule(step)) for step in range(steps)])


def test_schedules_match_keras():
    steps = 40
    rates = lambda s: np.array([float(s(t)) for t in range(steps)])  # noqa: E731
    cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=30, alpha=0.1)
    np.testing.assert_allclose(
        rates(make_schedule(0.1, "cosine_decay", decay_steps=30, alpha=0.1)),
        _keras_rates(cosine, steps), rtol=1e-5,
    )  # fmt: skip
    exponential = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.5)
    np.testing.assert_allclose(
        rates(make_schedule(0.1, "exponential_decay", decay_steps=7, decay_rate=0.5)),
        _keras_rates(exponential, steps), rtol=1e-5,
    )  # fmt: skip
    warm = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=25, alpha=0.0, warmup_target=0.1, warmup_steps=10
    )
    np.testing.assert_allclose(
        rates(make_schedule(0.1, "cosine_decay", decay_steps=25, warmup_steps=10)),
        _keras_rates(warm, steps), rtol=1e-5, atol=1e-8,
    )  # fmt: skip
    assert rates(make_schedule(0.1)).tolist() == [pytest.approx(0.1)] * steps


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "adagrad"}, "unknown optimizer 'adagrad'"),
        ({"name": "sgd", "clipnorm": 1.0, "global_clipnorm": 1.0}, "not both"),
        ({"name": "adam", "weight_decay": 0.1}, "weight_decay applies to adamw"),
        ({"name": "adam", "nesterov": True}, "nesterov applies to sgd, not 'adam'"),
        (
            {"name": "adam", "schedule": ScheduleConfig("cosine_decay")},
            "schedule 'cosine_decay' needs decay_steps, or the run's length",
        ),
    ],
)
def test_bad_optimizer_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(**kwargs)


def test_bad_schedules():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        make_schedule(0.1, "linear")
    with pytest.raises(ValueError, match="needs decay_steps"):
        make_schedule(0.1, "cosine_decay")
