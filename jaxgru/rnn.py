"""Keras's ``RNN(GRUCell(...))``: the GRU it is, under the class name Keras files give it.

``keras.layers.RNN(keras.layers.GRUCell(units, ...), return_sequences=...)`` computes exactly
what ``keras.layers.GRU(units, ..., return_sequences=...)`` computes, with the same weights,
but Keras saves it as an ``RNN`` entry holding a ``GRUCell`` config, keyed ``rnn`` in its
HDF5 files. ``RNN`` here is a ``GRU`` that reads and writes that form, so a model using it
loads and saves back as it was. ``RNN(StackedRNNCells([...]))`` and cells other than
``GRUCell`` are refused with the fix.

>>> import jax, jaxgru
>>> layer = RNN(4, return_sequences=True)
>>> isinstance(layer, jaxgru.GRU), layer.apply(layer.init(jax.random.key(0), 3),
...                                            jax.numpy.ones((2, 5, 3))).shape
(True, (2, 5, 4))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxgru.gru import GRU
from jaxgru.layer import register_layer

# The options that belong to the RNN wrapper in Keras; the rest are the GRUCell's.
SEQUENCE_FIELDS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                   "zero_output_for_mask")  # fmt: skip


@dataclass(frozen=True)
class RNN(GRU):
    """A ``GRU`` saved as Keras's ``RNN(GRUCell(...))``."""

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> RNN:
        cell = config.get("cell") or {}
        if cell.get("class_name") != "GRUCell":
            found = cell.get("class_name")
            how = (
                "load the stacked cells as one GRU layer each (return_sequences=True between them)"
                if found == "StackedRNNCells"
                else "jaxgru runs GRU cells only"
            )
            raise context.unsupported(f" with the cell {found}; {how}", f"RNN({found})")
        cell_config = dict(cell.get("config", {}))
        merged = {**cell_config, **{k: config[k] for k in SEQUENCE_FIELDS if k in config}}
        merged["name"] = config.get("name")
        return super().from_keras_config(merged, context)

    def keras_config(self, context: Any) -> dict:
        gru = super().keras_config(context)
        cell = {k: v for k, v in gru.items() if k not in SEQUENCE_FIELDS}
        cell.update(name="gru_cell", trainable=True, dtype="float32")
        entry = {"module": "keras.layers", "class_name": "GRUCell", "config": cell,
                 "registered_name": None}  # fmt: skip
        return {**{k: gru[k] for k in SEQUENCE_FIELDS if k in gru}, "cell": entry}


register_layer("RNN", RNN)
