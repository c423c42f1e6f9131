"""The layers beside ``GRU``: Dense, Embedding, Masking, Dropout, Bidirectional.

Every layer here follows the layer protocol of ``jaxgru.layer`` (duck-typed, no base class):
a frozen dataclass of hyperparameters with ``param_shapes``, ``init``, ``apply``,
``compute_mask``, ``output_shape`` and its Keras hooks, registered under its Keras class name.

Parameter names and shapes are Keras's: ``Dense`` has ``kernel (input_dim, units)`` and
``bias (units,)``; ``Embedding`` has ``embeddings (input_dim, output_dim)``;
``Bidirectional`` has ``forward_layer`` and ``backward_layer``, each a GRU's params.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import activations, initializers, recurrence, regularizers, weight_rules
from jaxgru._checks import check_count, check_param_shapes, check_rate
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import GraphCallable
from jaxgru.gru import GRU
from jaxgru.layer import KerasVars, Weightless, keras_weight_groups, register_layer


@dataclass(frozen=True)
class Dense(GraphCallable):
    """``y = activation(x @ kernel + bias)`` over the last axis; passes the mask on."""

    units: int
    _: KW_ONLY
    activation: str | Callable | None = None
    use_bias: bool = True
    kernel_initializer: str | Callable = "glorot_uniform"
    bias_initializer: str | Callable = "zeros"
    kernel_regularizer: Any = None
    bias_regularizer: Any = None
    activity_regularizer: Any = None
    kernel_constraint: Any = None
    bias_constraint: Any = None
    name: str | None = None

    keras_weight_options: ClassVar[dict[str, str]] = {"kernel": "kernel", "bias": "bias"}
    keras_activity_regularizer: ClassVar[bool] = True

    def __post_init__(self) -> None:
        weight_rules.resolve(self)
        check_count("Dense units", self.units)
        activations.get(self.activation)

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """``{"kernel": (input_dim, units), "bias": (units,)}``."""
        shapes = {"kernel": (input_dim, self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> dict:
        inits = {"kernel": self.kernel_initializer, "bias": self.bias_initializer}
        return initializers.init_params(key, self.param_shapes(input_dim), inits, dtype)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (..., input_dim)`` -> ``(..., units)``."""
        x = jnp.asarray(x)
        check_param_shapes(f"Dense {self.name!r}", self.param_shapes(x.shape[-1]), params)
        y = x.astype(params["kernel"].dtype) @ params["kernel"]
        if self.use_bias:
            y = y + params["bias"].reshape((1,) * (y.ndim - 1) + (-1,))
        return activations.get(self.activation)(y)

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units)

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Dense:
        activation = context.activation(config.get("activation"))
        inits = {key: context.initializer(config.get(key), default)
                 for key, default in (("kernel_initializer", "glorot_uniform"),
                                      ("bias_initializer", "zeros"))}  # fmt: skip
        return cls(config["units"], activation=activation, use_bias=config.get("use_bias", True),
                   name=config.get("name"), **inits)  # fmt: skip

    def keras_config(self, context: Any) -> dict:
        activation = context.exportable(self.activation, "activation") or "linear"
        return {"units": self.units, "activation": activation, "use_bias": self.use_bias,
                "kernel_initializer": context.exportable(self.kernel_initializer,
                                                         "kernel_initializer"),
                "bias_initializer": context.exportable(self.bias_initializer,
                                                       "bias_initializer")}  # fmt: skip


