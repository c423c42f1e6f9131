"""Keras's activation layers: ``Activation``, ``ReLU``, ``LeakyReLU``, ``ELU``, ``Softmax``,
``PReLU``.

Each applies one function elementwise (``Softmax`` along ``axis``) and passes its input's
mask on, as Keras's do; only ``PReLU`` has weights (its learned slopes ``alpha``). The
arguments mean what Keras's mean and the functions are ``activations.KerasActivation``'s,
which follow Keras's ``call`` step for step. ``Softmax``
also takes Keras's mask: masked positions are left out of the softmax and output 0.

>>> import jax.numpy as jnp
>>> ReLU(max_value=1.0).apply({}, jnp.array([-1.0, 0.5, 3.0]))
Array([0. , 0.5, 1. ], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import activations, initializers, weight_rules
from jaxgru._checks import check_param_shapes
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


@dataclass(frozen=True)
class PReLU(GraphCallable):
    """``x`` for ``x >= 0``, ``alpha * x`` below, with a learned ``alpha`` per position and
    feature; ``shared_axes`` (counted from 1, the batch axis being 0) share one slope, e.g.
    ``shared_axes=(1,)`` one per feature for every time step."""

    _: KW_ONLY
    shared_axes: tuple[int, ...] | None = None
    alpha_initializer: str | Callable = "zeros"
    alpha_regularizer: Any = None
    alpha_constraint: Any = None
    name: str | None = None

    params_from_shape: ClassVar[bool] = True
    keras_weight_options: ClassVar[dict[str, str]] = {"alpha": "alpha"}

    def __post_init__(self) -> None:
        weight_rules.resolve(self)
        axes = self.shared_axes
        if axes is not None:
            axes = (axes,) if isinstance(axes, int) else tuple(axes)
            if any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in axes):
                raise ConfigError(f"PReLU shared_axes are axes from 1 on, got {self.shared_axes}")
        object.__setattr__(self, "shared_axes", axes)

    def param_shapes(self, input_shape: tuple) -> dict[str, tuple[int, ...]]:
        """``alpha``: the input's shape without the batch axis, 1 on ``shared_axes``."""
        shared = self.shared_axes or ()
        shape = tuple(1 if i in shared else d for i, d in enumerate(input_shape) if i > 0)
        if None in shape:
            raise ConfigError(
                f"PReLU {self.name!r}: the input {tuple(input_shape)} has an axis of no fixed "
                "size, which needs a slope per position; share it (shared_axes) or fix its size"
            )
        return {"alpha": shape}

    def init(self, key: jax.Array, input_shape: tuple, dtype: Any = jnp.float32) -> dict:
        shape = self.param_shapes(input_shape)["alpha"]
        return {"alpha": initializers.get(self.alpha_initializer)(key, shape, dtype)}

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, ...)`` -> the same shape."""
        x = jnp.asarray(x)
        check_param_shapes(f"PReLU {self.name!r}", self.param_shapes(x.shape), params)
        alpha = params["alpha"].astype(x.dtype)[None]
        return jax.nn.relu(x) - alpha * jax.nn.relu(-x)

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def keras_config(self, context: Any) -> dict:
        return {"alpha_initializer": context.exportable(self.alpha_initializer,
                                                        "alpha_initializer"),
                "shared_axes": list(self.shared_axes) if self.shared_axes else None}  # fmt: skip

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> PReLU:
        return cls(shared_axes=config.get("shared_axes"), name=config.get("name"),
                   alpha_initializer=context.initializer(config.get("alpha_initializer"),
                                                         "zeros"))  # fmt: skip


for _layer_class in (Activation, ReLU, LeakyReLU, ELU, Softmax, PReLU):
    register_layer(_layer_class.__name__, _layer_class)
