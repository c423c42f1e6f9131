"""Keras's activation layers: ``Activation``, ``ReLU``, ``LeakyReLU``, ``ELU``, ``Softmax``.

Each applies one function elementwise (``Softmax`` along ``axis``), has no weights and passes
its input's mask on, as Keras's do. The arguments mean what Keras's mean and the functions are
``activations.KerasActivation``'s, which follow Keras's ``call`` step for step. ``Softmax``
also takes Keras's mask: masked positions are left out of the softmax and output 0.

>>> import jax.numpy as jnp
>>> ReLU(max_value=1.0).apply({}, jnp.array([-1.0, 0.5, 3.0]))
Array([0. , 0.5, 1. ], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import activations
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import GraphCallable
from jaxgru.layer import Weightless, register_layer


class _Elementwise(Weightless, GraphCallable):
    """What every activation layer shares: no weights, the mask passed on, the same shape."""

    name: str | None

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def function(self) -> Callable[[jax.Array], jax.Array]:
        """The function this layer applies."""
        args = tuple(
            (k, getattr(self, k)) for k in activations.LAYER_ARGUMENTS[type(self).__name__]
        )
        return activations.KerasActivation(type(self).__name__, args)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, ...)`` -> the same shape."""
        return self.function()(jnp.asarray(x))

    def keras_config(self, context: Any) -> dict:
        return dict(self.function().config)

    @classmethod
    def from_keras_config(cls, config: dict, context: Any):
        names = activations.LAYER_ARGUMENTS[cls.__name__]
        renamed = {"alpha": "negative_slope"} if cls.__name__ == "LeakyReLU" else {}  # tf_keras
        values = {renamed.get(k, k): v for k, v in config.items()}
        return cls(**{k: values[k] for k in names if k in values}, name=config.get("name"))


@dataclass(frozen=True)
class ReLU(_Elementwise):
    """``max(x, 0)``, or with Keras's arguments: ``negative_slope * (x - threshold)`` below
    ``threshold``, ``x`` above it, clipped at ``max_value``."""

    _: KW_ONLY
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    name: str | None = None

    def __post_init__(self) -> None:
        for field in ("max_value", "negative_slope", "threshold"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ConfigError(f"ReLU {field} must be >= 0 (as Keras requires), got {value}")


@dataclass(frozen=True)
class LeakyReLU(_Elementwise):
    """``x`` for ``x >= 0``, ``negative_slope * x`` below (Keras's default slope 0.3)."""

    _: KW_ONLY
    negative_slope: float = 0.3
    name: str | None = None


@dataclass(frozen=True)
class ELU(_Elementwise):
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` below."""

    _: KW_ONLY
    alpha: float = 1.0
    name: str | None = None


@dataclass(frozen=True)
class Softmax(_Elementwise):
    """Softmax along ``axis`` (an int or a list of ints); with a Keras mask, masked positions
    take no part and output 0."""

    _: KW_ONLY
    axis: int | tuple[int, ...] = -1
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.axis, list):  # a Keras config's list; a tuple keeps it hashable
            object.__setattr__(self, "axis", tuple(self.axis))

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        x = jnp.asarray(x)
        if mask is None:
            return self.function()(x)
        mask = jnp.asarray(mask).astype(bool)
        fits = mask.ndim <= x.ndim and all(
            m in (1, i) for m, i in zip(mask.shape[::-1], x.shape[::-1], strict=False)
        )
        if not fits:
            raise DataError(
                f"Softmax {self.name!r}: the mask {mask.shape} must broadcast to the input "
                f"{x.shape} (Keras raises the same)"
            )
        large_negative = -3e4 if x.dtype == jnp.float16 else -1e9
        y = self.function()(jnp.where(mask, x, jnp.asarray(large_negative, x.dtype)))
        return jnp.where(mask, y, jnp.zeros_like(y))


@dataclass(frozen=True)
class Activation(_Elementwise):
    """``activation(x)``: any activation name (or an activation layer's function)."""

    activation: Any = "linear"
    _: KW_ONLY
    name: str | None = None

    def __post_init__(self) -> None:
        activations.get(self.activation)

    def function(self) -> Callable[[jax.Array], jax.Array]:
        return activations.get(self.activation)

    def keras_config(self, context: Any) -> dict:
        return {"activation": context.exportable(self.activation, "activation") or "linear"}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Activation:
        return cls(context.activation(config.get("activation")), name=config.get("name"))


for _layer_class in (Activation, ReLU, LeakyReLU, ELU, Softmax):
    register_layer(_layer_class.__name__, _layer_class)