@dataclass(frozen=True)
class Embedding(GraphCallable):
    """Integer ids ``(batch, time)`` -> vectors ``(batch, time, output_dim)``.

    With ``mask_zero`` the id 0 is padding: the output mask is ``ids != 0``.
    """

    input_dim: int
    output_dim: int
    _: KW_ONLY
    mask_zero: bool = False
    embeddings_initializer: str | Callable = "uniform"
    embeddings_regularizer: Any = None
    activity_regularizer: Any = None
    embeddings_constraint: Any = None
    name: str | None = None

    input_dtype: ClassVar[str] = "int32"
    keras_weight_options: ClassVar[dict[str, str]] = {"embeddings": "embeddings"}
    keras_activity_regularizer: ClassVar[bool] = True

    def __post_init__(self) -> None:
        weight_rules.resolve(self)
        check_count("Embedding input_dim", self.input_dim)
        check_count("Embedding output_dim", self.output_dim)

    def param_shapes(self, input_dim: int | None = None) -> dict[str, tuple[int, ...]]:
        """``{"embeddings": (input_dim, output_dim)}`` (the vocabulary, not the input's axis)."""
        return {"embeddings": (self.input_dim, self.output_dim)}

    def init(self, key: jax.Array, input_dim: int | None = None, dtype: Any = jnp.float32):
        inits = {"embeddings": self.embeddings_initializer}
        return initializers.init_params(key, self.param_shapes(), inits, dtype)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, time)`` int -> ``(batch, time, output_dim)``."""
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            if jnp.issubdtype(x.dtype, jnp.floating):
                x = x.astype(jnp.int32)  # Keras casts float ids to int too
            else:
                raise DataError(f"Embedding expects integer ids, got dtype {x.dtype}")
        check_param_shapes(f"Embedding {self.name!r}", self.param_shapes(), params)
        return jnp.take(params["embeddings"], x, axis=0)

    def compute_mask(self, x, mask):
        return (jnp.asarray(x) != 0) if self.mask_zero else mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape, self.output_dim)

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Embedding:
        init = context.initializer(config.get("embeddings_initializer"), "uniform")
        return cls(config["input_dim"], config["output_dim"],
                   mask_zero=config.get("mask_zero", False), embeddings_initializer=init,
                   name=config.get("name"))  # fmt: skip

    def keras_config(self, context: Any) -> dict:
        init = context.exportable(self.embeddings_initializer, "embeddings_initializer")
        return {"input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero, "embeddings_initializer": init}  # fmt: skip


@dataclass(frozen=True)
class Masking(Weightless, GraphCallable):
    """Masks every time step whose features all equal ``mask_value``, and zeroes it."""

    _: KW_ONLY
    mask_value: float = 0.0
    name: str | None = None

    input_ndim: ClassVar[int] = 3

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, time, features)`` -> same shape, masked steps set to zero."""
        x = jnp.asarray(x)
        keep = self.compute_mask(x, mask)
        return x * keep[..., None].astype(x.dtype)

    def compute_mask(self, x, mask):
        return jnp.any(jnp.asarray(x) != self.mask_value, axis=-1)

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Masking:
        return cls(mask_value=config.get("mask_value", 0.0), name=config.get("name"))

    def keras_config(self, context: Any) -> dict:
        return {"mask_value": self.mask_value}


@dataclass(frozen=True)
class ActivityRegularization(Weightless, GraphCallable):
    """The identity, adding ``l1 * sum(|x|) + l2 * sum(x**2)`` (over the batch size) to the
    training loss, as Keras's layer of that name; masks pass through."""

    _: KW_ONLY
    l1: float = 0.0
    l2: float = 0.0
    name: str | None = None

    hands_on_its_input: ClassVar[bool] = True  # Keras returns the input tensor itself

    def __post_init__(self) -> None:
        self.activity_regularizer  # noqa: B018  (checks l1 and l2)

    @property
    def activity_regularizer(self) -> regularizers.L1L2:
        return regularizers.L1L2(self.l1, self.l2)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        return jnp.asarray(x)

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> ActivityRegularization:
        return cls(l1=config.get("l1", 0.0), l2=config.get("l2", 0.0), name=config.get("name"))

    def keras_config(self, context: Any) -> dict:
        return {"l1": self.l1, "l2": self.l2}


def inverted_dropout(rng: jax.Array, x: jax.Array, rate: float, shape: tuple) -> jax.Array:
    """``x`` kept with probability ``1 - rate`` per element of ``shape`` (broadcast over
    ``x``) and scaled by ``1 / (1 - rate)``, zero elsewhere."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


@dataclass(frozen=True)
class Noise(Weightless, GraphCallable):
    """What the noise layers (and ``Dropout``) share: no weights, the mask passed on, the same
    shape, and noise only in training, drawn by ``noise(rng, x)``."""

    _: KW_ONLY
    name: str | None = None

    amount: ClassVar[str] = "rate"  # the field that says how much noise
    # Keras returns the very input tensor when there is no noise (inference, or none asked
    # for), so the mask riding on it is shared: a graph follows (jaxgru.graph).
    hands_on_its_input: ClassVar[bool] = True

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def noise(self, rng: jax.Array, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, ...)`` -> the same shape; noisy only with ``training``."""
        x = jnp.asarray(x)
        if not training or getattr(self, self.amount) == 0:
            return x
        if rng is None:
            raise ConfigError(
                f"{type(self).__name__}({self.amount}={getattr(self, self.amount)}) needs "
                "rng=jax.random.key(...) when training=True"
            )
        return self.noise(rng, x)

    def keras_config(self, context: Any) -> dict:
        return {self.amount: getattr(self, self.amount), "seed": None}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any):
        if config.get("noise_shape") is not None:
            raise context.unsupported(" with a noise_shape")
        return cls(config[cls.amount], name=config.get("name"))


