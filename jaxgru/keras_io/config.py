"""Keras model configs (Keras 3 and tf_keras 2.x) <-> jaxgru layers and ``Sequential``.

Reads the JSON that Keras stores in ``config.json`` (``.keras``) or the ``model_config``
attribute (``.h5``), and writes Keras 3 configs that ``keras.models.load_model`` accepts.
A functional model whose graph is a chain becomes a ``Sequential`` with the same layer names.
"""

from __future__ import annotations

from typing import Any

from jaxgru import initializers
from jaxgru.gru import GRU
from jaxgru.keras_io.errors import KerasFileError
from jaxgru.layers import Bidirectional, Dense, Dropout, Embedding, Masking
from jaxgru.model import Sequential

SUPPORTED_LAYERS = (
    "InputLayer", "GRU", "CuDNNGRU", "Dense", "Embedding", "Masking", "Dropout", "Bidirectional",
)  # fmt: skip
_GRU_FIELDS = (
    "units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
    "recurrent_initializer", "bias_initializer", "dropout", "recurrent_dropout",
    "return_sequences", "return_state", "go_backwards", "stateful", "unroll", "reset_after",
    "zero_output_for_mask",
)  # fmt: skip


def _unsupported(name: str, class_name: str, why: str = "") -> KerasFileError:
    return KerasFileError(
        f"layer {name!r} of class {class_name} is not supported{why}; jaxgru reads "
        f"{', '.join(SUPPORTED_LAYERS)} in a Sequential or a chain-shaped functional model"
    )


def _activation(value: Any, legacy: bool) -> Any:
    if isinstance(value, dict):  # {"class_name": "function", "config": "tanh"} or similar
        value = value.get("config", value)
        value = value.get("name", value) if isinstance(value, dict) else value
    if legacy and value == "hard_sigmoid":
        return "hard_sigmoid_tf_keras"  # tf_keras's hard_sigmoid is clip(0.2 x + 0.5, 0, 1)
    return value


def _initializer(value: Any, default: str) -> str:
    """Initializers only matter for re-initialising; unknown or customised ones fall back."""
    name = value.get("class_name") if isinstance(value, dict) else value
    try:
        initializers.get(name)
    except (ValueError, TypeError):
        return default
    return name


def _gru(config: dict, class_name: str, legacy: bool) -> GRU:
    if config.get("time_major"):
        raise _unsupported(config.get("name", "?"), class_name, " with time_major=True")
    kwargs = {key: config[key] for key in _GRU_FIELDS if key in config}
    kwargs["units"] = config["units"]  # required: a KeyError names it
    if class_name == "CuDNNGRU":  # always reset_after with sigmoid/tanh; weights converted later
        kwargs.update(reset_after=True, activation="tanh", recurrent_activation="sigmoid")
    for key in ("activation", "recurrent_activation"):
        if key in kwargs:
            kwargs[key] = _activation(kwargs[key], legacy)
    defaults = GRU(1)
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        if key in kwargs:
            kwargs[key] = _initializer(kwargs[key], getattr(defaults, key))
    kwargs["unroll"] = bool(kwargs.get("unroll", False))
    return GRU(name=config.get("name"), **kwargs)


def layer_from_config(entry: dict, legacy: bool) -> Any:
    """One Keras layer entry ``{"class_name", "config"}`` -> a jaxgru layer."""
    class_name, config = entry.get("class_name"), entry.get("config", {})
    name = config.get("name", entry.get("name", "?"))
    try:
        if class_name in ("GRU", "CuDNNGRU"):
            return _gru(config, class_name, legacy)
        if class_name == "Dense":
            return Dense(
                config["units"], activation=_activation(config.get("activation"), legacy),
                use_bias=config.get("use_bias", True), name=name,
            )  # fmt: skip
        if class_name == "Embedding":
            return Embedding(
                config["input_dim"], config["output_dim"],
                mask_zero=config.get("mask_zero", False), name=name,
            )  # fmt: skip
        if class_name == "Masking":
            return Masking(mask_value=config.get("mask_value", 0.0), name=name)
        if class_name == "Dropout":
            if config.get("noise_shape") is not None:
                raise _unsupported(name, class_name, " with a noise_shape")
            return Dropout(config["rate"], name=name)
        if class_name == "Bidirectional":
            inner = config["layer"]
            if inner.get("class_name") not in ("GRU", "CuDNNGRU"):
                raise _unsupported(name, f"Bidirectional({inner.get('class_name')})")
            return Bidirectional(
                layer_from_config(inner, legacy), merge_mode=config.get("merge_mode", "concat"),
                name=name,
            )  # fmt: skip
    except KeyError as missing:
        raise KerasFileError(f"layer {name!r} ({class_name}) config lacks {missing}") from None
    except (ValueError, TypeError) as error:
        if isinstance(error, KerasFileError):
            raise
        raise KerasFileError(f"layer {name!r} ({class_name}): {error}") from None
    raise _unsupported(name, class_name)


