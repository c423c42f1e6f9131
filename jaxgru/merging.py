"""Keras's merge layers: ``Concatenate``, ``Add``, ``Subtract``, ``Multiply``, ``Average``,
``Maximum``, ``Minimum``, ``Dot``. Each takes a list of tensors (a graph call on a list) and has no
weights; the output mask follows Keras's rules (``compute_mask``).

>>> import jax.numpy as jnp
>>> Concatenate().apply({}, [jnp.ones((2, 3)), jnp.zeros((2, 4))]).shape
(2, 7)
"""

from __future__ import annotations

import functools
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxgru.errors import ConfigError
from jaxgru.graph import GraphCallable
from jaxgru.layer import Weightless, register_layer


def _broadcast(shape_a: tuple, shape_b: tuple) -> tuple:
    """Keras's elementwise output shape of two sample shapes (``None``: any size)."""
    if len(shape_a) < len(shape_b):
        shape_a, shape_b = shape_b, shape_a
    out = list(shape_a[: len(shape_a) - len(shape_b)])
    for i, j in zip(shape_a[len(shape_a) - len(shape_b) :], shape_b):
        if i is None or j is None:
            out.append(None)
        elif 1 in (i, j) or i == j:
            out.append(max(i, j) if 1 in (i, j) else i)
        else:
            raise ConfigError(f"shapes {shape_a} and {shape_b} cannot be combined elementwise")
    return tuple(out)


def _check_list(layer: Any, inputs: Any) -> list:
    if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
        raise ConfigError(
            f"{type(layer).__name__} {layer.name!r} merges a list of at least 2 tensors"
        )
    if type(layer).arity and len(inputs) != type(layer).arity:
        raise ConfigError(
            f"{type(layer).__name__} {layer.name!r} takes exactly {type(layer).arity} tensors"
        )
    return list(inputs)


@dataclass(frozen=True)
class _Elementwise(Weightless, GraphCallable):
    """The elementwise merges: one function over the list, Keras's shape and mask rules."""

    _: KW_ONLY
    name: str | None = None
    arity: ClassVar[int] = 0  # 0: any number

    def combine(self, values: list) -> Any:
        raise NotImplementedError

    def apply(self, params: dict, inputs: list, mask=None, training=False, rng=None):
        """``inputs``: a list of arrays of broadcastable shapes -> one array."""
        return self.combine([jnp.asarray(v) for v in _check_list(self, inputs)])

    def compute_mask(self, inputs, mask):
        """Keras's: no mask unless every input has one; then any input's step counts."""
        if mask is None or any(m is None for m in mask):
            return None
        return functools.reduce(jnp.logical_or, mask)

    def output_shape(self, input_shape: list) -> tuple:
        shapes = _check_list(self, input_shape)
        if len({len(s) for s in shapes}) != 1:
            raise ConfigError(f"{type(self).__name__} needs inputs of one rank, got {shapes}")
        sample = functools.reduce(_broadcast, [tuple(s[1:]) for s in shapes])
        batches = {s[0] for s in shapes} - {None}
        return (batches.pop() if len(batches) == 1 else None, *sample)

    def keras_config(self, context: Any) -> dict:
        return {}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any):
        return cls(name=config.get("name"))


@dataclass(frozen=True)
class Add(_Elementwise):
    """The sum of the inputs."""

    def combine(self, values: list) -> Any:
        return functools.reduce(jnp.add, values)


@dataclass(frozen=True)
class Subtract(_Elementwise):
    """The first input minus the second."""

    arity: ClassVar[int] = 2

    def combine(self, values: list) -> Any:
        return values[0] - values[1]


@dataclass(frozen=True)
class Multiply(_Elementwise):
    """The elementwise product of the inputs."""

    def combine(self, values: list) -> Any:
        return functools.reduce(jnp.multiply, values)


@dataclass(frozen=True)
class Average(_Elementwise):
    """The mean of the inputs (their sum, then divided by their number, as Keras)."""

    def combine(self, values: list) -> Any:
        return functools.reduce(jnp.add, values) / len(values)


@dataclass(frozen=True)
class Maximum(_Elementwise):
    """The elementwise maximum of the inputs."""

    def combine(self, values: list) -> Any:
        return functools.reduce(jnp.maximum, values)


@dataclass(frozen=True)
class Minimum(_Elementwise):
    """The elementwise minimum of the inputs."""

    def combine(self, values: list) -> Any:
        return functools.reduce(jnp.minimum, values)


