"""Keras 3 initializer names -> JAX initializers ``init(key, shape, dtype) -> array``.

Names are Keras 3's, with its default arguments: the snake_case names (``glorot_uniform``),
the class names (``GlorotUniform``) and Keras's aliases (``normal``, ``uniform``, ``one``,
``zero``). Fans are computed as Keras computes them for a 2-D ``(fan_in, fan_out)`` matrix,
so ``glorot_uniform`` on a kernel ``(input_dim, 3 * units)`` draws from
``U(-limit, limit)`` with ``limit = sqrt(6 / (input_dim + 3 * units))``, and ``orthogonal``
on ``(units, 3 * units)`` gives a matrix with orthonormal rows, as Keras does.

>>> import jax
>>> w = get("orthogonal")(jax.random.key(0), (2, 6))
>>> bool(abs(w @ w.T - jax.numpy.eye(2)).max() < 1e-5)
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from jaxgru._naming import snake_case
from jaxgru.errors import ConfigError

Initializer = Callable[..., jax.Array]
_init = jax.nn.initializers


def _random_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return 0.05 * jax.random.normal(key, shape, dtype)


def _random_uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, minval=-0.05, maxval=0.05)


def _truncated_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    # Keras truncates N(0, 0.05) at two standard deviations without rescaling.
    return 0.05 * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def _identity(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    del key
    if len(shape) != 2:
        raise ConfigError(f"initializer 'identity' needs a 2-D shape, got {shape}")
    return jnp.eye(shape[0], shape[1], dtype=dtype)


_INITIALIZERS: dict[str, Initializer] = {
    "zeros": _init.zeros,
    "ones": _init.ones,
    "constant": _init.zeros,  # Keras's Constant() defaults to value=0.0
    "identity": _identity,
    "glorot_uniform": _init.glorot_uniform(),
    "glorot_normal": _init.glorot_normal(),
    "he_uniform": _init.he_uniform(),
    "he_normal": _init.he_normal(),
    "lecun_uniform": _init.lecun_uniform(),
    "lecun_normal": _init.lecun_normal(),
    "variance_scaling": _init.variance_scaling(1.0, "fan_in", "truncated_normal"),
    "orthogonal": _init.orthogonal(),
    "random_normal": _random_normal,
    "random_uniform": _random_uniform,
    "truncated_normal": _truncated_normal,
}
_ALIASES = {"normal": "random_normal", "uniform": "random_uniform", "one": "ones", "zero": "zeros"}

NAMES: tuple[str, ...] = tuple(sorted(_INITIALIZERS))

# The arguments each Keras 3 initializer class takes, with its defaults (``seed`` aside: jaxgru
# draws from its own keys, so a seeded Keras initializer gives the same distribution).
_ARGUMENTS: dict[str, dict[str, Any]] = {
    "Constant": {"value": 0.0},
    "RandomNormal": {"mean": 0.0, "stddev": 0.05},
    "RandomUniform": {"minval": -0.05, "maxval": 0.05},
    "TruncatedNormal": {"mean": 0.0, "stddev": 0.05},
    "VarianceScaling": {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"},
    "Orthogonal": {"gain": 1.0},
    "Identity": {"gain": 1.0},
}


@dataclass(frozen=True)
class KerasInitializer:
    """A Keras initializer as a Keras file names it, arguments included, e.g.
    ``KerasInitializer("Constant", (("value", 0.01),))``: callable as ``init(key, shape,
    dtype)`` and written back to Keras files as it was read. ``args`` are ``(name, value)``
    pairs, so the layer stays hashable. One jaxgru cannot draw (a custom initializer, or
    arguments it does not know) still loads and saves; only ``init`` refuses it.
    """

    class_name: str
    args: tuple[tuple[str, Any], ...] = ()
    module: str | None = "keras.initializers"

    @property
    def drawable(self) -> bool:
        """Whether jaxgru draws exactly this initializer."""
        known = _ARGUMENTS.get(self.class_name)
        return known is not None and set(dict(self.args)) <= set(known)

    @property
    def config(self) -> dict[str, Any]:
        """Its Keras ``config``: every argument, defaults filled in where jaxgru knows them."""
        return {**_ARGUMENTS.get(self.class_name, {}), **dict(self.args)}

    def __call__(self, key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        if not self.drawable:
            raise ConfigError(
                f"initializer {self.class_name}({dict(self.args)}) cannot be drawn by jaxgru "
                f"(it draws {', '.join(NAMES)} and the arguments of {', '.join(_ARGUMENTS)}); "
                "load the weights instead of calling init, or choose another initializer"
            )
        c = self.config
        if self.class_name == "Constant":
            return jnp.full(shape, c["value"], dtype)
        if self.class_name == "RandomNormal":
            return c["mean"] + c["stddev"] * jax.random.normal(key, shape, dtype)
        if self.class_name == "RandomUniform":
            return jax.random.uniform(key, shape, dtype, c["minval"], c["maxval"])
        if self.class_name == "TruncatedNormal":  # truncated at two stddevs, as Keras
            return c["mean"] + c["stddev"] * jax.random.truncated_normal(key, -2, 2, shape, dtype)
        if self.class_name == "VarianceScaling":
            return _init.variance_scaling(c["scale"], c["mode"], c["distribution"])(
                key, shape, dtype
            )
        if self.class_name == "Orthogonal":
            return _init.orthogonal(c["gain"])(key, shape, dtype)
        return c["gain"] * _identity(key, shape, dtype)


def get(identifier: str | Initializer) -> Initializer:
    """Resolve a Keras initializer name (or a callable) to a JAX initializer.

    Args:
        identifier: a Keras 3 initializer name (``"glorot_uniform"``, ``"GlorotUniform"``,
            ``"orthogonal"``, ``"zeros"``, ...) or a callable ``init(key, shape, dtype)``.

    Returns:
        ``init(key, shape, dtype=jnp.float32) -> array of shape`` ``shape``.

    Raises:
        ValueError: for an unknown name.
        ConfigError: for anything that is neither a string nor callable.
    """
    if callable(identifier):
        return identifier
    if not isinstance(identifier, str):
        raise ConfigError(
            f"initializer must be a Keras initializer name or a callable; "
            f"got {identifier!r} of type {type(identifier).__name__}"
        )
    name = snake_case(identifier) if identifier[:1].isupper() else identifier
    name = _ALIASES.get(name, name)
    try:
        return _INITIALIZERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown initializer {identifier!r}; expected one of: {', '.join(NAMES)}"
        ) from None


def init_params(key: jax.Array, shapes: dict, inits: dict, dtype: Any = jnp.float32) -> dict:
    """``{name: array}`` drawn for ``shapes`` (``{name: shape}``, in order) with ``inits``
    (``{name: initializer}``), one key per array split from ``key``."""
    keys = jax.random.split(key, len(shapes))
    return {name: get(inits[name])(k, shape, dtype)
            for k, (name, shape) in zip(keys, shapes.items())}  # fmt: skip
