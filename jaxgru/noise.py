"""Keras's noise layers: ``SpatialDropout1D``, ``GaussianNoise``, ``GaussianDropout`` and
``AlphaDropout``. Each is the identity at inference and, in training (``rng`` required), draws
Keras's noise: the same distributions, not Keras's random numbers. None has weights; each
passes its input's mask on, as Keras's do.

>>> import jax, jax.numpy as jnp
>>> x = jnp.ones((2, 5, 3))
>>> bool((SpatialDropout1D(0.5).apply({}, x) == x).all())      # inference: the identity
True
>>> y = SpatialDropout1D(0.5).apply({}, x, training=True, rng=jax.random.key(0))
>>> bool((y == y[:, :1]).all())                                  # whole features dropped
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import jax

from jaxgru._checks import check_rate
from jaxgru.errors import ConfigError
from jaxgru.layer import register_layer
from jaxgru.layers import Noise, inverted_dropout

# Keras's SELU constants, which AlphaDropout keeps the mean and variance of.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True)
class SpatialDropout1D(Noise):
    """Dropout of whole features: one keep-or-drop per (sample, feature), for every step."""

    rate: float

    input_ndim: ClassVar[int] = 3
    keras_base_keys: ClassVar[tuple] = ("name", "dtype")  # Keras's get_config has no trainable

    def __post_init__(self) -> None:
        check_rate("SpatialDropout1D rate", self.rate)

    def noise(self, rng: jax.Array, x: jax.Array) -> jax.Array:
        return inverted_dropout(rng, x, self.rate, (x.shape[0], 1, x.shape[2]))


@dataclass(frozen=True)
class GaussianNoise(Noise):
    """Adds normal noise of standard deviation ``stddev``."""

    stddev: float

    amount: ClassVar[str] = "stddev"

    def __post_init__(self) -> None:
        if not 0 <= self.stddev <= 1:
            raise ConfigError(f"GaussianNoise stddev must be in [0, 1], got {self.stddev!r}")

    def noise(self, rng: jax.Array, x: jax.Array) -> jax.Array:
        return x + self.stddev * jax.random.normal(rng, x.shape, x.dtype)


@dataclass(frozen=True)
class GaussianDropout(Noise):
    """Multiplies by normal noise of mean 1 and standard deviation ``sqrt(rate / (1 - rate))``."""

    rate: float

    def __post_init__(self) -> None:
        check_rate("GaussianDropout rate", self.rate)

    def noise(self, rng: jax.Array, x: jax.Array) -> jax.Array:
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        return x * (1.0 + stddev * jax.random.normal(rng, x.shape, x.dtype))


@dataclass(frozen=True)
class AlphaDropout(Noise):
    """Dropout for SELU networks: dropped values become SELU's negative saturation, then an
    affine map keeps the mean and variance (Keras's ``a * x + b``)."""

    rate: float

    def __post_init__(self) -> None:
        check_rate("AlphaDropout rate", self.rate)

    def noise(self, rng: jax.Array, x: jax.Array) -> jax.Array:
        alpha_p = -_SELU_ALPHA * _SELU_SCALE
        kept = (jax.random.uniform(rng, x.shape) >= self.rate).astype(x.dtype)
        a = ((1 - self.rate) * (1 + self.rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * self.rate
        return a * (x * kept + alpha_p * (1 - kept)) + b

    def keras_config(self, context: Any) -> dict:
        return {"rate": self.rate, "seed": None, "noise_shape": None}


for _layer_class in (SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout):
    register_layer(_layer_class.__name__, _layer_class)
