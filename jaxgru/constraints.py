"""Keras 3's weight constraints: ``w = constraint(w)``, applied after every optimizer step.

Each class computes what Keras 3's class of the same name computes (``keras/src/constraints``),
with Keras's ``epsilon = 1e-7`` and ``axis`` (an int or a tuple of ints) the axes a norm is
taken over; ``jaxgru.fit`` projects each constrained weight after each step, as Keras's
optimizer does, and the classes are written to Keras files as Keras writes them.

- ``MaxNorm(max_value=2, axis=0)``: ``w * clip(norm, 0, max_value) / (eps + norm)``;
- ``MinMaxNorm(min_value=0.0, max_value=1.0, rate=1.0, axis=0)``:
  ``w * (rate * clip(norm, min_value, max_value) + (1 - rate) * norm) / (eps + norm)``;
- ``NonNeg()``: ``max(w, 0)``;
- ``UnitNorm(axis=0)``: ``w / (eps + norm)``.

>>> import jax.numpy as jnp
>>> UnitNorm()(jnp.array([[3.0], [4.0]])).tolist()
[[0.6000000238418579], [0.800000011920929]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from jaxgru.errors import ConfigError
from jaxgru.regularizers import EPSILON, _get


def _norms(w: jax.Array, axis: Any) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


def _check_axis(axis: Any) -> Any:
    if isinstance(axis, (list, tuple)):
        axis = tuple(axis)
        if all(isinstance(a, int) and not isinstance(a, bool) for a in axis):
            return axis
    elif isinstance(axis, int) and not isinstance(axis, bool):
        return axis
    raise ConfigError(f"a constraint's axis must be an int or a list of ints, got {axis!r}")


@dataclass(frozen=True)
class MaxNorm:
    """Rescale each weight vector (a slice along ``axis``) whose norm exceeds ``max_value``."""

    max_value: float = 2
    axis: int | tuple[int, ...] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", _check_axis(self.axis))

    def __call__(self, w: jax.Array) -> jax.Array:
        norms = _norms(w, self.axis)
        desired = jnp.clip(norms, 0, self.max_value)
        return w * (desired / (EPSILON + norms))


@dataclass(frozen=True)
class MinMaxNorm:
    """Move each weight vector's norm towards ``[min_value, max_value]`` at ``rate``."""

    min_value: float = 0.0
    max_value: float = 1.0
    rate: float = 1.0
    axis: int | tuple[int, ...] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", _check_axis(self.axis))

    def __call__(self, w: jax.Array) -> jax.Array:
        norms = _norms(w, self.axis)
        desired = self.rate * jnp.clip(norms, self.min_value, self.max_value)
        desired = desired + (1 - self.rate) * norms
        return w * (desired / (EPSILON + norms))


@dataclass(frozen=True)
class NonNeg:
    """Negative weights set to 0."""

    def __call__(self, w: jax.Array) -> jax.Array:
        return jnp.maximum(w, 0)


@dataclass(frozen=True)
class UnitNorm:
    """Each weight vector (a slice along ``axis``) scaled to norm 1."""

    axis: int | tuple[int, ...] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", _check_axis(self.axis))

    def __call__(self, w: jax.Array) -> jax.Array:
        return w / (EPSILON + _norms(w, self.axis))


Constraint = MaxNorm | MinMaxNorm | NonNeg | UnitNorm
_CLASSES = {cls.__name__: cls for cls in (MaxNorm, MinMaxNorm, NonNeg, UnitNorm)}
_NAMES = {**_CLASSES, "max_norm": MaxNorm, "min_max_norm": MinMaxNorm, "non_neg": NonNeg,
          "unit_norm": UnitNorm}  # fmt: skip


def get(identifier: Any) -> Constraint | None:
    """A constraint from what Keras accepts: ``None``, an instance, a name (``"max_norm"``,
    with Keras's defaults) or a Keras file entry ``{"class_name": "MaxNorm", "config": {...}}``.

    Raises:
        ConfigError: an unknown name or class, or arguments that class does not take.
    """
    return _get("constraint", identifier, _NAMES)
