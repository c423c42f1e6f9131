"""Keras's ``RNN(GRUCell(...))``: the GRU it is, under the class name Keras files give it.

``keras.layers.RNN(keras.layers.GRUCell(units, ...), return_sequences=...)`` computes exactly
what ``keras.layers.GRU(units, ..., return_sequences=...)`` computes, with the same weights,
but Keras saves it as an ``RNN`` entry holding a ``GRUCell`` config, keyed ``rnn`` in its
HDF5 files. ``RNN`` here is a ``GRU`` that reads and writes that form, so a model using it
loads and saves back as it was.

``keras.layers.RNN(keras.layers.StackedRNNCells([GRUCell(a), GRUCell(b), ...]))`` runs the
cells one after the other at every step. That is exactly a stack of GRUs, each but the last
with ``return_sequences=True`` (a masked step keeps every cell's state and repeats its
output, as in the stack), which is what ``StackedGRUCells`` computes; it reads and writes
Keras's form, with each cell's params under the key Keras's HDF5 file gives it
(``gru_cell``, ``gru_cell_1``, ...). Cells other than ``GRUCell`` are refused.

>>> import jax, jaxgru
>>> layer = RNN(4, return_sequences=True)
>>> isinstance(layer, jaxgru.GRU), layer.apply(layer.init(jax.random.key(0), 3),
...                                            jax.numpy.ones((2, 5, 3))).shape
(True, (2, 5, 4))
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxgru import weight_rules
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import GraphCallable
from jaxgru.gru import GRU
from jaxgru.layer import KerasVars, register_layer, register_save_name

# The options that belong to the RNN wrapper in Keras; the rest are the GRUCell's.
SEQUENCE_FIELDS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                   "zero_output_for_mask")  # fmt: skip


@dataclass(frozen=True)
class RNN(GRU):
    """A ``GRU`` saved as Keras's ``RNN(GRUCell(...))``; its cell's regularizers and
    constraints are not read (a file that sets them is refused: load it as a ``GRU``)."""

    keras_weight_options: ClassVar[dict[str, str]] = {}
    keras_activity_regularizer: ClassVar[bool] = False

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> RNN | StackedGRUCells:
        cell = config.get("cell") or {}
        sequence = {k: config[k] for k in SEQUENCE_FIELDS if k in config}
        if cell.get("class_name") == "StackedRNNCells":
            cells = cell.get("config", {}).get("cells", [])
            found = sorted({c.get("class_name") for c in cells} - {"GRUCell"})
            if found or not cells:
                raise context.unsupported(f" with the cells {found}; jaxgru runs GRU cells only",
                                          "RNN(StackedRNNCells)")  # fmt: skip
            grus = tuple(_cell_gru(c.get("config", {}), context) for c in cells)
            return StackedGRUCells(grus, name=config.get("name"),
                                   **{k: bool(v) for k, v in sequence.items()})  # fmt: skip
        if cell.get("class_name") != "GRUCell":
            found = cell.get("class_name")
            raise context.unsupported(f" with the cell {found}; jaxgru runs GRU cells only",
                                      f"RNN({found})")  # fmt: skip
        _refuse_cell_rules(cell.get("config", {}), context)
        return super().from_keras_config({**cell.get("config", {}), **sequence,
                                          "name": config.get("name")}, context)  # fmt: skip

    def keras_config(self, context: Any) -> dict:
        gru = super().keras_config(context)
        return {**{k: gru[k] for k in SEQUENCE_FIELDS if k in gru},
                "cell": _cell_entry(gru, "gru_cell")}  # fmt: skip


def _cell_gru(cell_config: dict, context: Any) -> GRU:
    """A ``GRUCell`` config -> the GRU holding its settings (the sequence fields default)."""
    _refuse_cell_rules(cell_config, context)
    return GRU.from_keras_config({**cell_config, "name": None}, context)


def _refuse_cell_rules(cell_config: dict, context: Any) -> None:
    """Refuse a ``GRUCell`` that sets regularizers or constraints (not read here)."""
    found = weight_rules.refused_keys(RNN, cell_config)
    if found:
        raise context.unsupported(
            f" with {', '.join(found)} on its GRUCell, which jaxgru does not apply there (fit "
            "would train another objective); build it as keras.layers.GRU, which jaxgru "
            "regularizes as Keras does"
        )


def _cell_entry(gru_config: dict, name: str) -> dict:
    """A GRU's Keras config -> the ``GRUCell`` entry Keras nests in an RNN."""
    cell = {k: v for k, v in gru_config.items() if k not in SEQUENCE_FIELDS}
    cell.update(name=name, trainable=True, dtype="float32")
    return {"module": "keras.layers", "class_name": "GRUCell", "config": cell,
            "registered_name": None}  # fmt: skip


