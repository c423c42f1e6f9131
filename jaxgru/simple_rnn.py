"""Keras's ``SimpleRNN``: ``h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel)``.

The same functional design as ``GRU`` (a frozen layer of Keras's constructor arguments, params
a plain dict in Keras's layout, the pass over time a ``lax.scan``) with the same sequence
options: ``return_sequences``, ``return_state``, ``go_backwards`` (outputs in consumption
order, as Keras), ``stateful``, masks (a masked step keeps the state and repeats the previous
output, zeros with ``zero_output_for_mask``), ``initial_state``, and Keras's variational
``dropout`` and ``recurrent_dropout`` (one mask per call). Weights: ``kernel
(input_dim, units)``, ``recurrent_kernel (units, units)``, ``bias (units,)``.

>>> import jax, jax.numpy as jnp
>>> layer = SimpleRNN(4, return_sequences=True)
>>> params = layer.init(jax.random.key(0), input_dim=3)
>>> layer.apply(params, jnp.ones((2, 7, 3))).shape
(2, 7, 4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import activations, initializers, weight_rules
from jaxgru._checks import check_count, check_rate
from jaxgru.errors import ConfigError
from jaxgru.graph import GraphCallable
from jaxgru.gru import RecurrentInputs
from jaxgru.layer import KerasVars, register_layer

KERAS_FIELDS = (
    "units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer",
    "bias_initializer", "dropout", "recurrent_dropout", "return_sequences", "return_state",
    "go_backwards", "stateful", "unroll", "zero_output_for_mask",
)  # fmt: skip
_DEFAULT_INITIALIZERS = {
    "kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal",
    "bias_initializer": "zeros",
}  # fmt: skip


@dataclass(frozen=True)
class SimpleRNN(RecurrentInputs, GraphCallable):
    """A fully-connected recurrent layer with Keras 3's arguments and semantics."""

    units: int
    _: KW_ONLY
    activation: str | Callable | None = "tanh"
    use_bias: bool = True
    kernel_initializer: str | Callable = "glorot_uniform"
    recurrent_initializer: str | Callable = "orthogonal"
    bias_initializer: str | Callable = "zeros"
    kernel_regularizer: Any = None
    recurrent_regularizer: Any = None
    bias_regularizer: Any = None
    activity_regularizer: Any = None
    kernel_constraint: Any = None
    recurrent_constraint: Any = None
    bias_constraint: Any = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    unroll: bool = False
    zero_output_for_mask: bool = False
    name: str | None = None

    input_ndim: ClassVar[int] = 3
    keras_weight_options: ClassVar[dict[str, str]] = {
        "kernel": "kernel",
        "recurrent": "recurrent_kernel",
        "bias": "bias",
    }
    keras_activity_regularizer: ClassVar[bool] = True

    def __post_init__(self) -> None:
        weight_rules.resolve(self)
        check_count("SimpleRNN units", self.units)
        activations.get(self.activation)
        for field in _DEFAULT_INITIALIZERS:
            initializers.get(getattr(self, field))
        check_rate("SimpleRNN dropout", self.dropout)
        check_rate("SimpleRNN recurrent_dropout", self.recurrent_dropout)
        if not isinstance(self.unroll, bool):
            raise ConfigError(f"SimpleRNN unroll must be a bool, got {self.unroll!r}")

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """``kernel (input_dim, u)``, ``recurrent_kernel (u, u)``, ``bias (u,)``."""
        shapes = {"kernel": (input_dim, self.units), "recurrent_kernel": (self.units, self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> dict:
        check_count("input_dim", input_dim)
        shapes = self.param_shapes(input_dim)
        inits = {"kernel": self.kernel_initializer, "bias": self.bias_initializer,
                 "recurrent_kernel": self.recurrent_initializer}  # fmt: skip
        return initializers.init_params(key, shapes, inits, dtype)

    def output_shape(self, input_shape: tuple) -> tuple | list[tuple]:
        batch, time = input_shape[0], input_shape[1]
        shape = (batch, time, self.units) if self.return_sequences else (batch, self.units)
        return [shape, (batch, self.units)] if self.return_state else shape

    def compute_mask(self, x, mask):
        return mask if self.return_sequences else None

    def apply(
        self,
        params: dict,
        x: ArrayLike,
        initial_state: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        training: bool = False,
        rng: jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """``x (batch, time, features)`` -> ``(batch, time, units)`` with ``return_sequences``,
        else ``(batch, units)``; with ``return_state`` also the final state ``(batch, units)``.
        ``initial_state (batch, units)``, ``mask (batch, time)`` as for ``GRU.apply``."""
        x = self._prepare_input(params, x, 3, "x (batch, time, features)")
        batch, time, features = x.shape
        h0 = (jnp.zeros((batch, self.units), x.dtype) if initial_state is None
              else self._as_state(initial_state, batch, x.dtype, "initial_state"))  # fmt: skip
        mask_tm = None if mask is None else self._as_mask(mask, batch, time).T
        input_mask, rec_mask = self._dropout_masks(training, rng, batch, features, x.dtype)
        if input_mask is not None:
            x = x * input_mask[:, None, :]
        projected = x @ params["kernel"]  # every step's input product at once
        if self.use_bias:
            projected = projected + params["bias"][None, None, :]
        xs = jnp.swapaxes(projected, 0, 1)  # (time, batch, units)
        if self.go_backwards:
            xs = jnp.flip(xs, axis=0)
            mask_tm = None if mask_tm is None else jnp.flip(mask_tm, axis=0)
        act = activations.get(self.activation)

        def step(carry, inputs):
            h, previous = carry
            x_t, keep = inputs
            h_rec = h if rec_mask is None else h * rec_mask
            h_new = act(x_t + h_rec @ params["recurrent_kernel"])
            if keep is None:
                return (h_new, h_new), h_new
            keep = keep[:, None]
            held = jnp.zeros_like(h_new) if self.zero_output_for_mask else previous
            out = jnp.where(keep, h_new, held)
            return (jnp.where(keep, h_new, h), out), out

        (state, last), outputs = jax.lax.scan(step, (h0, jnp.zeros_like(h0)), (xs, mask_tm),
                                              unroll=time if self.unroll else 1)  # fmt: skip
        output = jnp.swapaxes(outputs, 0, 1) if self.return_sequences else last
        return (output, state) if self.return_state else output

    def init_state(self, batch_size: int, dtype: Any = jnp.float32) -> jax.Array | None:
        """A ``stateful`` layer's zero state ``(batch_size, units)``; ``None`` otherwise."""
        return jnp.zeros((batch_size, self.units), dtype) if self.stateful else None

    def apply_stateful(self, params, x, state, *, mask=None, training=False, rng=None):
        """``apply`` from ``state (batch, units)``: ``(output, final state)``."""
        carrying = dataclasses.replace(self, return_state=True)
        return carrying.apply(params, x, state, mask, training, rng)

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> SimpleRNN:
        kwargs = {key: config[key] for key in KERAS_FIELDS if key in config}
        kwargs["units"] = config["units"]
        if "activation" in kwargs:
            kwargs["activation"] = context.activation(kwargs["activation"])
        for key, default in _DEFAULT_INITIALIZERS.items():
            if key in kwargs:
                kwargs[key] = context.initializer(kwargs[key], default)
        kwargs["unroll"] = bool(kwargs.get("unroll", False))
        return cls(name=config.get("name"), **kwargs)

    def keras_config(self, context: Any) -> dict:
        config = {}
        for key in KERAS_FIELDS:
            value = getattr(self, key)
            if key == "activation" or key.endswith("_initializer"):
                value = context.exportable(value, key)
            config[key] = value
        config["activation"] = config["activation"] or "linear"
        return config

    def keras_weight_groups(self) -> tuple[KerasVars, ...]:
        """Keras 3 keeps the arrays in the cell: ``layers/<key>/cell/vars``."""
        return (KerasVars("cell/vars"),)


register_layer("SimpleRNN", SimpleRNN)
