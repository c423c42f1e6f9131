"""Keras's convolutions in front of GRUs: ``Conv1D``, ``Conv2D`` and ``SeparableConv1D``.

Channels last, as Keras's default: ``Conv1D`` maps ``(batch, steps, channels)`` to
``(batch, new_steps, filters)``, ``Conv2D`` maps ``(batch, rows, cols, channels)`` to
``(batch, new_rows, new_cols, filters)``. Weights are Keras's: ``kernel
(*kernel_size, channels // groups, filters)`` and ``bias (filters,)``; a ``SeparableConv1D``
has ``depthwise_kernel (kernel_size, channels, depth_multiplier)``, ``pointwise_kernel
(1, channels * depth_multiplier, filters)`` and ``bias``.

Padding is Keras's (TensorFlow's): ``"valid"`` none; ``"same"`` ``ceil(n / stride)`` outputs,
the odd padding cell on the right; ``"causal"`` (1-D only) ``(kernel_size - 1) * dilation`` zeros
on the left, so step ``t`` sees no later step. A convolution drops its input's mask, as Keras 3's
(tf_keras refuses a mask there).

>>> import jax.numpy as jnp
>>> conv = Conv1D(1, 2, padding="causal", use_bias=False)
>>> conv.apply({"kernel": jnp.ones((2, 1, 1))}, jnp.array([[[1.0], [2.0], [3.0]]]))[0, :, 0]
Array([1., 3., 5.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import activations, initializers, weight_rules
from jaxgru._checks import check_count, check_param_shapes
from jaxgru.errors import ConfigError
from jaxgru.graph import GraphCallable
from jaxgru.layer import register_layer

_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _tuple(value: Any, rank: int, what: str) -> tuple[int, ...]:
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank:
        raise ConfigError(f"{what} must be an int or {rank} ints, got {value!r}")
    for v in values:
        check_count(what, v)
    return values


def output_length(length: int | None, size: int, stride: int, dilation: int, padding: str):
    """Keras's output length along one axis (``None`` stays ``None``)."""
    if length is None:
        return None
    if padding in ("same", "causal"):  # causal: valid on the input padded by span - 1
        return math.ceil(length / stride)
    span = (size - 1) * dilation + 1
    return max(0, (length - span) // stride + 1)


def convolve(x, kernel, strides, padding: str, dilation, groups: int = 1) -> jax.Array:
    """``x (batch, *spatial, channels)`` convolved with ``kernel (*window, in, out)`` (Keras's
    layout) under Keras's padding; ``groups`` splits the channels as Keras's ``groups``."""
    rank = kernel.ndim - 2
    if padding == "causal":
        left = (kernel.shape[0] - 1) * dilation[0]
        x = jnp.pad(x, ((0, 0), (left, 0), (0, 0)))
        padding = "valid"
    return jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=strides, padding=padding.upper(),
        rhs_dilation=dilation, dimension_numbers=_DIMENSIONS[rank],
        feature_group_count=groups,
    )  # fmt: skip


