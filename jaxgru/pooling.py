"""Keras's pooling over time: ``GlobalAveragePooling1D``, ``GlobalMaxPooling1D``,
``MaxPooling1D`` and ``AveragePooling1D``.

The global pools map ``(batch, time, features)`` to ``(batch, features)`` (``(batch, 1,
features)`` with ``keepdims``). The average leaves masked steps out, as Keras's; the maximum
reads every step (Keras's ignores the mask too). The windowed pools map ``(batch, time,
features)`` to ``(batch, new_time, features)`` with windows of ``pool_size`` steps every
``strides`` (``pool_size`` by default); ``padding="same"`` gives ``ceil(time / strides)``
windows, and an average over a window that runs past the ends counts only real steps
(TensorFlow's, Keras's). No pool passes a mask on.

>>> import jax.numpy as jnp
>>> x = jnp.array([[[1.0], [3.0], [8.0]]])
>>> GlobalAveragePooling1D().apply({}, x, mask=jnp.array([[True, True, False]]))
Array([[2.]], dtype=float32)
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru._checks import check_count
from jaxgru.convolution import output_length
from jaxgru.errors import ConfigError
from jaxgru.graph import GraphCallable
from jaxgru.layer import Weightless, register_layer


@dataclass(frozen=True)
class _GlobalPooling1D(Weightless, GraphCallable):
    _: KW_ONLY
    keepdims: bool = False
    name: str | None = None

    input_ndim: ClassVar[int] = 3

    def compute_mask(self, x, mask):
        return None

    def output_shape(self, input_shape: tuple) -> tuple:
        batch, _, features = input_shape
        return (batch, 1, features) if self.keepdims else (batch, features)

    def keras_config(self, context: Any) -> dict:
        return {"data_format": "channels_last", "keepdims": self.keepdims}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any):
        if config.get("data_format", "channels_last") != "channels_last":
            raise context.unsupported(" with data_format='channels_first'")
        return cls(keepdims=bool(config.get("keepdims", False)), name=config.get("name"))


@dataclass(frozen=True)
class GlobalAveragePooling1D(_GlobalPooling1D):
    """The mean over time of the unmasked steps."""

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, time, features)`` -> ``(batch, features)``."""
        x = jnp.asarray(x)
        if mask is None:
            return jnp.mean(x, axis=1, keepdims=self.keepdims)
        keep = jnp.asarray(mask, bool)[..., None]
        total = jnp.sum(jnp.where(keep, x, 0), axis=1, keepdims=self.keepdims)
        return total / jnp.sum(keep.astype(x.dtype), axis=1, keepdims=self.keepdims)


@dataclass(frozen=True)
class GlobalMaxPooling1D(_GlobalPooling1D):
    """The maximum over time (every step, as Keras's)."""

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, time, features)`` -> ``(batch, features)``."""
        return jnp.max(jnp.asarray(x), axis=1, keepdims=self.keepdims)


@dataclass(frozen=True)
class _Pooling1D(Weightless, GraphCallable):
    pool_size: int = 2
    strides: int | None = None
    padding: str = "valid"
    _: KW_ONLY
    name: str | None = None

    input_ndim: ClassVar[int] = 3

    def __post_init__(self) -> None:
        for field in ("pool_size", "strides"):
            value = getattr(self, field)
            if isinstance(value, (list, tuple)):  # Keras's config holds (2,)
                value = value[0] if len(value) == 1 else value
                object.__setattr__(self, field, value)
            if value is not None:
                check_count(f"{type(self).__name__} {field}", value)
        if self.strides is None:
            object.__setattr__(self, "strides", self.pool_size)
        padding = str(self.padding).lower()
        if padding not in ("valid", "same"):
            raise ConfigError(
                f"{type(self).__name__} padding must be 'valid' or 'same', got {self.padding!r}"
            )
        object.__setattr__(self, "padding", padding)

    def compute_mask(self, x, mask):
        return None

    def output_shape(self, input_shape: tuple) -> tuple:
        batch, time, features = input_shape
        return (batch, output_length(time, self.pool_size, self.strides, 1, self.padding),
                features)  # fmt: skip

    def _window(self, x: jax.Array, init: float, op) -> jax.Array:
        return jax.lax.reduce_window(x, jnp.asarray(init, x.dtype), op, (1, self.pool_size, 1),
                                     (1, self.strides, 1), self.padding.upper())  # fmt: skip

    def keras_config(self, context: Any) -> dict:
        return {"pool_size": [self.pool_size], "padding": self.padding,
                "strides": [self.strides], "data_format": "channels_last"}  # fmt: skip

    @classmethod
    def from_keras_config(cls, config: dict, context: Any):
        if config.get("data_format", "channels_last") != "channels_last":
            raise context.unsupported(" with data_format='channels_first'")
        return cls(config.get("pool_size", 2), config.get("strides"),
                   config.get("padding", "valid"), name=config.get("name"))  # fmt: skip


@dataclass(frozen=True)
class MaxPooling1D(_Pooling1D):
    """The maximum of each window of ``pool_size`` steps."""

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, time, features)`` -> ``(batch, new_time, features)``."""
        return self._window(jnp.asarray(x), -jnp.inf, jax.lax.max)


@dataclass(frozen=True)
class AveragePooling1D(_Pooling1D):
    """The mean of each window of ``pool_size`` steps (of its real steps, at the ends)."""

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, time, features)`` -> ``(batch, new_time, features)``."""
        x = jnp.asarray(x)
        total = self._window(x, 0.0, jax.lax.add)
        if self.padding == "valid":
            return total / jnp.asarray(self.pool_size, x.dtype)
        return total / self._window(jnp.ones_like(x[:1, :, :1]), 0.0, jax.lax.add)


for _layer_class in (GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D, AveragePooling1D):
    register_layer(_layer_class.__name__, _layer_class)