@dataclass(frozen=True)
class Concatenate(_Elementwise):
    """The inputs joined along ``axis`` (default the features)."""

    axis: int = -1

    def combine(self, values: list) -> Any:
        return jnp.concatenate(values, axis=self.axis)

    def compute_mask(self, inputs, mask):
        """Keras's: each input's mask spread over its features (all-true for an input without
        one), joined along ``axis``, then any true position along the last axis."""
        if mask is None or all(m is None for m in mask):
            return None
        spread = []
        for x, m in zip(inputs, mask):
            x = jnp.asarray(x)
            if m is None:
                spread.append(jnp.ones(x.shape, bool))
            else:
                m = jnp.asarray(m, bool)
                spread.append(jnp.broadcast_to(m[..., None], x.shape) if m.ndim < x.ndim else m)
        return jnp.any(jnp.concatenate(spread, axis=self.axis), axis=-1)

    def output_shape(self, input_shape: list) -> tuple:
        shapes = [tuple(s) for s in _check_list(self, input_shape)]
        rank = len(shapes[0])
        axis = self.axis % rank
        if any(len(s) != rank for s in shapes) or axis == 0:
            raise ConfigError(f"Concatenate(axis={self.axis}) cannot join shapes {shapes}")
        out = []
        for k in range(rank):
            sizes = [s[k] for s in shapes]
            if k == axis:
                out.append(None if None in sizes else sum(sizes))
                continue
            known = {v for v in sizes if v is not None}
            if len(known) > 1:
                raise ConfigError(f"Concatenate(axis={self.axis}) cannot join shapes {shapes}")
            out.append(known.pop() if known else None)
        return tuple(out)

    def keras_config(self, context: Any) -> dict:
        return {"axis": self.axis}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Concatenate:
        return cls(config.get("axis", -1), name=config.get("name"))


@dataclass(frozen=True)
class Dot(_Elementwise):
    """The dot product of two inputs per sample over ``axes`` (one axis each, counted with
    the batch axis as 0), as Keras's ``batch_dot``: ``(batch, d) . (batch, t, d)`` over
    ``axes=(1, 2)`` is ``(batch, t)``, an attention score. Two ``(batch, d)`` inputs give
    ``(batch, 1)``. ``normalize`` takes the cosine (each input L2-normalised first)."""

    axes: int | tuple[int, int] = -1
    normalize: bool = False

    arity: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if isinstance(self.axes, list):
            object.__setattr__(self, "axes", tuple(self.axes))

    def _axes(self, ranks: list[int]) -> tuple[int, int]:
        axes = (self.axes, self.axes) if isinstance(self.axes, int) else self.axes
        found = tuple(a % r for a, r in zip(axes, ranks))
        if 0 in found:
            raise ConfigError(f"Dot {self.name!r} cannot take the product over the batch axis")
        return found

    def combine(self, values: list) -> Any:
        x, y = values
        a, b = self._axes([x.ndim, y.ndim])
        if self.normalize:
            x, y = _l2_normalise(x, a), _l2_normalise(y, b)
        out = jax.vmap(lambda u, v: jnp.tensordot(u, v, axes=(a - 1, b - 1)))(x, y)
        return out[:, None] if x.ndim == y.ndim == 2 else out

    def compute_mask(self, inputs, mask):
        return None

    def output_shape(self, input_shape: list) -> tuple:
        x, y = (tuple(s) for s in _check_list(self, input_shape))
        a, b = self._axes([len(x), len(y)])
        if None not in (x[a], y[b]) and x[a] != y[b]:
            raise ConfigError(f"Dot(axes={self.axes}) cannot multiply shapes {x} and {y}")
        rest = [d for i, d in enumerate(x) if i not in (0, a)]
        rest += [d for i, d in enumerate(y) if i not in (0, b)]
        return (x[0], *(rest or [1]))

    def keras_config(self, context: Any) -> dict:
        axes = list(self.axes) if isinstance(self.axes, tuple) else self.axes
        return {"axes": axes, "normalize": self.normalize}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Dot:
        return cls(config["axes"], bool(config.get("normalize", False)), name=config.get("name"))


def _l2_normalise(x: jax.Array, axis: int) -> jax.Array:
    """Keras's ``ops.normalize``: ``x * min(1 / ||x||, 1 / epsilon)``."""
    inv = jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x * jnp.minimum(inv, jnp.asarray(1e7, x.dtype))


for _layer_class in (Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum, Dot):
    register_layer(_layer_class.__name__, _layer_class)