class _Conv(GraphCallable):
    """What the convolutions share: Keras's arguments, shapes, bias, activation and config."""

    rank: ClassVar[int]
    paddings: ClassVar[tuple[str, ...]] = ("valid", "same")

    filters: int
    kernel_size: Any
    strides: Any
    padding: str
    dilation_rate: Any
    activation: Any
    use_bias: bool
    bias_initializer: Any
    name: str | None

    def _check(self) -> None:
        kind = type(self).__name__
        check_count(f"{kind} filters", self.filters)
        for field in ("kernel_size", "strides", "dilation_rate"):
            object.__setattr__(self, field, _tuple(getattr(self, field), self.rank,
                                                   f"{kind} {field}"))  # fmt: skip
        padding = str(self.padding).lower()
        if padding not in self.paddings:
            raise ConfigError(
                f"{kind} padding must be one of {self.paddings}, got {self.padding!r}"
            )
        object.__setattr__(self, "padding", padding)
        activations.get(self.activation)

    @property
    def input_ndim(self) -> int:
        return self.rank + 2

    def compute_mask(self, x, mask):
        return None

    def output_shape(self, input_shape: tuple) -> tuple:
        spatial = input_shape[1:-1]
        lengths = [output_length(n, k, s, d, self.padding) for n, k, s, d in
                   zip(spatial, self.kernel_size, self.strides, self.dilation_rate)]  # fmt: skip
        return (input_shape[0], *lengths, self.filters)

    def _finish(self, params: dict, y: jax.Array) -> jax.Array:
        if self.use_bias:
            y = y + params["bias"].astype(y.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
        return activations.get(self.activation)(y)

    def _config(self, context: Any) -> dict:
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": "channels_last",
            "dilation_rate": list(self.dilation_rate),
            "activation": context.exportable(self.activation, "activation") or "linear",
            "use_bias": self.use_bias,
            "bias_initializer": context.exportable(self.bias_initializer, "bias_initializer"),
        }

    @staticmethod
    def _fields(config: dict, context: Any) -> dict:
        if config.get("data_format", "channels_last") != "channels_last":
            raise context.unsupported(" with data_format='channels_first'")
        return {
            "filters": config["filters"],
            "kernel_size": config["kernel_size"],
            "strides": config.get("strides", 1),
            "padding": config.get("padding", "valid"),
            "dilation_rate": config.get("dilation_rate", 1),
            "activation": context.activation(config.get("activation")),
            "use_bias": bool(config.get("use_bias", True)),
            "bias_initializer": context.initializer(config.get("bias_initializer"), "zeros"),
            "name": config.get("name"),
        }


