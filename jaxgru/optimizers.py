"""Optimizers by Keras name, built from optax, with Keras's defaults and update rules.

``adam`` and ``adamw`` follow Keras exactly: Keras adds ``epsilon`` to ``sqrt(v)`` before the
bias correction, ``θ -= lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ) · m / (sqrt(v) + ε)``, which is optax's
``adam`` with a step-dependent ``ε/sqrt(1-β₂ᵗ)``; ``scale_by_keras_adam`` does it directly.
``sgd`` with ``momentum`` keeps Keras's velocity ``v = momentum·v - lr·g`` (the learning
rate inside it, so a rate that changes during the run, by a schedule or
``ReduceLROnPlateau``, moves only the new steps, as Keras's does); ``rmsprop`` is optax's, with
Keras's defaults (``rho=0.9``, ``epsilon=1e-7`` inside the square root).

``adjustable_learning_rate=True`` keeps the learning rate in the optimizer state
(``optax.inject_hyperparams``), where ``learning_rate_of`` reads it and
``with_learning_rate`` changes it between steps without a recompile.

>>> import jax.numpy as jnp
>>> opt = make_optimizer("sgd", learning_rate=0.1)
>>> updates, _ = opt.update({"w": jnp.array(2.0)}, opt.init({"w": jnp.array(0.0)}))
>>> float(updates["w"])
-0.2
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgru.errors import ConfigError

Schedule = Callable[[jax.Array], jax.Array]

DEFAULT_LEARNING_RATES = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3}
SCHEDULES = ("constant", "cosine_decay", "exponential_decay")


@dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule by name (``[train.schedule]``, or ``fit(schedule=...)``); see
    ``make_schedule``. ``decay_steps=None`` decays over every step after the warmup."""

    name: str = "constant"
    decay_steps: int | None = None
    decay_rate: float = 0.96
    alpha: float = 0.0
    warmup_steps: int = 0

    def build(self, learning_rate: float, total_steps: int | None) -> Schedule | float:
        """The schedule peaking at ``learning_rate`` over a run of ``total_steps`` steps
        (the plain rate for ``constant`` without warmup)."""
        if self.name == "constant" and not self.warmup_steps:
            return learning_rate
        decay_steps = self.decay_steps
        if decay_steps is None and self.name != "constant":
            if total_steps is None:
                raise ConfigError(
                    f"schedule {self.name!r} needs decay_steps, or the run's length to decay "
                    "over every step after the warmup"
                )
            decay_steps = max(total_steps - self.warmup_steps, 1)
        return make_schedule(
            learning_rate, self.name, decay_steps=decay_steps, decay_rate=self.decay_rate,
            alpha=self.alpha, warmup_steps=self.warmup_steps,
        )  # fmt: skip