def _batch_shape(config: dict) -> list | None:
    return config.get("batch_shape") or config.get("batch_input_shape")


def _inbound_names(node: Any) -> list[str]:
    """The layer names feeding one call node (Keras 3 dict nodes or tf_keras list nodes)."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        names: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                if value.get("class_name") == "__keras_tensor__":
                    names.append(value["config"]["keras_history"][0])
                else:
                    for item in value.values():
                        walk(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item)

        walk(node.get("args", []))
        return names
    return [inbound[0] for inbound in node]  # tf_keras: [[name, node_index, tensor_index, {}]]


def _single(endpoints: Any, what: str) -> str:
    """``["dense", 0, 0]`` or ``[["dense", 0, 0]]`` -> ``"dense"``; several -> error."""
    if endpoints and isinstance(endpoints[0], str):
        endpoints = [endpoints]
    if len(endpoints) != 1:
        names = [e[0] for e in endpoints]
        raise KerasFileError(
            f"functional model has {len(endpoints)} {what} {names}; jaxgru loads only a chain "
            "with one input and one output"
        )
    return endpoints[0][0]


def _chain(config: dict) -> tuple[list[dict], list]:
    """Order a functional model's layers from input to output, or explain why it is no chain."""
    entries = {entry.get("name", entry["config"].get("name")): entry for entry in config["layers"]}
    first = _single(config["input_layers"], "inputs")
    last = _single(config["output_layers"], "outputs")
    consumers: dict[str, list[str]] = {name: [] for name in entries}
    for name, entry in entries.items():
        nodes = entry.get("inbound_nodes", [])
        sources = [source for node in nodes for source in _inbound_names(node)]
        if name != first and (len(nodes) != 1 or len(sources) != 1):
            raise KerasFileError(
                f"branching functional graph: layer {name!r} takes {len(sources)} inputs "
                f"{sources}; jaxgru loads only chains (each layer fed by the one before)"
            )
        for source in sources:
            consumers.setdefault(source, []).append(name)
    order, name = [first], first
    while name != last:
        following = consumers.get(name, [])
        if len(following) != 1:
            raise KerasFileError(
                f"branching functional graph: layer {name!r} feeds {len(following)} layers "
                f"{following}; jaxgru loads only chains"
            )
        name = following[0]
        order.append(name)
    unused = sorted(set(entries) - set(order))
    if unused:
        raise KerasFileError(f"functional graph has layers off the chain: {unused}")
    input_entry = entries[first]
    if input_entry.get("class_name") != "InputLayer":
        raise KerasFileError(f"functional model's first layer {first!r} is not an InputLayer")
    return [entries[name] for name in order[1:]], _batch_shape(input_entry["config"])


def model_from_config(config: dict, legacy: bool) -> Sequential:
    """A whole-model config ``{"class_name": "Sequential"|"Functional"|"Model", "config"}``.

    Args:
        legacy: the config was written by tf_keras 2.x (its ``hard_sigmoid`` differs).
    """
    class_name, body = config.get("class_name"), config.get("config", {})
    if class_name == "Sequential":
        entries = [e for e in body.get("layers", []) if e.get("class_name") != "InputLayer"]
        inputs = [e for e in body.get("layers", []) if e.get("class_name") == "InputLayer"]
        batch_shape = _batch_shape(inputs[0]["config"]) if inputs else None
        batch_shape = batch_shape or (entries and _batch_shape(entries[0].get("config", {})))
        batch_shape = batch_shape or body.get("build_input_shape")
    elif class_name in ("Functional", "Model"):
        entries, batch_shape = _chain(body)
    else:
        raise KerasFileError(
            f"model class {class_name!r} is not supported; jaxgru reads Sequential models and "
            "functional models whose graph is a chain"
        )
    if not batch_shape:
        raise KerasFileError("the model config does not say its input shape")
    layers = [layer_from_config(entry, legacy) for entry in entries]
    try:
        return Sequential(
            layers, input_shape=tuple(batch_shape[1:]), name=body.get("name", "model")
        )
    except (ValueError, TypeError) as error:
        raise KerasFileError(f"the model cannot be rebuilt: {error}") from None


