"""Keras's shape layers: ``Reshape``, ``Flatten``, ``Permute``, ``RepeatVector``,
``Cropping1D`` and ``ZeroPadding1D``.

None has weights, the batch axis is never touched, and each drops its input's mask, as
Keras 3's do (they do not support masking). Shapes, batch axis first:

- ``Reshape(target_shape)``: ``(batch, ...)`` -> ``(batch, *target_shape)``, one entry may be
  ``-1`` (as the DeepSpeech2 model's ``Reshape((-1, features))`` after its convolutions);
- ``Flatten()``: ``(batch, ...)`` -> ``(batch, prod(...))``;
- ``Permute(dims)``: the non-batch axes reordered, ``dims`` counted from 1;
- ``RepeatVector(n)``: ``(batch, features)`` -> ``(batch, n, features)``;
- ``Cropping1D((a, b))``: ``(batch, time, features)`` less ``a`` first and ``b`` last steps;
- ``ZeroPadding1D((a, b))``: ``a`` zero steps before, ``b`` after.

>>> import jax.numpy as jnp
>>> Reshape((-1, 2)).apply({}, jnp.zeros((3, 4, 5))).shape
(3, 10, 2)
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru._checks import check_count
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import GraphCallable
from jaxgru.layer import Weightless, register_layer


class _Shape(Weightless, GraphCallable):
    """No weights, no mask passed on."""

    def compute_mask(self, x, mask):
        return None


def _pair(value: Any, what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ConfigError(f"{what} must be an int or a pair of ints, got {value!r}")
    for v in pair:
        check_count(what, v, minimum=0)
    return pair


@dataclass(frozen=True)
class Reshape(_Shape):
    """``(batch, ...)`` -> ``(batch, *target_shape)``; one ``-1`` takes the rest."""

    target_shape: tuple[int, ...]
    _: KW_ONLY
    name: str | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.target_shape)
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ConfigError(
                f"Reshape target_shape must hold positive sizes and at most one -1, got {shape}"
            )
        object.__setattr__(self, "target_shape", shape)

    def _resolved(self, input_shape: tuple) -> tuple:
        sizes = input_shape[1:]
        if -1 not in self.target_shape:
            if None not in sizes and math.prod(sizes) != math.prod(self.target_shape):
                raise DataError(
                    f"Reshape {self.name!r}: an input of shape {tuple(input_shape)} cannot be "
                    f"reshaped to (batch, *{self.target_shape})"
                )
            return self.target_shape
        if None in sizes:
            return tuple(None if d == -1 else d for d in self.target_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        total = math.prod(sizes)
        if total % known:
            raise DataError(
                f"Reshape {self.name!r}: an input of shape {tuple(input_shape)} cannot be "
                f"reshaped to (batch, *{self.target_shape})"
            )
        return tuple(total // known if d == -1 else d for d in self.target_shape)

    def output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *self._resolved(tuple(input_shape)))

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], *self._resolved(x.shape))

    def keras_config(self, context: Any) -> dict:
        return {"target_shape": list(self.target_shape)}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Reshape:
        return cls(tuple(config["target_shape"]), name=config.get("name"))


@dataclass(frozen=True)
class Flatten(_Shape):
    """``(batch, ...)`` -> ``(batch, prod(...))`` (channels last)."""

    _: KW_ONLY
    name: str | None = None

    def output_shape(self, input_shape: tuple) -> tuple:
        sizes = input_shape[1:]
        return (input_shape[0], None if None in sizes else math.prod(sizes))

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], -1)

    def keras_config(self, context: Any) -> dict:
        return {"data_format": "channels_last"}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Flatten:
        if config.get("data_format", "channels_last") != "channels_last":
            raise context.unsupported(" with data_format='channels_first'")
        return cls(name=config.get("name"))


@dataclass(frozen=True)
class Permute(_Shape):
    """The non-batch axes in the order ``dims`` (a permutation of ``1..rank-1``)."""

    dims: tuple[int, ...]
    _: KW_ONLY
    name: str | None = None

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ConfigError(
                f"Permute dims must be a permutation of 1..{len(dims)} (the batch axis stays "
                f"first), got {dims}"
            )
        object.__setattr__(self, "dims", dims)

    def _check_rank(self, ndim: int) -> None:
        if ndim != len(self.dims) + 1:
            raise DataError(
                f"Permute {self.name!r} with dims {self.dims} needs a rank-{len(self.dims) + 1}"
                f" input, got rank {ndim}"
            )

    def output_shape(self, input_shape: tuple) -> tuple:
        self._check_rank(len(input_shape))
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        x = jnp.asarray(x)
        self._check_rank(x.ndim)
        return jnp.transpose(x, (0, *self.dims))

    def keras_config(self, context: Any) -> dict:
        return {"dims": list(self.dims)}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Permute:
        return cls(tuple(config["dims"]), name=config.get("name"))


@dataclass(frozen=True)
class RepeatVector(_Shape):
    """``(batch, features)`` -> ``(batch, n, features)``: the decoder input of a GRU
    autoencoder."""

    n: int
    _: KW_ONLY
    name: str | None = None

    input_ndim: ClassVar[int] = 2

    def __post_init__(self) -> None:
        check_count("RepeatVector n", self.n)

    def output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.n, input_shape[1])

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        x = jnp.asarray(x)
        return jnp.broadcast_to(x[:, None, :], (x.shape[0], self.n, x.shape[1]))

    def keras_config(self, context: Any) -> dict:
        return {"n": self.n}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> RepeatVector:
        return cls(config["n"], name=config.get("name"))


@dataclass(frozen=True)
class Cropping1D(_Shape):
    """``(batch, time, features)`` -> ``(batch, time - a - b, features)``, ``cropping=(a, b)``."""

    cropping: int | tuple[int, int] = (1, 1)
    _: KW_ONLY
    name: str | None = None

    input_ndim: ClassVar[int] = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "cropping", _pair(self.cropping, "Cropping1D cropping"))

    def output_shape(self, input_shape: tuple) -> tuple:
        batch, time, features = input_shape
        return (batch, None if time is None else time - sum(self.cropping), features)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        x = jnp.asarray(x)
        start, end = self.cropping
        if x.shape[1] - start - end < 1:
            raise DataError(
                f"Cropping1D {self.name!r}: cropping {self.cropping} leaves no step of a "
                f"{x.shape[1]}-step input"
            )
        return x[:, start : x.shape[1] - end]

    def keras_config(self, context: Any) -> dict:
        return {"cropping": list(self.cropping)}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Cropping1D:
        return cls(config.get("cropping", (1, 1)), name=config.get("name"))


@dataclass(frozen=True)
class ZeroPadding1D(_Shape):
    """``(batch, time, features)`` -> ``(batch, a + time + b, features)``, zeros added."""

    padding: int | tuple[int, int] = 1
    _: KW_ONLY
    name: str | None = None

    input_ndim: ClassVar[int] = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "padding", _pair(self.padding, "ZeroPadding1D padding"))

    def output_shape(self, input_shape: tuple) -> tuple:
        batch, time, features = input_shape
        return (batch, None if time is None else time + sum(self.padding), features)

    def apply(self, params: dict, x: ArrayLike, mask=None, training=False, rng=None):
        return jnp.pad(jnp.asarray(x), ((0, 0), self.padding, (0, 0)))

    def keras_config(self, context: Any) -> dict:
        return {"padding": list(self.padding), "data_format": "channels_last"}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> ZeroPadding1D:
        if config.get("data_format", "channels_last") != "channels_last":
            raise context.unsupported(" with data_format='channels_first'")
        return cls(config.get("padding", 1), name=config.get("name"))


for _layer_class in (Reshape, Flatten, Permute, RepeatVector, Cropping1D, ZeroPadding1D):
    register_layer(_layer_class.__name__, _layer_class)
