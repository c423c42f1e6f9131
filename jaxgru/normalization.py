"""Keras's normalisation layers: ``BatchNormalization`` and ``LayerNormalization``.

``BatchNormalization`` normalises each feature along ``axis`` (the last, by default) with its
moving statistics at inference and with the batch's statistics in training (masked steps
left out, as Keras 3). Its params are Keras's weights in Keras's order: ``gamma``, ``beta``,
``moving_mean``, ``moving_variance``, each ``(features,)``; the moving statistics are
non-trainable (``non_trainable``): no gradient trains them, and ``jaxgru.fit`` moves them
after each training call as Keras does (``moving_updates``). ``LayerNormalization``
normalises each position over ``axis``.

Both compute ``x * inv + (beta - mean * inv)`` with ``inv = gamma / sqrt(variance + epsilon)``,
the order TensorFlow's ``tf.nn.batch_normalization`` and Keras's ``ops.layer_normalization``
use, and pass their input's mask on.

>>> import jax.numpy as jnp
>>> layer = BatchNormalization(epsilon=0.0)
>>> params = {"gamma": jnp.ones(1), "beta": jnp.zeros(1),
...           "moving_mean": jnp.array([2.0]), "moving_variance": jnp.array([4.0])}
>>> layer.apply(params, jnp.array([[[4.0]]]))
Array([[[1.]]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import initializers, weight_rules
from jaxgru._checks import check_param_shapes
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import GraphCallable
from jaxgru.layer import register_layer

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), added to the masked moments' denominators


def _positive_axes(axes: tuple[int, ...], ndim: int, owner: str) -> tuple[int, ...]:
    found = []
    for axis in axes:
        if not -ndim <= axis < ndim or axis % ndim == 0:
            raise DataError(
                f"{owner}: axis {axis} is not a feature axis of a rank-{ndim} input (the "
                "batch axis is 0)"
            )
        found.append(axis % ndim)
    return tuple(sorted(found))


def _normalise(x: jax.Array, mean, variance, gamma, beta, epsilon: float) -> jax.Array:
    inv = jax.lax.rsqrt(variance + jnp.asarray(epsilon, x.dtype))
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv
    if beta is not None:
        shift = shift + beta
    return x * inv + shift


def _config_axis(value: Any) -> Any:
    """A Keras config's axis (an int, or tf_keras's list) -> an int or a tuple."""
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) == 1 else tuple(value)
    return value


class _Normalization(GraphCallable):
    """What both layers share: scale and centre weights, the mask passed on."""

    name: str | None
    axis: Any
    center: bool
    scale: bool
    beta_initializer: Any
    gamma_initializer: Any

    params_from_shape: ClassVar[bool] = True

    def _axes(self, ndim: int) -> tuple[int, ...]:
        axes = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        return _positive_axes(axes, ndim, f"{type(self).__name__} {self.name!r}")

    def _feature_shape(self, input_shape: tuple) -> tuple[int, ...]:
        shape = tuple(input_shape[a] for a in self._axes(len(input_shape)))
        if any(d is None for d in shape):
            raise ConfigError(
                f"{type(self).__name__} {self.name!r}: the normalised axis {self.axis} of the "
                f"input {tuple(input_shape)} has no fixed size; give the input that size"
            )
        return shape

    def _broadcast(self, value: Any, x: jax.Array) -> Any:
        """A ``(features,)`` weight shaped to broadcast against ``x`` (``None`` stays)."""
        if value is None:
            return None
        shape = [1] * x.ndim
        for a in self._axes(x.ndim):
            shape[a] = x.shape[a]
        return jnp.asarray(value).astype(x.dtype).reshape(shape)

    def init(self, key: jax.Array, input_shape: tuple, dtype: Any = jnp.float32) -> dict:
        shapes = self.param_shapes(input_shape)
        inits = self._initializers()
        return initializers.init_params(key, shapes, inits, dtype)

    def _initializers(self) -> dict[str, Any]:
        return {"gamma": self.gamma_initializer, "beta": self.beta_initializer}

    def compute_mask(self, x, mask):
        return mask

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def _common_config(self, context: Any) -> dict:
        return {
            "axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": context.exportable(self.beta_initializer, "beta_initializer"),
            "gamma_initializer": context.exportable(self.gamma_initializer, "gamma_initializer"),
        }

    @staticmethod
    def _common_fields(config: dict, context: Any) -> dict:
        return {
            "axis": _config_axis(config.get("axis", -1)),
            "epsilon": float(config.get("epsilon", 1e-3)),
            "center": bool(config.get("center", True)),
            "scale": bool(config.get("scale", True)),
            "beta_initializer": context.initializer(config.get("beta_initializer"), "zeros"),
            "gamma_initializer": context.initializer(config.get("gamma_initializer"), "ones"),
            "name": config.get("name"),
        }


@dataclass(frozen=True)
class BatchNormalization(_Normalization):
    """``gamma * (x - mean) / sqrt(variance + epsilon) + beta`` per feature along ``axis``.

    At inference ``mean`` and ``variance`` are the moving statistics; with ``training=True``
    (and ``trainable``, as Keras 3) they are the batch's, over every axis but ``axis``,
    leaving masked steps out. ``trainable=False`` (Keras's frozen layer) always uses the
    moving statistics.
    """

    _: KW_ONLY
    axis: int = -1
    momentum: float = 0.99
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    beta_initializer: str | Callable = "zeros"
    gamma_initializer: str | Callable = "ones"
    moving_mean_initializer: str | Callable = "zeros"
    moving_variance_initializer: str | Callable = "ones"
    beta_regularizer: Any = None
    gamma_regularizer: Any = None
    beta_constraint: Any = None
    gamma_constraint: Any = None
    trainable: bool = True
    name: str | None = None

    non_trainable: ClassVar[tuple[str, ...]] = ("moving_mean", "moving_variance")
    keras_weight_options: ClassVar[dict[str, str]] = {"beta": "beta", "gamma": "gamma"}

    def __post_init__(self) -> None:
        weight_rules.resolve(self)
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ConfigError(
                f"BatchNormalization axis must be one int (as Keras 3's), got {self.axis!r}"
            )

    def param_shapes(self, input_shape: tuple) -> dict[str, tuple[int, ...]]:
        """``gamma``, ``beta``, ``moving_mean``, ``moving_variance``: ``(features,)`` each
        (Keras's order; ``gamma`` only with ``scale``, ``beta`` only with ``center``)."""
        shape = self._feature_shape(input_shape)
        names = [n for n, on in (("gamma", self.scale), ("beta", self.center)) if on]
        return {name: shape for name in [*names, "moving_mean", "moving_variance"]}

    def _initializers(self) -> dict[str, Any]:
        return {**super()._initializers(), "moving_mean": self.moving_mean_initializer,
                "moving_variance": self.moving_variance_initializer}  # fmt: skip

    uses_batch_rows: ClassVar[bool] = True  # training statistics skip a padded batch's rows

    def batch_moments(self, x: jax.Array, mask=None, rows=None) -> tuple[jax.Array, jax.Array]:
        """The batch's mean and variance per feature, ``(features,)`` each, as Keras 3's
        ``BatchNormalization._moments`` (masked steps left out). ``rows (batch,)``: 1.0 for
        the real rows of a padded batch; the others count nowhere, as if the batch were that
        short."""
        axis = self._axes(x.ndim)[0]
        reduce = tuple(a for a in range(x.ndim) if a != axis)
        keep = jnp.ones(x.shape, bool)
        if mask is not None:
            mask = jnp.asarray(mask, bool)
            if mask.ndim != x.ndim - 1:
                raise DataError(
                    f"BatchNormalization {self.name!r}: the mask {mask.shape} must have one "
                    f"axis less than the input {x.shape} (Keras raises the same)"
                )
            keep = jnp.broadcast_to(mask[..., None], x.shape)
        if rows is not None:
            real = jnp.asarray(rows).reshape((-1,) + (1,) * (x.ndim - 1)) > 0
            keep = keep & jnp.broadcast_to(real, x.shape)
        # Keras adds epsilon to the count only on its masked path
        count = jnp.sum(keep.astype(x.dtype), axis=reduce, keepdims=True)
        count = count + KERAS_EPSILON if mask is not None else count
        mean = jnp.sum(jnp.where(keep, x, 0), axis=reduce, keepdims=True) / count
        squares = jnp.square(jnp.where(keep, x - mean, 0))
        variance = jnp.sum(squares, axis=reduce, keepdims=True) / count
        return mean.squeeze(reduce), variance.squeeze(reduce)

    def moving_updates(self, params: dict, x: ArrayLike, mask=None, rows=None) -> dict:
        """The moving statistics after a training call on ``x``, as Keras assigns them:
        ``moving * momentum + batch * (1 - momentum)`` (``{}`` when not ``trainable``)."""
        if not self.trainable:
            return {}
        mean, variance = self.batch_moments(jnp.asarray(x), mask, rows)
        m = self.momentum
        return {
            "moving_mean": params["moving_mean"] * m + mean * (1.0 - m),
            "moving_variance": params["moving_variance"] * m + variance * (1.0 - m),
        }

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None, rows=None):
        """``x (batch, ..., features)`` -> the same shape; ``rows`` as ``batch_moments``."""
        x = jnp.asarray(x)
        check_param_shapes(f"BatchNormalization {self.name!r}", self.param_shapes(x.shape),
                           params)  # fmt: skip
        if training and self.trainable:
            mean, variance = self.batch_moments(x, mask, rows)
        else:
            mean, variance = params["moving_mean"], params["moving_variance"]
        gamma, beta = (self._broadcast(params.get(k), x) for k in ("gamma", "beta"))
        mean, variance = self._broadcast(mean, x), self._broadcast(variance, x)
        return _normalise(x, mean, variance, gamma, beta, self.epsilon)

    def keras_config(self, context: Any) -> dict:
        return {
            **self._common_config(context),
            "momentum": self.momentum,
            "moving_mean_initializer": context.exportable(self.moving_mean_initializer,
                                                          "moving_mean_initializer"),
            "moving_variance_initializer": context.exportable(self.moving_variance_initializer,
                                                              "moving_variance_initializer"),
            "synchronized": False,
            "trainable": self.trainable,
        }  # fmt: skip

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> BatchNormalization:
        renorm = [k for k in ("renorm", "virtual_batch_size", "adjustment") if config.get(k)]
        if renorm:
            raise context.unsupported(
                f" with {', '.join(renorm)} (tf_keras batch renormalisation)"
            )
        fields = cls._common_fields(config, context)
        if isinstance(fields["axis"], tuple):
            raise context.unsupported(f" with several axes {list(fields['axis'])}")
        return cls(
            **fields,
            momentum=float(config.get("momentum", 0.99)),
            moving_mean_initializer=context.initializer(
                config.get("moving_mean_initializer"), "zeros"),
            moving_variance_initializer=context.initializer(
                config.get("moving_variance_initializer"), "ones"),
            trainable=bool(config.get("trainable", True)),
        )  # fmt: skip


@dataclass(frozen=True)
class LayerNormalization(_Normalization):
    """``gamma * (x - mean) / sqrt(variance + epsilon) + beta`` with the mean and variance of
    each position over ``axis`` (an int or a tuple of ints; the last, by default).

    ``rms_scaling`` is Keras's: ``x * gamma / sqrt(variance + epsilon)`` without centring
    (Keras scales by the variance, not the root mean square, and so does this).
    """

    _: KW_ONLY
    axis: int | tuple[int, ...] = -1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    rms_scaling: bool = False
    beta_initializer: str | Callable = "zeros"
    gamma_initializer: str | Callable = "ones"
    beta_regularizer: Any = None
    gamma_regularizer: Any = None
    beta_constraint: Any = None
    gamma_constraint: Any = None
    name: str | None = None

    keras_weight_options: ClassVar[dict[str, str]] = {"beta": "beta", "gamma": "gamma"}

    def __post_init__(self) -> None:
        weight_rules.resolve(self)
        if isinstance(self.axis, list):
            object.__setattr__(self, "axis", tuple(self.axis))

    def param_shapes(self, input_shape: tuple) -> dict[str, tuple[int, ...]]:
        """``gamma`` (with ``scale`` or ``rms_scaling``) and ``beta`` (with ``center``,
        without ``rms_scaling``), each the normalised axes' sizes."""
        shape = self._feature_shape(input_shape)
        wanted = {"gamma": self.scale or self.rms_scaling,
                  "beta": self.center and not self.rms_scaling}  # fmt: skip
        names = [name for name, on in wanted.items() if on]
        return {name: shape for name in names}

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        """``x (batch, ..., features)`` -> the same shape."""
        x = jnp.asarray(x)
        check_param_shapes(f"LayerNormalization {self.name!r}", self.param_shapes(x.shape),
                           params)  # fmt: skip
        axes = self._axes(x.ndim)
        gamma, beta = (self._broadcast(params.get(k), x) for k in ("gamma", "beta"))
        mean = jnp.mean(x, axis=axes, keepdims=True)
        variance = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
        if self.rms_scaling:
            y = x * jax.lax.rsqrt(variance + jnp.asarray(self.epsilon, x.dtype))
            return y if gamma is None else y * gamma
        return _normalise(x, mean, variance, gamma, beta, self.epsilon)

    def keras_config(self, context: Any) -> dict:
        return {**self._common_config(context), "rms_scaling": self.rms_scaling}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> LayerNormalization:
        return cls(**cls._common_fields(config, context),
                   rms_scaling=bool(config.get("rms_scaling", False)))  # fmt: skip


for _layer_class in (BatchNormalization, LayerNormalization):
    register_layer(_layer_class.__name__, _layer_class)