@dataclass(frozen=True)
class StackedGRUCells(GraphCallable):
    """Keras's ``RNN(StackedRNNCells([GRUCell, ...]))``: ``cells`` (GRUs holding each cell's
    settings; their own sequence fields are ignored) run in turn at every step.

    Params: ``{"gru_cell": {...}, "gru_cell_1": {...}, ...}``, each a GRU's.
    """

    cells: tuple
    _: KW_ONLY
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    unroll: bool = False
    zero_output_for_mask: bool = False
    name: str | None = None

    input_ndim: ClassVar[int] = 3

    def __post_init__(self) -> None:
        cells = tuple(self.cells)
        if not cells or not all(isinstance(c, GRU) for c in cells):
            raise ConfigError("StackedGRUCells needs one GRU or more (each cell's settings)")
        object.__setattr__(self, "cells", cells)

    @property
    def keys(self) -> list[str]:
        """Each cell's key, as Keras 3's HDF5 file names it: ``gru_cell``, ``gru_cell_1``."""
        return ["gru_cell", *(f"gru_cell_{i}" for i in range(1, len(self.cells)))]

    def layers(self) -> list[GRU]:
        """The stack of GRUs this computes, in order."""
        last = len(self.cells) - 1
        return [
            dataclasses.replace(
                cell, return_sequences=self.return_sequences if i == last else True,
                return_state=self.return_state, go_backwards=self.go_backwards and i == 0,
                stateful=False, unroll=self.unroll,
                zero_output_for_mask=self.zero_output_for_mask if i == last else False,
            )
            for i, cell in enumerate(self.cells)
        ]  # fmt: skip

    def _input_dims(self, input_dim: int) -> list[int]:
        return [input_dim, *(cell.units for cell in self.cells[:-1])]

    def param_shapes(self, input_dim: int) -> dict:
        return {key: cell.param_shapes(dim) for key, cell, dim in
                zip(self.keys, self.cells, self._input_dims(input_dim))}  # fmt: skip

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> dict:
        keys = jax.random.split(key, len(self.cells))
        return {name: cell.init(k, dim, dtype) for name, cell, k, dim in
                zip(self.keys, self.cells, keys, self._input_dims(input_dim))}  # fmt: skip

    def apply(self, params: dict, x: Any, mask=None, training=False, rng=None,
              initial_state=None) -> Any:  # fmt: skip
        """``x (batch, time, features)`` -> the last cell's output; with ``return_state``,
        ``(output, h_1, ..., h_n)`` (each ``(batch, units_k)``), as Keras's."""
        layers = self.layers()
        if initial_state is not None and (
            not isinstance(initial_state, (list, tuple)) or len(initial_state) != len(layers)
        ):
            raise DataError(
                f"RNN {self.name!r} of {len(layers)} stacked cells takes initial_state as a "
                f"list of {len(layers)} states, one per cell"
            )
        keys = [None] * len(layers) if rng is None else list(jax.random.split(rng, len(layers)))
        states = []
        for i, (gru, key) in enumerate(zip(layers, keys)):
            h0 = None if initial_state is None else initial_state[i]
            # After a first cell that went backwards, the sequence is in reversed time order.
            step_mask = mask if mask is None or i == 0 or not self.go_backwards else jnp.flip(
                jnp.asarray(mask), axis=1)  # fmt: skip
            y = gru.apply(params[self.keys[i]], x, h0, mask=step_mask, training=training,
                          rng=key)  # fmt: skip
            if self.return_state:
                y, h = y
                states.append(h)
            x = y
        return (x, *states) if self.return_state else x

    def compute_mask(self, x: Any, mask: Any) -> Any:
        return mask if self.return_sequences else None

    def output_shape(self, input_shape: tuple) -> tuple | list:
        batch, time = input_shape[0], input_shape[1]
        units = self.cells[-1].units
        shape = (batch, time, units) if self.return_sequences else (batch, units)
        if not self.return_state:
            return shape
        return [shape, *((batch, cell.units) for cell in self.cells)]

    def init_state(self, batch_size: int, dtype: Any = jnp.float32) -> dict | None:
        """A ``stateful`` stack carries every cell's ``(batch, units)`` state."""
        if not self.stateful:
            return None
        return {key: jnp.zeros((batch_size, cell.units), dtype)
                for key, cell in zip(self.keys, self.cells)}  # fmt: skip

    def apply_stateful(self, params: dict, x: Any, state: dict, *, mask=None, training=False,
                       rng=None) -> tuple[Any, dict]:  # fmt: skip
        carrying = dataclasses.replace(self, return_state=True)
        y, *h = carrying.apply(params, x, mask=mask, training=training, rng=rng,
                               initial_state=[state[k] for k in self.keys])  # fmt: skip
        return y, dict(zip(self.keys, h))

    def keras_weight_groups(self) -> tuple[KerasVars, ...]:
        return tuple(KerasVars(f"cell/cells/{key}/vars", (key,)) for key in self.keys)

    def from_keras_arrays(self, arrays: list, legacy: bool = False) -> list:
        out, start = [], 0
        for cell in self.cells:
            n = len(cell.param_shapes(1))
            out += cell.from_keras_arrays(arrays[start : start + n], legacy)
            start += n
        return out

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Any:
        return RNN.from_keras_config(config, context)

    def keras_config(self, context: Any) -> dict:
        cells = [_cell_entry(cell.keras_config(context), key)
                 for cell, key in zip(self.cells, self.keys)]  # fmt: skip
        stacked = {"module": "keras.layers", "class_name": "StackedRNNCells",
                   "config": {"name": "stacked_rnn_cells", "trainable": True,
                              "dtype": "float32", "cells": cells},
                   "registered_name": None}  # fmt: skip
        return {**{k: getattr(self, k) for k in SEQUENCE_FIELDS}, "cell": stacked}


register_layer("RNN", RNN)
register_save_name("RNN", StackedGRUCells)
