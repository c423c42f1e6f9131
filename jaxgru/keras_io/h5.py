"""Weights in HDF5, in the two layouts Keras uses, read into ``{layer name: [arrays]}``.

- Keras 3 (``.weights.h5`` and inside ``.keras``): ``layers/<key>/vars/0, 1, ...`` where
  ``<key>`` is the layer's class in snake case with a counter in layer order (``gru``,
  ``gru_1``, ``dense``, ...), not its name; a GRU's arrays sit in ``layers/<key>/cell/vars``,
  a Bidirectional's in ``layers/<key>/forward_layer/cell/vars`` then ``backward_layer``.
- Legacy (``.h5`` by Keras 3 ``model.save`` and by tf_keras 2.x, full model or weights only):
  ``[model_weights/]<name>`` with a ``weight_names`` attribute listing the arrays in
  ``get_weights()`` order, e.g. ``gru/gru_cell/kernel:0``; the ``layer_names`` attribute
  lists the layers.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from jaxgru import layer as protocol
from jaxgru.keras_io.errors import KerasFileError
from jaxgru.model import Sequential


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def is_legacy(f: h5py.File) -> bool:
    """True for the legacy layout (a ``layer_names`` attribute), False for Keras 3's."""
    group = f.get("model_weights", f)
    return "layer_names" in group.attrs


def _read_vars(group: h5py.Group, where: str) -> list[np.ndarray]:
    indices = sorted(int(key) for key in group if key.isdigit())
    if indices != list(range(len(indices))):
        raise KerasFileError(f"{where}: arrays are numbered {indices}, expected 0, 1, ...")
    return [np.asarray(group[str(i)][()]) for i in indices]


def keras3_keys(model: Sequential) -> list[str | None]:
    """Each layer's group under ``layers/`` in Keras 3's layout: class name and a counter, in
    ``model.layers`` order (``None`` for a graph's operation node, which is no Keras layer)."""
    used: dict[str, int] = {}
    keys: list[str | None] = []
    for layer in model.layers:
        if getattr(layer, "keras_operation", False):
            keys.append(None)
            continue
        base = protocol.default_name(layer)
        used[base] = used.get(base, -1) + 1
        keys.append(base if used[base] == 0 else f"{base}_{used[base]}")
    return keys


def read_keras3(f: h5py.File, model: Sequential) -> dict[str, list[np.ndarray]]:
    """The Keras 3 layout -> ``{layer name: arrays}`` for the model's layers with weights.

    A Sequential or functional model keeps each layer under ``layers/<class>_<n>``; a
    subclassed ``keras.Model`` keeps it at the file's root under the attribute name it was
    assigned to (``self.gru = GRU(...)``: ``gru/cell/vars``), so there the jaxgru layer with
    that name is read, never a layer found by position.
    """
    if "layers" in f:
        base, keys = "layers/", keras3_keys(model)
    else:
        base, keys = "", [layer.name for layer in model.layers]
    root = f[base.rstrip("/")] if base else f
    weighted = model.param_shapes()
    arrays: dict[str, list[np.ndarray]] = {}
    expected_groups = set()
    for layer, key in zip(model.layers, keys):
        if layer.name not in weighted or key is None:
            continue
        arrays[layer.name] = []
        for group in protocol.keras_weight_groups(layer):
            path = f"{base}{key}/{group.path}"
            expected_groups.add(path)
            if path not in f:
                hint = (
                    ""
                    if base
                    else (
                        " (a subclassed model's file names each layer by the attribute it was "
                        "assigned to: give the jaxgru layers those names)"
                    )
                )
                raise KerasFileError(
                    f"the weights file lacks '{path}' for layer {layer.name!r}; it holds "
                    f"{sorted(root.keys())}{hint}"
                )
            arrays[layer.name] += _read_vars(f[path], path)
    extra = []
    root.visititems(
        lambda path, obj: (
            extra.append(f"{base}{path}")
            if isinstance(obj, h5py.Dataset)
            and f"{base}{path.rsplit('/', 1)[0]}" not in expected_groups
            else None
        )
    )
    if extra:
        raise KerasFileError(
            f"the weights file holds arrays {extra} that the model has no place for "
            f"(its layers with weights: {list(weighted)})"
        )
    return arrays


def read_legacy(f: h5py.File) -> dict[str, list[np.ndarray]]:
    """The legacy layout -> ``{layer name: arrays in get_weights() order}``."""
    group = f.get("model_weights", f)
    arrays = {}
    for name in map(_text, group.attrs["layer_names"]):
        if name not in group:
            raise KerasFileError(
                f"the weights file lists layer {name!r} but holds no group for it"
            )
        layer_group = group[name]
        names = [_text(n) for n in layer_group.attrs.get("weight_names", [])]
        missing = [n for n in names if n not in layer_group]
        if missing:
            raise KerasFileError(f"layer {name!r}: the weights file lacks arrays {missing}")
        arrays[name] = [np.asarray(layer_group[n][()]) for n in names]
    return arrays


def write_keras3(f: h5py.File, model: Sequential, params: dict) -> None:
    """Write params in the Keras 3 layout, as ``model.save_weights`` does: each layer's
    ``keras_weight_groups``, with an empty ``vars`` group at every level above them."""
    f.create_group("vars")
    layers = f.create_group("layers")
    all_shapes = model.param_shapes()
    for layer, key in zip(model.layers, keras3_keys(model)):
        if key is None:
            continue
        group = layers.create_group(key)
        group.create_group("vars")
        names = all_shapes.get(layer.name, {})  # in the order of get_weights()
        for where in protocol.keras_weight_groups(layer):
            node = group
            for part in where.path.split("/")[:-1]:  # "forward_layer/cell/vars": two levels
                node = node.require_group(part)
                node.require_group("vars")
            values, order = params.get(layer.name, {}), names
            for step in where.params_at:
                values, order = values[step], order[step]
            for i, name in enumerate(order):
                node["vars"].create_dataset(str(i), data=np.asarray(values[name]))