@dataclass(frozen=True)
class _Convolution(_Conv):
    filters: int
    kernel_size: int | tuple[int, ...]
    _: KW_ONLY
    strides: int | tuple[int, ...] = 1
    padding: str = "valid"
    dilation_rate: int | tuple[int, ...] = 1
    groups: int = 1
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
        self._check()
        check_count(f"{type(self).__name__} groups", self.groups)
        if self.filters % self.groups:
            raise ConfigError(
                f"{type(self).__name__} filters ({self.filters}) must be a multiple of groups "
                f"({self.groups}), as Keras requires"
            )

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """``kernel (*kernel_size, input_dim // groups, filters)``, ``bias (filters,)``."""
        if input_dim > 0 and input_dim % self.groups:
            raise ConfigError(
                f"{type(self).__name__} {self.name!r}: the input's {input_dim} channels must "
                f"be a multiple of groups ({self.groups}), as Keras requires"
            )
        shapes = {"kernel": (*self.kernel_size, input_dim // self.groups, self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> dict:
        inits = {"kernel": self.kernel_initializer, "bias": self.bias_initializer}
        return initializers.init_params(key, self.param_shapes(input_dim), inits, dtype)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, *spatial, channels)`` -> ``(batch, *new_spatial, filters)``."""
        x = jnp.asarray(x)
        shapes = self.param_shapes(x.shape[-1])
        check_param_shapes(f"{type(self).__name__} {self.name!r}", shapes, params)
        y = convolve(x, params["kernel"], self.strides, self.padding, self.dilation_rate,
                     self.groups)  # fmt: skip
        return self._finish(params, y)

    def keras_config(self, context: Any) -> dict:
        return {**self._config(context), "groups": self.groups,
                "kernel_initializer": context.exportable(self.kernel_initializer,
                                                         "kernel_initializer")}  # fmt: skip

    @classmethod
    def from_keras_config(cls, config: dict, context: Any):
        return cls(**cls._fields(config, context), groups=config.get("groups", 1),
                   kernel_initializer=context.initializer(config.get("kernel_initializer"),
                                                          "glorot_uniform"))  # fmt: skip


@dataclass(frozen=True)
class Conv1D(_Convolution):
    """A 1-D convolution over time: ``(batch, steps, channels)`` -> ``(batch, new_steps,
    filters)``; ``padding`` is ``"valid"``, ``"same"`` or ``"causal"``."""

    rank: ClassVar[int] = 1
    paddings: ClassVar[tuple[str, ...]] = ("valid", "same", "causal")


@dataclass(frozen=True)
class Conv2D(_Convolution):
    """A 2-D convolution, as on spectrograms: ``(batch, rows, cols, channels)`` ->
    ``(batch, new_rows, new_cols, filters)``; ``padding`` is ``"valid"`` or ``"same"``."""

    rank: ClassVar[int] = 2


@dataclass(frozen=True)
class SeparableConv1D(_Conv):
    """A depthwise 1-D convolution (``depth_multiplier`` filters per channel) followed by a
    pointwise one (``filters`` outputs), as Keras's ``SeparableConv1D``."""

    filters: int
    kernel_size: int | tuple[int]
    _: KW_ONLY
    strides: int | tuple[int] = 1
    padding: str = "valid"
    dilation_rate: int | tuple[int] = 1
    depth_multiplier: int = 1
    activation: str | Callable | None = None
    use_bias: bool = True
    depthwise_initializer: str | Callable = "glorot_uniform"
    pointwise_initializer: str | Callable = "glorot_uniform"
    bias_initializer: str | Callable = "zeros"
    depthwise_regularizer: Any = None
    pointwise_regularizer: Any = None
    bias_regularizer: Any = None
    activity_regularizer: Any = None
    depthwise_constraint: Any = None
    pointwise_constraint: Any = None
    bias_constraint: Any = None
    name: str | None = None

    rank: ClassVar[int] = 1
    keras_weight_options: ClassVar[dict[str, str]] = {
        "depthwise": "depthwise_kernel",
        "pointwise": "pointwise_kernel",
        "bias": "bias",
    }
    keras_activity_regularizer: ClassVar[bool] = True

    def __post_init__(self) -> None:
        weight_rules.resolve(self)
        self._check()
        check_count("SeparableConv1D depth_multiplier", self.depth_multiplier)

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """``depthwise_kernel (kernel_size, input_dim, depth_multiplier)``, ``pointwise_kernel
        (1, input_dim * depth_multiplier, filters)``, ``bias (filters,)``."""
        shapes = {
            "depthwise_kernel": (*self.kernel_size, input_dim, self.depth_multiplier),
            "pointwise_kernel": (1, input_dim * self.depth_multiplier, self.filters),
        }
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> dict:
        inits = {
            "depthwise_kernel": self.depthwise_initializer,
            "pointwise_kernel": self.pointwise_initializer,
            "bias": self.bias_initializer,
        }
        shapes = self.param_shapes(input_dim)
        return initializers.init_params(key, shapes, inits, dtype)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, steps, channels)`` -> ``(batch, new_steps, filters)``."""
        x = jnp.asarray(x)
        channels = x.shape[-1]
        check_param_shapes(f"SeparableConv1D {self.name!r}", self.param_shapes(channels), params)
        depthwise = params["depthwise_kernel"].reshape(
            *self.kernel_size, 1, channels * self.depth_multiplier
        )  # channel-major, as TF
        y = convolve(x, depthwise, self.strides, self.padding, self.dilation_rate, channels)
        y = convolve(y, params["pointwise_kernel"], (1,), "valid", (1,))
        return self._finish(params, y)

    def keras_config(self, context: Any) -> dict:
        return {
            **self._config(context),
            "depth_multiplier": self.depth_multiplier,
            "depthwise_initializer": context.exportable(self.depthwise_initializer,
                                                        "depthwise_initializer"),
            "pointwise_initializer": context.exportable(self.pointwise_initializer,
                                                        "pointwise_initializer"),
        }  # fmt: skip

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> SeparableConv1D:
        fields = cls._fields(config, context)
        return cls(**fields, depth_multiplier=config.get("depth_multiplier", 1),
                   **{key: context.initializer(config.get(key), "glorot_uniform")
                      for key in ("depthwise_initializer", "pointwise_initializer")})  # fmt: skip


for _layer_class in (Conv1D, Conv2D, SeparableConv1D):
    register_layer(_layer_class.__name__, _layer_class)
