"""Keras 3 activation names -> JAX functions.

Every activation that ``keras.activations.get(name)`` resolves and that keeps the shape of its
input is here, with Keras 3's default arguments. ``None`` means ``linear``, as in Keras.

Three Keras names are refused on purpose: ``glu`` halves the last axis (a GRU's gate shapes
would break, as they do in Keras), ``threshold`` has required arguments, so no GRU can name
it, and Keras 3's ``sparsemax`` is not sparsemax (see ``_REFUSED``). One name is jaxgru's:
``hard_sigmoid_tf_keras``, the ``clip(0.2 x + 0.5, 0, 1)`` that tf_keras 2.x files mean.

>>> import jax.numpy as jnp
>>> get("hard_sigmoid")(jnp.array([-4.0, 0.0, 1.5, 4.0]))
Array([0.  , 0.5 , 0.75, 1.  ], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from jaxgru.errors import ConfigError

Activation = Callable[[jax.Array], jax.Array]


def _tanh_shrink(x: jax.Array) -> jax.Array:
    return x - jnp.tanh(x)


def _soft_shrink(x: jax.Array, threshold: float = 0.5) -> jax.Array:
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)


def _hard_shrink(x: jax.Array, threshold: float = 0.5) -> jax.Array:
    return jnp.where(jnp.abs(x) > threshold, x, jnp.zeros_like(x))


_ACTIVATIONS: dict[str, Activation] = {
    "linear": lambda x: x,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,  # relu6(x + 3) / 6, as Keras 3
    # What files written by tf_keras 2.x mean by "hard_sigmoid": clip(0.2 x + 0.5, 0, 1).
    "hard_sigmoid_tf_keras": lambda x: jnp.clip(0.2 * x + 0.5, 0.0, 1.0),
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.2),
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "hard_silu": jax.nn.hard_silu,
    "hard_swish": jax.nn.hard_silu,
    "mish": jax.nn.mish,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "squareplus": lambda x: jax.nn.squareplus(x, b=4),
    "sparse_plus": jax.nn.sparse_plus,
    "sparse_sigmoid": jax.nn.sparse_sigmoid,
    "exponential": jnp.exp,
    "log_sigmoid": jax.nn.log_sigmoid,
    "hard_tanh": jax.nn.hard_tanh,
    "tanh_shrink": _tanh_shrink,
    "soft_shrink": _soft_shrink,
    "hard_shrink": _hard_shrink,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
}

_REFUSED = {
    "glu": "it halves the last axis, so the gate shapes cannot match",
    "threshold": "it has required arguments (threshold, default_value)",
    "sparsemax": (
        "Keras 3's sparsemax does not compute sparsemax (its threshold sums every cumulative "
        "sum instead of taking the k-th), so no faithful port exists"
    ),
}

NAMES: tuple[str, ...] = tuple(sorted(_ACTIVATIONS))

# Keras's activation layers that a layer may take as its activation object, with their
# arguments' defaults (Keras 3): ``Dense(activation=keras.layers.ELU(alpha=0.5))``.
LAYER_ARGUMENTS: dict[str, dict[str, Any]] = {
    "ELU": {"alpha": 1.0},
    "LeakyReLU": {"negative_slope": 0.3},
    "ReLU": {"max_value": None, "negative_slope": 0.0, "threshold": 0.0},
    "Softmax": {"axis": -1},
}


@dataclass(frozen=True)
class KerasActivation:
    """A Keras activation layer used as an activation, with its arguments, e.g.
    ``KerasActivation("ELU", (("alpha", 0.5),))``: computes exactly what the Keras layer's
    ``call`` computes and is written back to Keras files as that layer. ``args`` are
    ``(name, value)`` pairs, so the layer holding it stays hashable.
    """

    class_name: str
    args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        known = LAYER_ARGUMENTS.get(self.class_name)
        if known is None:
            raise ConfigError(
                f"{self.class_name} cannot be an activation here; jaxgru takes the activation "
                f"layers {', '.join(LAYER_ARGUMENTS)} (or any activation name)"
            )
        unknown = sorted(set(dict(self.args)) - set(known))
        if unknown:
            raise ConfigError(f"activation {self.class_name} has no arguments {unknown}")

    @property
    def config(self) -> dict[str, Any]:
        """Every argument, defaults filled in (the Keras layer's config)."""
        return {**LAYER_ARGUMENTS[self.class_name], **dict(self.args)}

    @property
    def __name__(self) -> str:  # how reports name it, e.g. ELU(alpha=0.5)
        return f"{self.class_name}({', '.join(f'{k}={v}' for k, v in self.config.items())})"

    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        if self.class_name == "ELU":
            return jax.nn.elu(x, alpha=c["alpha"])
        if self.class_name == "LeakyReLU":
            return jax.nn.leaky_relu(x, negative_slope=c["negative_slope"])
        if self.class_name == "Softmax":
            axis = tuple(c["axis"]) if isinstance(c["axis"], (list, tuple)) else c["axis"]
            return jax.nn.softmax(x, axis=axis)
        return _keras_relu(x, c["negative_slope"], c["max_value"], c["threshold"])


def _keras_relu(x: jax.Array, negative_slope: float, max_value: float | None,
                threshold: float) -> jax.Array:  # fmt: skip
    """Keras 3's ``relu(x, negative_slope, max_value, threshold)``, step for step."""
    if negative_slope != 0 and max_value is None and threshold == 0:
        return jax.nn.leaky_relu(x, negative_slope=negative_slope)
    negative = jax.nn.relu(threshold - x) if negative_slope != 0 else None
    clip = max_value is not None
    if threshold != 0:
        y = jnp.where(x > threshold, x, jnp.zeros_like(x))
    elif max_value == 6:
        y, clip = jax.nn.relu6(x), False
    else:
        y = jax.nn.relu(x)
    if clip:
        y = jnp.clip(y, 0.0, max_value)
    return y if negative is None else y - negative_slope * negative


def get(identifier: str | Activation | None) -> Activation:
    """Resolve a Keras activation name (or ``None``, or a callable) to a JAX function.

    Args:
        identifier: a Keras 3 activation name such as ``"tanh"``, ``None`` for linear, or a
            callable that maps an array to an array of the same shape.

    Returns:
        A function ``f(x) -> y`` with ``y.shape == x.shape``.

    Raises:
        ValueError: for an unknown or unsupported name.
        ConfigError: for anything that is neither a string, ``None`` nor callable.
    """
    if identifier is None:
        return _ACTIVATIONS["linear"]
    if callable(identifier):
        return identifier
    if not isinstance(identifier, str):
        raise ConfigError(
            f"activation must be a Keras activation name, None or a callable; "
            f"got {identifier!r} of type {type(identifier).__name__}"
        )
    if identifier in _REFUSED:
        raise ConfigError(
            f"activation {identifier!r} cannot be used in a GRU: {_REFUSED[identifier]}"
        )
    try:
        return _ACTIVATIONS[identifier]
    except KeyError:
        raise ConfigError(
            f"unknown activation {identifier!r}; expected one of: {', '.join(NAMES)}"
        ) from None


# f'(x) written in terms of f's output y = f(x), for the activations where it needs no x. The
# GRU's hand-written backward pass (``recurrence.fused_scan``) saves outputs only, so it serves
# these; a GRU with any other activation differentiates its scan with autodiff instead.
_DERIVATIVE_FROM_OUTPUT: dict[str, Activation] = {
    "sigmoid": lambda y: y * (1 - y),
    "tanh": lambda y: 1 - y * y,
    "linear": jnp.ones_like,
}


def derivative_from_output(identifier: str | Activation | None) -> Activation | None:
    """``y -> f'(x)`` where ``y = f(x)``, or ``None`` if ``f`` has no such form here.

    >>> derivative_from_output("tanh")(jnp.array([0.0, 0.5]))
    Array([1.  , 0.75], dtype=float32)
    """
    if identifier is None:
        identifier = "linear"
    return _DERIVATIVE_FROM_OUTPUT.get(identifier) if isinstance(identifier, str) else None
