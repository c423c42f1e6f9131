"""The regularizers and constraints a model's layers put on their weights, as Keras's fields.

A layer that takes them declares, in ``keras_weight_options``, Keras's prefix for each of its
weights and the param that weight is: a GRU's ``{"kernel": "kernel", "recurrent":
"recurrent_kernel", "bias": "bias"}`` gives it the fields ``kernel_regularizer``,
``recurrent_regularizer``, ``bias_regularizer`` and ``kernel_constraint``, ...; with
``keras_activity_regularizer = True`` it also has ``activity_regularizer``. Keras configs carry
the same keys, so reading and writing them is one rule for every layer (``from_keras``,
``to_keras``), and a file that sets one on a layer jaxgru does not regularize is refused
rather than loaded without it.

>>> import jax, jax.numpy as jnp, jaxgru
>>> model = jaxgru.Sequential([jaxgru.Dense(2, kernel_regularizer=jaxgru.regularizers.L2(1.0))],
...                           input_shape=(3,))
>>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
>>> float(weight_penalty(model, params))
6.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax

from jaxgru import constraints, regularizers
from jaxgru.errors import ConfigError


def weight_options(layer: Any) -> dict[str, str]:
    """``{Keras prefix: param name}`` of the weights the layer can regularize and constrain."""
    return dict(getattr(layer, "keras_weight_options", {}))


def option_fields(layer: Any) -> tuple[str, ...]:
    """The layer's (or layer class's) regularizer and constraint fields, as Keras's config
    keys."""
    prefixes = weight_options(layer)
    fields = [f"{p}_regularizer" for p in prefixes] + [f"{p}_constraint" for p in prefixes]
    if getattr(layer, "keras_activity_regularizer", False):
        fields.append("activity_regularizer")
    return tuple(fields)


def resolve(layer: Any) -> None:
    """Turn the layer's regularizer and constraint fields into objects (from a name, a Keras
    entry or an object), in ``__post_init__``; a bad one raises ``ConfigError``."""
    for name in option_fields(layer):
        get = constraints.get if name.endswith("_constraint") else regularizers.get
        try:
            value = get(getattr(layer, name))
        except ConfigError as error:
            raise ConfigError(f"{type(layer).__name__} {name}: {error}") from None
        object.__setattr__(layer, name, value)


def check_no_inner_activity(wrapper: Any, inner: Any) -> None:
    """Refuse an ``activity_regularizer`` on a layer a wrapper holds: Keras 3's
    ``TimeDistributed`` skips it and tf_keras's applies it per step, and a Bidirectional's
    directions run fused here."""
    if getattr(inner, "activity_regularizer", None) is not None:
        raise ConfigError(
            f"{type(wrapper).__name__} holds {type(inner).__name__} {inner.name!r} with an "
            "activity_regularizer, which jaxgru does not apply inside a wrapper (Keras 3 and "
            "tf_keras differ there); remove it, or train the model in Keras"
        )


def from_keras(layer: Any, config: dict) -> Any:
    """``layer`` with the regularizers and constraints its Keras ``config`` sets. The keys
    the layer does not take (``refused_keys``) were refused before, for every entry of the
    file at once (``keras_io.config.check_supported``).

    Raises:
        ConfigError: a regularizer or constraint jaxgru cannot read (a custom class).
    """
    held = option_fields(layer)
    changes = {key: config[key] for key in held if config.get(key) is not None}
    return dataclasses.replace(layer, **changes) if changes else layer


def refused_keys(cls: type, config: dict) -> list[str]:
    """The regularizer and constraint keys a Keras ``config`` sets that ``cls`` does not take."""
    held = option_fields(cls)
    rules = [key for key in config if key.endswith(("_regularizer", "_constraint"))]
    return sorted(key for key in rules if config[key] is not None and key not in held)


def refusal(cls: type, refused: list[str]) -> str:
    """Why a layer of ``cls`` whose file sets ``refused`` is not read, and the fix."""
    takes = ", ".join(option_fields(cls)) or "none"
    return (
        f"it sets {', '.join(refused)}, which jaxgru does not apply to {cls.__name__} (it "
        f"takes: {takes}), so training it would optimise another objective; set them to None "
        "in Keras and save again, or train it in Keras"
    )


def to_keras(layer: Any) -> dict:
    """The layer's regularizer and constraint fields as Keras 3 config entries."""
    return {name: regularizers.serialize(getattr(layer, name),
                                         "keras.constraints" if name.endswith("_constraint")
                                         else "keras.regularizers")
            for name in option_fields(layer)}  # fmt: skip


def _weights(layers: Any, params: dict) -> Iterator[tuple[Any, str, tuple[str, ...]]]:
    """``(layer, Keras prefix, params path)`` for every weight a layer (or a layer a wrapper
    holds) can regularize, where ``params`` holds it."""
    for layer in layers:
        yield from _layer_weights(layer, (layer.name,), params.get(layer.name, {}))


def _layer_weights(layer: Any, path: tuple, params: dict) -> Iterator[tuple[Any, str, tuple]]:
    for prefix, param in weight_options(layer).items():
        if param in params:
            yield layer, prefix, (*path, param)
    for at, inner in getattr(layer, "sublayers", lambda: ())():
        yield from _layer_weights(inner, (*path, *at), _at(params, at))


def _at(tree: dict, path: tuple) -> Any:
    for key in path:
        tree = tree.get(key, {})
    return tree


def weight_penalty(model: Any, params: dict) -> jax.Array:
    """The sum of every weight regularizer's penalty over ``params`` (a scalar, 0 if none)."""
    penalties = [getattr(layer, f"{prefix}_regularizer")(_at(params, path))
                 for layer, prefix, path in _weights(model.layers, params)
                 if getattr(layer, f"{prefix}_regularizer") is not None]  # fmt: skip
    return regularizers.total(penalties)


def has_constraints(model: Any) -> bool:
    """Whether any layer of ``model`` constrains a weight."""
    return any(getattr(layer, f"{prefix}_constraint") is not None
               for layer, prefix, _ in _weights(model.layers, model.param_shapes()))  # fmt: skip


def constrain(model: Any, params: dict) -> dict:
    """``params`` with every constrained weight projected by its constraint (Keras applies
    them after each optimizer step); the others unchanged."""
    found = [(getattr(layer, f"{prefix}_constraint"), path)
             for layer, prefix, path in _weights(model.layers, params)
             if getattr(layer, f"{prefix}_constraint") is not None]  # fmt: skip
    if not found:
        return params
    params = jax.tree.map(lambda a: a, params)  # a copy of the dicts, same arrays
    for constraint, path in found:
        holder = _at(params, path[:-1])
        holder[path[-1]] = constraint(holder[path[-1]])
    return params