def steps_of(samples: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps in ``epochs`` epochs of ``samples`` (the last batch may be short)."""
    return epochs * math.ceil(samples / batch_size)


class KerasAdamState(NamedTuple):
    """Keras Adam's slots: the step count and the moments ``m``, ``v`` (shaped as params)."""

    count: jax.Array
    m: optax.Updates
    v: optax.Updates


def scale_by_keras_adam(
    learning_rate: float | Schedule,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Keras's Adam update, operation for operation: ``-lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ)·m/(sqrt(v)+ε)``.

    With ``weight_decay`` (Keras's AdamW) it also subtracts ``lr·weight_decay·θ``.
    """

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        if weight_decay and params is None:
            raise ConfigError(
                "AdamW's weight decay needs params: call update(grads, state, params)"
            )
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        t = (state.count + 1).astype(jnp.float32)
        alpha = lr * jnp.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.m, grads)
        v = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state.v, grads)
        updates = jax.tree.map(lambda m, v: -(m * alpha) / (jnp.sqrt(v) + epsilon), m, v)
        if weight_decay:
            updates = jax.tree.map(lambda u, p: u - lr * weight_decay * p, updates, params)
        return updates, KerasAdamState(state.count + 1, m, v)

    return optax.GradientTransformation(init, update)


def clip_each_by_norm(max_norm: float) -> optax.GradientTransformation:
    """Keras's ``clipnorm``: each gradient array scaled to an L2 norm of at most ``max_norm``."""

    def clip(g):
        norm = jnp.sqrt(jnp.sum(jnp.square(g)))
        return g * max_norm / jnp.maximum(norm, max_norm)

    return optax.stateless(lambda updates, params: jax.tree.map(clip, updates))


def make_schedule(
    learning_rate: float,
    schedule: str = "constant",
    *,
    decay_steps: int | None = None,
    decay_rate: float = 0.96,
    alpha: float = 0.0,
    warmup_steps: int = 0,
) -> Schedule:
    """A learning-rate schedule, optionally after a linear warmup from 0.

    Args:
        learning_rate: the peak rate (reached after ``warmup_steps``).
        schedule: ``constant``; ``cosine_decay`` (to ``alpha·lr`` over ``decay_steps``, as
            Keras's ``CosineDecay``); ``exponential_decay`` (``lr·decay_rate^(t/decay_steps)``,
            as Keras's ``ExponentialDecay``).
        decay_steps: steps of decay after the warmup; required by the decaying schedules.
        decay_rate: for ``exponential_decay``.
        alpha: for ``cosine_decay``, the final fraction of ``learning_rate``.
        warmup_steps: steps of linear warmup from 0 to ``learning_rate``.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule != "constant" and not decay_steps:
        raise ConfigError(f"schedule {schedule!r} needs decay_steps > 0")
    if schedule == "cosine_decay":
        main = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha)
    elif schedule == "exponential_decay":
        main = optax.exponential_decay(learning_rate, decay_steps, decay_rate)
    else:
        main = optax.constant_schedule(learning_rate)
    if warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
        main = optax.join_schedules([warmup, main], [warmup_steps])
    # optax mixes Python floats with the int32 step count, which strict dtype promotion
    # refuses; a float32 count is exact for 2**24 steps.
    return lambda count: main(jnp.asarray(count, jnp.float32))


def make_optimizer(
    name: str = "adam",
    learning_rate: float | Schedule | None = None,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    schedule: ScheduleConfig | None = None,
    total_steps: int | None = None,
    adjustable_learning_rate: bool = False,
) -> optax.GradientTransformation:
    """An optax optimizer by Keras name: ``adam``, ``adamw``, ``sgd``, ``rmsprop``.

    The one place a training optimizer is built from names: ``fit`` (from its keywords or a
    ``TrainConfig``) and TOML configs both come here.

    Args:
        name: the optimizer.
        learning_rate: a float or a schedule of the step; default Keras's (0.01 for ``sgd``,
            else 0.001).
        momentum: for ``sgd`` and ``rmsprop``.
        nesterov: for ``sgd``.
        weight_decay: decoupled decay for ``adamw`` (Keras's default 0.004).
        clipnorm: clip each gradient array to this L2 norm first (Keras's ``clipnorm``).
        global_clipnorm: clip all gradients together to this global norm first.
        schedule: a ``ScheduleConfig`` that turns ``learning_rate`` (or the default) into
            its peak; needs ``total_steps`` when it leaves ``decay_steps`` unset.
        total_steps: the run's length in optimizer steps (``steps_of``).
        adjustable_learning_rate: keep the (constant) learning rate in the optimizer state,
            for ``with_learning_rate`` (``ReduceLROnPlateau``).
    """
    if name not in DEFAULT_LEARNING_RATES:
        raise ConfigError(
            f"unknown optimizer {name!r}; choose one of {', '.join(DEFAULT_LEARNING_RATES)}"
        )
    if clipnorm is not None and global_clipnorm is not None:
        raise ConfigError("set clipnorm or global_clipnorm, not both")
    if weight_decay is not None and name != "adamw":
        raise ConfigError(f"weight_decay applies to adamw, not {name!r}")
    lr = learning_rate_schedule(name, learning_rate, schedule, total_steps)
    if nesterov and name != "sgd":
        raise ConfigError(f"nesterov applies to sgd, not {name!r}")

    def build(learning_rate):  # the name optax.inject_hyperparams keeps it under
        return _build(name, learning_rate, momentum, nesterov, weight_decay, clipnorm,
                      global_clipnorm)  # fmt: skip

    if not adjustable_learning_rate:
        return build(lr)
    if callable(lr):
        raise ConfigError(
            "ReduceLROnPlateau cannot change the learning rate of a schedule (Keras refuses it "
            "too); use a constant learning_rate, or drop one of them"
        )
    return optax.inject_hyperparams(build)(jnp.asarray(lr, jnp.float32))


def learning_rate_schedule(
    name: str,
    learning_rate: float | Schedule | None,
    schedule: ScheduleConfig | None,
    total_steps: int | None,
) -> float | Schedule:
    """The learning rate ``make_optimizer`` builds optimizer ``name`` with: Keras's default
    for ``None``, turned into ``schedule`` (peaking at it) when one is given."""
    lr = DEFAULT_LEARNING_RATES[name] if learning_rate is None else learning_rate
    if schedule is None:
        return lr
    if callable(lr):
        raise ConfigError("give a schedule or a learning_rate schedule, not both")
    return schedule.build(lr, total_steps)


def _build(name, lr, momentum, nesterov, weight_decay, clipnorm, global_clipnorm):
    """``make_optimizer``'s transformation, its arguments checked."""
    if name == "adam":
        update = scale_by_keras_adam(lr)
    elif name == "adamw":
        update = scale_by_keras_adam(
            lr, weight_decay=0.004 if weight_decay is None else weight_decay
        )
    elif name == "sgd":
        update = optax.sgd(lr)
        if momentum:  # Keras's v = momentum * v - lr * g, the rate inside the velocity
            update = optax.chain(optax.scale_by_learning_rate(lr),
                                 optax.trace(decay=momentum, nesterov=nesterov))  # fmt: skip
    else:
        update = optax.rmsprop(lr, decay=0.9, eps=1e-7, momentum=momentum or None)
    if clipnorm is not None:
        return optax.chain(clip_each_by_norm(clipnorm), update)
    if global_clipnorm is not None:
        return optax.chain(optax.clip_by_global_norm(global_clipnorm), update)
    return update


def learning_rate_of(opt_state: optax.OptState) -> float:
    """The learning rate an ``adjustable_learning_rate`` optimizer's state holds."""
    return float(opt_state.hyperparams["learning_rate"])


def with_learning_rate(opt_state: optax.OptState, learning_rate: float) -> optax.OptState:
    """The state of an ``adjustable_learning_rate`` optimizer, its next steps at
    ``learning_rate`` (float32, as Keras's variable)."""
    rate = jnp.asarray(learning_rate, jnp.float32)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": rate})
