"""Keras's ``TimeDistributed``: one layer applied to every time step.

``(batch, time, *inner)`` -> ``(batch, time, *layer output)``: the layer sees
``(batch, *inner)`` once per step, with the same weights, as Keras 3 calls it (step by step,
so a ``BatchNormalization`` in training takes each step's own batch statistics, and a dropout
draws a fresh mask per step). The params are the wrapped layer's own dict, as Keras's
``get_weights()`` lists the wrapped layer's weights; Keras 3 files keep them under
``layers/<name>/layer/``. The input's ``(batch, time)`` mask is handed to the layer step by step
and passed on unchanged, as Keras 3's.

>>> import jax, jax.numpy as jnp
>>> from jaxgru.layers import Dense
>>> layer = TimeDistributed(Dense(2, name="dense"))
>>> params = layer.init(jax.random.key(0), (None, 7, 3))
>>> layer.apply(params, jnp.ones((4, 7, 3))).shape
(4, 7, 2)
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import layer as protocol
from jaxgru import weight_rules
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import GraphCallable
from jaxgru.layer import KerasVars, Layer, register_layer


@dataclass(frozen=True)
class TimeDistributed(GraphCallable):
    """``layer`` applied to each step of a ``(batch, time, ...)`` input."""

    layer: Any
    _: KW_ONLY
    name: str | None = None

    params_from_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.layer, Layer):
            raise ConfigError(
                f"TimeDistributed wraps a jaxgru layer, got {type(self.layer).__name__}"
            )
        if getattr(self.layer, "input_dtype", "float32") != "float32":
            raise ConfigError("TimeDistributed cannot wrap a layer that reads ids (Embedding)")
        weight_rules.check_no_inner_activity(self, self.layer)

    def sublayers(self) -> tuple:
        """The wrapped layer, whose params are this layer's (``weight_rules``)."""
        return (((), self.layer),)

    @property
    def non_trainable(self) -> tuple[str, ...]:
        return protocol.non_trainable(self.layer)

    @staticmethod
    def wrapped_input_shape(input_shape: tuple) -> tuple:
        """The shape the wrapped layer sees: ``(batch, *input_shape[2:])``."""
        if len(input_shape) < 3:
            raise DataError(
                f"TimeDistributed needs an input of rank 3 or more, (batch, time, ...), got "
                f"shape {tuple(input_shape)}"
            )
        return (input_shape[0], *input_shape[2:])

    def param_shapes(self, input_shape: tuple) -> dict:
        """The wrapped layer's shapes for one step's input."""
        return protocol.param_shapes(self.layer, self.wrapped_input_shape(input_shape))

    def init(self, key: jax.Array, input_shape: tuple, dtype: Any = jnp.float32) -> dict:
        return protocol.init(self.layer, key, self.wrapped_input_shape(input_shape), dtype)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, time, ...)`` -> ``(batch, time, ...)`` of the layer's output."""
        x = jnp.asarray(x)
        self.wrapped_input_shape(x.shape)
        steps = x.shape[1]
        keys = None if rng is None else jax.random.split(rng, steps)
        step_mask = None if mask is None else jnp.moveaxis(jnp.asarray(mask), 1, 0)

        def step(x_t, mask_t, key):
            return self.layer.apply(params, x_t, mask=mask_t, training=training, rng=key)

        out = jax.vmap(step, in_axes=(1, 0, 0), out_axes=1)(x, step_mask, keys)
        return out

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        inner = self.layer.output_shape(self.wrapped_input_shape(input_shape))
        return (inner[0], input_shape[1], *inner[1:])

    def keras_weight_groups(self) -> tuple[KerasVars, ...]:
        """The wrapped layer's groups under ``layer/``."""
        return tuple(KerasVars(f"layer/{g.path}", g.params_at)
                     for g in protocol.keras_weight_groups(self.layer))  # fmt: skip

    def from_keras_arrays(self, arrays: list, legacy: bool = False) -> list:
        return protocol.from_keras_arrays(self.layer, arrays, legacy)

    def keras_config(self, context: Any) -> dict:
        return {"layer": self.layer}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> TimeDistributed:
        return cls(context.layer(config["layer"]), name=config.get("name"))


register_layer("TimeDistributed", TimeDistributed)
