"""Keras's global pooling over time: ``GlobalAveragePooling1D`` and ``GlobalMaxPooling1D``.

``(batch, time, features)`` -> ``(batch, features)`` (``(batch, 1, features)`` with
``keepdims``). The average leaves masked steps out, as Keras's; the maximum reads every step
(Keras's ignores the mask too). Neither passes a mask on.

>>> import jax.numpy as jnp
>>> x = jnp.array([[[1.0], [3.0], [8.0]]])
>>> GlobalAveragePooling1D().apply({}, x, mask=jnp.array([[True, True, False]]))
Array([[2.]], dtype=float32)
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax.numpy as jnp
from jax.typing import ArrayLike

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


for _layer_class in (GlobalAveragePooling1D, GlobalMaxPooling1D):
    register_layer(_layer_class.__name__, _layer_class)
