"""Keras 3's operation nodes in a functional graph: the mask arithmetic Keras records.

Keras 3 (3.x) records the ops a layer's ``compute_mask`` runs as nodes of the functional
graph: a ``Masking`` or ``Embedding(mask_zero=True)`` before a GRU saves ``NotEqual`` and
``Any`` entries (module ``keras.src.ops.numpy``), and the GRU's call gets their output as its
``mask=``. ``KerasOp`` is such a node: it evaluates the op exactly, has no weights, and is
written back as Keras wrote it. Only the ops below are read; any other is refused by name.

>>> import jax.numpy as jnp
>>> op = KerasOp("Any", (("axis", -1), ("keepdims", False)), (TENSOR,))
>>> op.apply({}, [jnp.array([[[0.0, 1.0], [0.0, 0.0]]]) != 0])
Array([[ True, False]], dtype=bool)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxgru.errors import ConfigError
from jaxgru.layer import Weightless

TENSOR = "__tensor__"  # marks where a tensor input goes among an op's positional arguments
_ANY_SIZE = 7919  # stands for a size of None while an op's output shape is worked out

_OPS: dict[str, Callable[..., Any]] = {
    "NotEqual": lambda c, a, b: jnp.not_equal(a, b),
    "Equal": lambda c, a, b: jnp.equal(a, b),
    "LogicalOr": lambda c, a, b: jnp.logical_or(a, b),
    "LogicalAnd": lambda c, a, b: jnp.logical_and(a, b),
    "LogicalNot": lambda c, a: jnp.logical_not(a),
    "Any": lambda c, a: jnp.any(a, axis=c.get("axis"), keepdims=c.get("keepdims", False)),
    "All": lambda c, a: jnp.all(a, axis=c.get("axis"), keepdims=c.get("keepdims", False)),
    "ExpandDims": lambda c, a: jnp.expand_dims(a, c["axis"]),
    "Squeeze": lambda c, a: jnp.squeeze(a, c.get("axis")),
    "ZerosLike": lambda c, a: jnp.zeros_like(a, dtype=c.get("dtype")),
    "OnesLike": lambda c, a: jnp.ones_like(a, dtype=c.get("dtype")),
    "Concatenate": lambda c, values: jnp.concatenate(values, axis=c.get("axis", 0)),
    "Cast": lambda c, a: jnp.asarray(a).astype(c["dtype"]),
    # An attention layer's compute_mask converts its query mask (sparse/ragged: same values).
    "ConvertToTensor": lambda c, a: jnp.asarray(a, dtype=c.get("dtype")),
}
OPERATIONS = frozenset(_OPS)
# The module each op is in, where not keras.src.ops.numpy.
_MODULES = {"Cast": "keras.src.ops.core", "ConvertToTensor": "keras.src.ops.core"}


def is_op_entry(entry: dict) -> bool:
    """Whether a functional config entry is an operation node rather than a layer. A ``.h5``
    written by Keras 3 drops every entry's ``module``; there an op is told from a layer of the
    same class name (``Concatenate``) by its config, which lacks a layer's ``trainable``."""
    module = entry.get("module")
    if module is not None:
        return str(module).startswith("keras.src.ops")
    config = entry.get("config", {})
    return entry.get("class_name") in _OPS and "trainable" not in config


def _frozen(value: Any) -> Any:
    """Lists as tuples, so the op stays hashable (``axis=[1, 2]``)."""
    return tuple(map(_frozen, value)) if isinstance(value, list) else value


def fill_arguments(template: Any, values: list) -> Any:
    """``template`` (an op's positional arguments) with each ``TENSOR`` replaced by the next
    of ``values`` (arrays to compute, or tensor entries to write a Keras config), as lists."""
    values = list(values)

    def fill(item: Any) -> Any:
        if item == TENSOR:
            return values.pop(0)
        if isinstance(item, (list, tuple)):
            return [fill(v) for v in item]
        return item

    return fill(template)


@dataclass(frozen=True)
class KerasOp(Weightless):
    """One Keras operation node: ``op`` (its class, e.g. ``"NotEqual"``), its ``config``
    (sorted ``(key, value)`` pairs, without the name) and ``arguments``, the positional
    arguments with ``TENSOR`` where the call's inputs go (``(TENSOR, 0.0)``: ``x != 0.0``)."""

    op: str
    config: tuple = ()
    arguments: tuple = (TENSOR,)
    _: KW_ONLY
    name: str | None = None

    keras_operation: ClassVar[bool] = True  # not a Keras layer: no weights, no HDF5 group

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ConfigError(
                f"Keras operation {self.op!r} ({self.name}) is not supported; jaxgru reads the "
                f"mask operations {sorted(_OPS)}"
            )

    def apply(self, params: dict, inputs: Any, mask=None, training=False, rng=None):
        """The op on its inputs (one array or a list, in the order of ``arguments``)."""
        values = list(inputs) if isinstance(inputs, list) else [inputs]
        return _OPS[self.op](dict(self.config), *fill_arguments(self.arguments, values))

    def compute_mask(self, inputs: Any, mask: Any) -> None:
        return None

    def output_shape(self, input_shape: Any) -> tuple:
        """Worked out by ``jax.eval_shape`` with every unknown size standing in as a prime."""
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        structs = [jax.ShapeDtypeStruct(tuple(_ANY_SIZE if d is None else d for d in s),
                                        jnp.float32) for s in shapes]  # fmt: skip
        out = jax.eval_shape(lambda xs: self.apply({}, xs if len(xs) > 1 else xs[0]), structs)
        return tuple(None if d and d % _ANY_SIZE == 0 else d for d in out.shape)

    def keras_entry(self) -> dict:
        """The entry Keras 3 wrote for this node (without ``inbound_nodes``)."""
        return {"module": _MODULES.get(self.op, "keras.src.ops.numpy"), "class_name": self.op,
                "config": {"name": self.name, **dict(self.config)}, "registered_name": self.op,
                "name": self.name}  # fmt: skip

    @classmethod
    def from_keras_entry(cls, entry: dict, arguments: tuple) -> KerasOp:
        config = {k: _frozen(v) for k, v in entry.get("config", {}).items() if k != "name"}
        return cls(entry.get("class_name"), tuple(sorted(config.items())), arguments,
                   name=entry.get("name", entry.get("config", {}).get("name")))  # fmt: skip