def _entry(class_name: str, config: dict, input_shape: tuple | None) -> dict:
    entry = {"module": "keras.layers", "class_name": class_name, "config": config}
    entry["registered_name"] = None
    if input_shape is not None:
        entry["build_config"] = {"input_shape": list(input_shape)}
    return entry


def _exportable(value: Any, what: str, layer_name: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise KerasFileError(
            f"layer {layer_name!r}: {what} {value!r} is a Python callable; only Keras names can "
            "be written to a Keras file"
        )
    if value == "hard_sigmoid_tf_keras":
        raise KerasFileError(
            f"layer {layer_name!r}: {what} 'hard_sigmoid_tf_keras' (tf_keras's clip(0.2x+0.5)) "
            "has no Keras 3 equivalent, so Keras 3 could not reproduce this model"
        )
    return value


def _gru_config(layer: GRU) -> dict:
    config = {"name": layer.name, "trainable": True, "dtype": "float32"}
    for key in _GRU_FIELDS:
        value = getattr(layer, key)
        if key in ("activation", "recurrent_activation") or key.endswith("_initializer"):
            value = _exportable(value, key, layer.name)
        config[key] = value
    config["activation"] = config["activation"] or "linear"
    config["unroll"] = layer.unroll is True
    return config


def layer_to_config(layer: Any, input_shape: tuple) -> dict:
    """A jaxgru layer -> the Keras 3 layer entry that ``keras.models.load_model`` reads."""
    base = {"name": layer.name, "trainable": True, "dtype": "float32"}
    if isinstance(layer, GRU):
        return _entry("GRU", _gru_config(layer), input_shape)
    if isinstance(layer, Dense):
        activation = _exportable(layer.activation, "activation", layer.name) or "linear"
        config = {**base, "units": layer.units, "activation": activation}
        return _entry("Dense", {**config, "use_bias": layer.use_bias}, input_shape)
    if isinstance(layer, Embedding):
        config = {**base, "input_dim": layer.input_dim, "output_dim": layer.output_dim}
        return _entry("Embedding", {**config, "mask_zero": layer.mask_zero}, input_shape)
    if isinstance(layer, Masking):
        return _entry("Masking", {**base, "mask_value": layer.mask_value}, input_shape)
    if isinstance(layer, Dropout):
        return _entry("Dropout", {**base, "rate": layer.rate}, input_shape)
    if isinstance(layer, Bidirectional):
        config = {
            **base,
            "merge_mode": layer.merge_mode,
            "layer": _entry("GRU", _gru_config(layer.forward_layer), input_shape),
            "backward_layer": _entry("GRU", _gru_config(layer.backward_layer), input_shape),
        }
        return _entry("Bidirectional", config, input_shape)
    raise KerasFileError(f"cannot write layer {layer!r} to a Keras file")


def model_to_config(model: Sequential) -> dict:
    """A ``Sequential`` -> the Keras 3 ``config.json`` content of a ``.keras`` file."""
    batch_shape = [None, *model.input_shape]
    input_dtype = "int32" if isinstance(model.layers[0], Embedding) else "float32"
    input_layer = {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {"batch_shape": batch_shape, "dtype": input_dtype, "name": "input_layer"},
        "registered_name": None,
    }
    layers = [input_layer] + [
        layer_to_config(layer, shape)
        for layer, shape in zip(model.layers, model.layer_input_shapes())
    ]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": model.name, "trainable": True, "layers": layers},
        "registered_name": None,
        "build_config": {"input_shape": batch_shape},
    }