@dataclass(frozen=True)
class Dropout(Noise):
    """Inverted dropout in training (``rng`` required), the identity at inference."""

    rate: float

    def __post_init__(self) -> None:
        check_rate("Dropout rate", self.rate)

    def noise(self, rng: jax.Array, x: jax.Array) -> jax.Array:
        """Each element kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``."""
        return inverted_dropout(rng, x, self.rate, x.shape)

    def keras_config(self, context: Any) -> dict:
        return {"rate": self.rate}


MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@dataclass(frozen=True)
class Bidirectional(GraphCallable):
    """A GRU run forwards and backwards over the sequence, outputs merged.

    As Keras: the backward copy flips ``go_backwards``; with ``return_sequences`` its outputs
    are flipped back to time order and both copies output zeros at masked steps.
    ``merge_mode=None`` returns the pair ``(forward, backward)``. ``backward_layer``, as in
    Keras, is a GRU of its own for the backward direction (any settings, ``go_backwards``
    opposite to ``layer``'s, the same ``return_sequences`` and ``stateful``); by default it
    mirrors ``layer``.
    """

    layer: GRU
    _: KW_ONLY
    merge_mode: str | None = "concat"
    backward_layer: GRU | None = None
    name: str | None = None

    input_ndim: ClassVar[int] = 3

    def __post_init__(self) -> None:
        if not isinstance(self.layer, GRU):
            raise ConfigError(f"Bidirectional wraps a jaxgru.GRU, got {type(self.layer).__name__}")
        for inner in (self.layer, self.backward_layer):
            weight_rules.check_no_inner_activity(self, inner)
        if self.merge_mode not in MERGE_MODES:
            raise ConfigError(
                f"Bidirectional merge_mode must be one of {MERGE_MODES}, got {self.merge_mode!r}"
            )
        backward = self.backward_layer
        if backward is None:
            return
        if not isinstance(backward, GRU):
            raise ConfigError(
                f"Bidirectional backward_layer must be a jaxgru.GRU, got {type(backward).__name__}"
            )
        if backward.go_backwards == self.layer.go_backwards:
            raise ConfigError(
                "Bidirectional's backward_layer must have the opposite go_backwards of its "
                f"layer (both are {backward.go_backwards}), as Keras requires"
            )
        for field in ("return_sequences", "stateful", "return_state"):
            if getattr(backward, field) != getattr(self.layer, field):
                raise ConfigError(
                    f"Bidirectional's layer and backward_layer must have the same {field}, got "
                    f"{getattr(self.layer, field)} and {getattr(backward, field)}"
                )

    @property
    def forward_layer(self) -> GRU:
        """The forward direction: ``layer``, named ``forward_<name>`` as Keras names it."""
        inner = self.layer.name or "gru"
        return dataclasses.replace(
            self.layer,
            name=inner if inner.startswith("forward_") else f"forward_{inner}",
            zero_output_for_mask=self.layer.return_sequences,
        )

    @property
    def backward(self) -> GRU:
        """The backward direction: ``backward_layer``, or the mirror of ``layer``."""
        given = self.backward_layer or dataclasses.replace(
            self.layer, go_backwards=not self.layer.go_backwards, name=None
        )
        inner = (self.layer.name or "gru").removeprefix("forward_")
        return dataclasses.replace(given, name=given.name or f"backward_{inner}",
                                   zero_output_for_mask=self.layer.return_sequences)  # fmt: skip

    @property
    def mirrored(self) -> bool:
        """Whether the backward direction is ``layer`` with ``go_backwards`` flipped."""
        if self.backward_layer is None:
            return True
        mirror = dataclasses.replace(self.layer, go_backwards=not self.layer.go_backwards,
                                     name=self.backward_layer.name)  # fmt: skip
        return mirror == self.backward_layer

    @property
    def directions(self) -> tuple[GRU, GRU]:
        """``(forward GRU, backward GRU)``, named as Keras names them."""
        return self.forward_layer, self.backward

    def param_shapes(self, input_dim: int) -> dict[str, dict[str, tuple[int, ...]]]:
        """``{"forward_layer": {...}, "backward_layer": {...}}``, each a GRU's shapes."""
        forward, backward = self.directions
        return {
            "forward_layer": forward.param_shapes(input_dim),
            "backward_layer": backward.param_shapes(input_dim),
        }

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> dict:
        k_fwd, k_bwd = jax.random.split(key)
        forward, backward = self.directions
        return {
            "forward_layer": forward.init(k_fwd, input_dim, dtype),
            "backward_layer": backward.init(k_bwd, input_dim, dtype),
        }

    def apply(
        self, params: dict, x: ArrayLike, mask=None, training=False, rng=None, initial_state=None
    ):
        """``x (batch, time, features)`` -> merged outputs, e.g. ``(batch, [time,] 2 * units)``.

        ``initial_state``: ``[h_forward, h_backward]``, each ``(batch, units)``, as Keras
        splits it. With ``return_state`` (on the wrapped GRU) the result is Keras's
        ``(output, h_forward, h_backward)`` (``(y_forward, y_backward, h_forward,
        h_backward)`` with ``merge_mode=None``).
        """
        k_fwd, k_bwd = (None, None) if rng is None else jax.random.split(rng)
        h0 = self._split_state(initial_state)
        pair = self.directions
        pair_params = (params["forward_layer"], params["backward_layer"])
        # Both directions in one loop (recurrence.scan_pair) where they run the same cell with
        # the same options, the options say so, and the hand-written VJP serves
        # (ExecutionOptions.fused_bidirectional_max_units).
        spec, options = self.layer.cell_spec, self.layer.options
        same = pair[1].cell_spec == spec and pair[1].options == options
        if (
            same
            and options.fuses_bidirectional(spec.units)
            and (recurrence.uses_hand_written_backward(spec, options))
        ):
            inputs = [
                layer.scan_inputs(p, x, h, mask=mask, training=training, rng=key)
                for layer, p, h, key in zip(pair, pair_params, h0, (k_fwd, k_bwd))
            ]
            results = recurrence.scan_pair(spec, options, pair_params, tuple(inputs),
                                           pair[0].zero_output_for_mask)  # fmt: skip
            y_fwd, y_bwd = (layer.output(r) for layer, r in zip(pair, results))
        else:
            y_fwd, y_bwd = (
                layer.apply(p, x, h, mask=mask, training=training, rng=key)
                for layer, p, h, key in zip(pair, pair_params, h0, (k_fwd, k_bwd))
            )
        if not self.layer.return_state:
            return self._merge(y_fwd, y_bwd)
        (y_fwd, h_fwd), (y_bwd, h_bwd) = y_fwd, y_bwd
        merged = self._merge(y_fwd, y_bwd)
        return (*merged, h_fwd, h_bwd) if self.merge_mode is None else (merged, h_fwd, h_bwd)

    @property
    def return_state(self) -> bool:
        """Keras's ``Bidirectional.return_state``: the wrapped GRU's."""
        return self.layer.return_state

    def _split_state(self, initial_state) -> tuple:
        if initial_state is None:
            return None, None
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
            raise DataError(
                f"Bidirectional {self.name!r} initial_state is [h_forward, h_backward], each "
                "(batch, units), as Keras splits it"
            )
        return tuple(initial_state)

    def _merge(self, y_fwd: jax.Array, y_bwd: jax.Array):
        """The two directions' outputs merged as Keras merges them (backward flipped back to
        time order when they are sequences)."""
        if self.layer.return_sequences:
            y_bwd = jnp.flip(y_bwd, axis=1)
        if self.merge_mode == "concat":
            return jnp.concatenate([y_fwd, y_bwd], axis=-1)
        if self.merge_mode == "sum":
            return y_fwd + y_bwd
        if self.merge_mode == "mul":
            return y_fwd * y_bwd
        if self.merge_mode == "ave":
            return (y_fwd + y_bwd) / 2
        return y_fwd, y_bwd

    def compute_mask(self, x, mask):
        return self.layer.compute_mask(x, mask)

    def output_shape(self, input_shape: tuple) -> tuple | list[tuple]:
        """The merged output's shape; a list ``[y_forward, y_backward]`` with
        ``merge_mode=None``, followed by both states' ``(batch, units)`` with ``return_state``."""
        forward = self.directions[0]
        shape = dataclasses.replace(forward, return_state=False).output_shape(input_shape)
        merged = [shape, shape] if self.merge_mode is None else [shape]
        if self.merge_mode == "concat":
            merged = [(*shape[:-1], 2 * shape[-1])]
        states = [(input_shape[0], gru.units) for gru in self.directions] if self.return_state \
            else []  # fmt: skip
        outputs = merged + states
        return outputs[0] if len(outputs) == 1 else outputs

    # Truncated BPTT cuts sequences into windows; a backward direction would read each window's
    # future and carry it into the next, so train.fit refuses tbptt_steps with this layer.
    reads_future: ClassVar[bool] = True

    def init_state(self, batch_size: int, dtype: Any = jnp.float32) -> dict | None:
        """A ``stateful`` Bidirectional carries both directions' ``(batch, units)`` states
        from batch to batch, as Keras's: ``{"forward_layer": h, "backward_layer": h}``."""
        if not self.layer.stateful:
            return None
        forward, backward = self.directions
        return {"forward_layer": forward.init_state(batch_size, dtype),
                "backward_layer": backward.init_state(batch_size, dtype)}  # fmt: skip

    def apply_stateful(
        self, params: dict, x: ArrayLike, state: dict, *, mask=None, training=False, rng=None
    ) -> tuple[Any, dict]:
        """``apply`` from ``state`` (``init_state``'s form): ``(merged output, new state)``."""
        keys = (None, None) if rng is None else jax.random.split(rng)
        outputs, new_state = [], {}
        for side, gru, key in zip(("forward_layer", "backward_layer"), self.directions, keys):
            y, new_state[side] = gru.apply_stateful(params[side], x, state[side], mask=mask,
                                                    training=training, rng=key)  # fmt: skip
            outputs.append(y)
        return self._merge(*outputs), new_state

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Bidirectional:
        """Keras writes both directions (``layer`` and ``backward_layer``); a backward layer
        that is the mirror of ``layer`` is read as the default."""
        entries = [config["layer"], config.get("backward_layer")]
        for entry in filter(None, entries):
            if entry.get("class_name") not in ("GRU", "CuDNNGRU", "RNN"):
                raise context.unsupported("", f"Bidirectional({entry.get('class_name')})")
        forward, backward = (None if e is None else context.layer(e) for e in entries)
        layer = cls(forward, merge_mode=config.get("merge_mode", "concat"),
                    backward_layer=backward, name=config.get("name"))  # fmt: skip
        return dataclasses.replace(layer, backward_layer=None) if layer.mirrored else layer

    def keras_config(self, context: Any) -> dict:
        forward, backward = self.directions
        return {"merge_mode": self.merge_mode, "layer": forward, "backward_layer": backward}

    def sublayers(self) -> tuple:
        """Each direction's GRU with where its params sit (``weight_rules``)."""
        return tuple(((side,), gru) for side, gru in zip(("forward_layer", "backward_layer"),
                                                          self.directions))  # fmt: skip

    def keras_weight_groups(self) -> tuple[KerasVars, ...]:
        """Each direction's groups under ``forward_layer/`` and ``backward_layer/``."""
        return tuple(
            KerasVars(f"{side}/{group.path}", (side, *group.params_at))
            for side, gru in zip(("forward_layer", "backward_layer"), self.directions)
            for group in keras_weight_groups(gru)
        )

    def from_keras_arrays(self, arrays: list, legacy: bool = False) -> list:
        """Each direction's arrays converted as its GRU converts them."""
        forward, backward = self.directions
        n = len(forward.param_shapes(1))
        return [*forward.from_keras_arrays(arrays[:n], legacy),
                *backward.from_keras_arrays(arrays[n:], legacy)]  # fmt: skip


for _layer_class in (Dense, Embedding, Masking, ActivityRegularization, Dropout, Bidirectional):
    register_layer(_layer_class.__name__, _layer_class)
