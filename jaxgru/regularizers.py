"""Keras 3's weight and activity regularizers: ``penalty = regularizer(x)``, a scalar.

Each class computes what Keras 3's class of the same name computes (``keras/src/regularizers``),
in ``x``'s dtype, and is written to Keras files as Keras writes it:

- ``L1(l1=0.01)``: ``l1 * sum(|x|)``; ``L2(l2=0.01)``: ``l2 * sum(x**2)``;
  ``L1L2(l1=0.0, l2=0.0)``: both;
- ``OrthogonalRegularizer(factor=0.01, mode="rows")``: for a 2-D ``x``, the rows (or columns)
  L2-normalised, then ``factor * 0.5 * sum(|P - diag(P)|) / (n (n - 1) / 2)`` with ``P`` their
  Gram matrix and ``n`` the number of rows (columns).

A layer that takes them names them as Keras does (``GRU(kernel_regularizer=L2(1e-4),
activity_regularizer="l1")``); ``jaxgru.fit`` adds every weight penalty and every activity
penalty (divided by the batch size, as Keras divides it) to the training loss, and the logged
``loss`` and ``val_loss`` include them, as Keras's do.

>>> import jax.numpy as jnp
>>> float(L2(0.5)(jnp.ones((2, 3))))
3.0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp

from jaxgru.errors import ConfigError

EPSILON = 1e-7  # Keras's backend.epsilon()


def _check_factor(name: str, value: Any) -> float:
    """A non-negative finite float, as Keras's ``validate_float_arg`` demands."""
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not math.isfinite(value) or value < 0:
        raise ConfigError(f"regularizer argument {name} must be a float >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class L1:
    """``l1 * sum(|x|)``."""

    l1: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "l1", _check_factor("l1", self.l1))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.asarray(self.l1, x.dtype) * jnp.sum(jnp.abs(x))


@dataclass(frozen=True)
class L2:
    """``l2 * sum(x**2)``."""

    l2: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "l2", _check_factor("l2", self.l2))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.asarray(self.l2, x.dtype) * jnp.sum(jnp.square(x))


@dataclass(frozen=True)
class L1L2:
    """``l1 * sum(|x|) + l2 * sum(x**2)``; a factor of 0 adds nothing."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "l1", _check_factor("l1", self.l1))
        object.__setattr__(self, "l2", _check_factor("l2", self.l2))

    def __call__(self, x: jax.Array) -> jax.Array:
        penalty = jnp.zeros((), x.dtype)
        if self.l1:
            penalty += L1(self.l1)(x)
        if self.l2:
            penalty += L2(self.l2)(x)
        return penalty


@dataclass(frozen=True)
class OrthogonalRegularizer:
    """The mean absolute cosine between distinct rows (``mode="rows"``) or columns of a 2-D
    ``x``, times ``factor / 2``."""

    factor: float = 0.01
    mode: str = "rows"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_factor("factor", self.factor))
        if self.mode not in ("rows", "columns"):
            raise ConfigError(
                f"OrthogonalRegularizer mode must be 'rows' or 'columns', got {self.mode!r}"
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 2:
            raise ConfigError(
                f"OrthogonalRegularizer needs a 2-D weight, got one of shape {x.shape}"
            )
        vectors = x if self.mode == "rows" else x.T
        inv_norm = jax.lax.rsqrt(jnp.sum(jnp.square(vectors), axis=1, keepdims=True))
        vectors = vectors * jnp.minimum(inv_norm, jnp.asarray(1 / EPSILON, x.dtype))
        size = vectors.shape[0]
        gram = (vectors @ vectors.T) * (1 - jnp.eye(size, dtype=x.dtype))
        pairs = size * (size - 1.0) / 2.0
        return jnp.asarray(self.factor, x.dtype) * 0.5 * jnp.sum(jnp.abs(gram)) / pairs


Regularizer = L1 | L2 | L1L2 | OrthogonalRegularizer
_CLASSES = {cls.__name__: cls for cls in (L1, L2, L1L2, OrthogonalRegularizer)}
# Keras 3's string names: the class names and their snake_case (``L1L2`` is ``"l1l2"``).
_NAMES = {**_CLASSES, "l1": L1, "l2": L2, "l1l2": L1L2,
          "orthogonal_regularizer": OrthogonalRegularizer}  # fmt: skip


def get(identifier: Any) -> Regularizer | None:
    """A regularizer from what Keras accepts: ``None``, an instance, a name (``"l2"``, with
    Keras's default factor) or a Keras file entry ``{"class_name": "L2", "config": {...}}``.

    Raises:
        ConfigError: an unknown name or class, or arguments that class does not take.
    """
    return _get("regularizer", identifier, _NAMES)


def _get(kind: str, identifier: Any, names: dict[str, type]) -> Any:
    """``get`` for regularizers and constraints (``kind`` names which in messages)."""
    if identifier is None or isinstance(identifier, tuple(set(names.values()))):
        return identifier
    if isinstance(identifier, str):
        cls, args = names.get(identifier), {}
    elif isinstance(identifier, dict) and "class_name" in identifier:
        cls, args = names.get(identifier["class_name"]), dict(identifier.get("config") or {})
        identifier = identifier["class_name"]
    else:
        raise ConfigError(
            f"a {kind} must be None, a name, a jaxgru {kind} or a Keras {kind} entry; got "
            f"{identifier!r}"
        )
    if cls is None:
        raise ConfigError(
            f"unknown {kind} {identifier!r} (a custom one cannot be read); jaxgru reads "
            f"{', '.join(sorted(names))}"
        )
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    except TypeError:
        raise ConfigError(f"{kind} {cls.__name__} does not take the arguments {args}") from None


def serialize(value: Any, module: str = "keras.regularizers") -> dict | None:
    """The Keras 3 file entry of a regularizer or constraint (``None`` stays ``None``)."""
    if value is None:
        return None
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(value).items()}
    return {"module": module, "class_name": type(value).__name__, "config": config,
            "registered_name": None}  # fmt: skip


def activity_penalty(regularizer: Regularizer, outputs: Any, rows: jax.Array | None) -> jax.Array:
    """Keras's activity regularization of one layer call: ``regularizer(output) / batch`` for
    each output array (a GRU's output and states, with ``return_state``), summed.

    ``rows (batch,)``: 1.0 for the real rows of a padded batch, 0.0 for padding, which then
    neither adds to the penalty nor counts in ``batch`` (Keras's last batch is that short).
    """
    if isinstance(regularizer, OrthogonalRegularizer):
        raise ConfigError(
            "OrthogonalRegularizer as an activity_regularizer is refused: it compares the rows "
            "of a batch, which fit pads; use it as a kernel_regularizer"
        )
    penalties = []
    for y in jax.tree.leaves(outputs):
        if rows is None:
            penalties.append(regularizer(y) / y.shape[0])
            continue
        real = rows.astype(y.dtype).reshape((-1,) + (1,) * (y.ndim - 1))
        batch = jnp.maximum(jnp.sum(rows), 1.0).astype(y.dtype)
        penalties.append(regularizer(y * real) / batch)
    return total(penalties)


def total(penalties: list) -> jax.Array:
    """The sum of ``penalties`` (scalars), 0.0 for none."""
    return sum(penalties[1:], penalties[0]) if penalties else jnp.zeros((), jnp.float32)
