"""A user's own layer, registered with ``jaxgru.register_layer`` as a Keras custom layer is.

``Scale`` multiplies the last axis by a learned vector ``w (features,)`` and a fixed
``factor``: ``y = x * w * factor``. Keras's twin is in ``test_custom_keras_layer.py``,
registered in Keras as ``jaxgru_test>Scale``.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any

import jax
import jax.numpy as jnp

import jaxgru

KERAS_NAME = "jaxgru_test>Scale"


@dataclass(frozen=True)
class Scale:
    factor: float = 1.0
    _: KW_ONLY
    name: str | None = None

    def param_shapes(self, input_dim: int) -> dict:
        return {"w": (input_dim,)}

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> dict:
        return {"w": jnp.ones((input_dim,), dtype)}

    def apply(self, params, x, *, mask=None, training=False, rng=None):
        x = jnp.asarray(x)
        return x * params["w"].reshape((1,) * (x.ndim - 1) + (-1,)) * self.factor

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Scale:
        return cls(config.get("factor", 1.0), name=config.get("name"))

    def keras_config(self, context: Any) -> dict:
        return {"factor": self.factor}


jaxgru.register_layer(KERAS_NAME, Scale)
