"""Keras model configs (Keras 3 and tf_keras 2.x) <-> jaxgru layers and ``Sequential``.

Reads the JSON that Keras stores in ``config.json`` (``.keras``) or the ``model_config``
attribute (``.h5``), and writes Keras 3 configs that ``keras.models.load_model`` accepts.
Functional models go through ``graph_config`` (a graph that is a chain becomes a ``Sequential``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxgru import activation_layers as _activation_layers  # noqa: F401  (ReLU, Softmax, ...)
from jaxgru import activations, initializers, layer, weight_rules
from jaxgru import layers as _builtin  # noqa: F401  (importing it registers the built-in layers)
from jaxgru import merging as _merging  # noqa: F401  (Concatenate, Add, ...)
from jaxgru import noise as _noise  # noqa: F401  (SpatialDropout1D, GaussianNoise, ...)
from jaxgru import pooling as _pooling  # noqa: F401  (GlobalAveragePooling1D, ...)
from jaxgru import rnn as _rnn  # noqa: F401  (and Keras's RNN(GRUCell))
from jaxgru.keras_io.coverage import refusal_reason
from jaxgru.keras_io.errors import KerasFileError
from jaxgru.keras_ops import OPERATIONS, is_op_entry
from jaxgru.model import Sequential


def _supported() -> str:
    return ", ".join(("InputLayer", *layer.registered_names()))


def _class_of(entry: dict) -> type | None:
    """The jaxgru class a Keras layer entry names (its ``registered_name`` first, for layers
    registered in Keras), or ``None``."""
    return layer.layer_class(entry.get("registered_name")) or layer.layer_class(
        entry.get("class_name")
    )


def _unsupported_parts(entry: dict, where: str = "") -> list[str]:
    """Every layer in ``entry`` (a wrapper's inner layers too) that jaxgru cannot read."""
    class_name, config = entry.get("class_name"), entry.get("config", {})
    name = config.get("name", entry.get("name", "?"))
    if class_name == "InputLayer":
        return []
    if is_op_entry(entry):
        return [] if class_name in OPERATIONS else [
            f"operation {name!r} of class {class_name} is not supported (jaxgru reads the mask "
            f"operations Keras records: {', '.join(sorted(OPERATIONS))})"]  # fmt: skip
    cls = _class_of(entry)
    if cls is None:
        return [f"layer {where}{name!r} of class {class_name} is not supported "
                f"({refusal_reason(class_name)})"]  # fmt: skip
    refused = weight_rules.refused_keys(cls, config)
    parts = [f"layer {where}{name!r} ({class_name}): {weight_rules.refusal(cls, refused)}"
             ] if refused else []  # fmt: skip
    inner = [value for key, value in config.items() if key in ("layer", "backward_layer")]
    return parts + [part for value in inner if isinstance(value, dict)
                    for part in _unsupported_parts(value, f"{name!r} > ")]  # fmt: skip


def check_supported(entries: list[dict]) -> None:
    """One ``KerasFileError`` naming every layer of a model jaxgru cannot read, with what to
    do about each, before anything else is read."""
    parts = [part for entry in entries for part in _unsupported_parts(entry)]
    if parts:
        raise KerasFileError(
            "; ".join(parts) + f"; jaxgru reads {_supported()} in Sequential and "
            "functional models (jaxgru.register_layer adds your own)"
        )


@dataclass(frozen=True)
class KerasContext:
    """What a layer's Keras hooks (``from_keras_config``, ``keras_config``) are handed: the
    Keras-format rules for values that every layer reads the same way.

    ``legacy``: the config was written by tf_keras 2.x; ``class_name`` and ``name``: the entry
    being read or written.
    """

    legacy: bool = False
    class_name: str = ""
    name: str = "?"

    def activation(self, value: Any) -> Any:
        """A Keras activation entry (a name or ``{"class_name": "function", ...}``) -> a name.

        An activation given as a Keras activation layer (``activation=keras.layers.ELU(0.5)``,
        saved as that layer's entry) becomes a ``KerasActivation`` with its arguments; any
        other layer object is refused.
        """
        if isinstance(value, dict):
            class_name = value.get("class_name")
            if class_name not in (None, "function"):
                args = {k: v for k, v in value.get("config", {}).items()
                        if k not in ("name", "trainable", "dtype")}  # fmt: skip
                if class_name == "Activation":
                    return self.activation(args.get("activation"))
                try:
                    return activations.KerasActivation(class_name, tuple(sorted(args.items())))
                except ValueError as error:
                    raise KerasFileError(
                        f"layer {self.name!r} ({self.class_name}) has the activation "
                        f"{class_name}({args}), a Keras layer object: {error}"
                    ) from None
            value = value.get("config", value)
            value = value.get("name", value) if isinstance(value, dict) else value
        if self.legacy and value == "hard_sigmoid":
            return "hard_sigmoid_tf_keras"  # tf_keras's hard_sigmoid is clip(0.2 x + 0.5, 0, 1)
        return value

    def initializer(self, value: Any, default: str) -> Any:
        """A Keras initializer entry -> its name, or a ``KerasInitializer`` holding the
        arguments it was given (``Constant(0.01)``); they only matter for re-initialising."""
        if value is None:
            return default
        name = value.get("class_name") if isinstance(value, dict) else value
        args = value.get("config", {}) if isinstance(value, dict) else {}
        args = {k: v for k, v in (args or {}).items() if k != "seed"}
        try:
            initializers.get(name)
            known = True
        except (ValueError, TypeError):
            known = False
        defaults = initializers.KerasInitializer(str(name)).config
        args = {k: v for k, v in args.items() if k not in defaults or defaults[k] != v}
        if known and not args:
            return name
        module = value.get("module", "keras.initializers") if isinstance(value, dict) else None
        return initializers.KerasInitializer(str(name), tuple(sorted(args.items())), module)

    def layer(self, entry: dict) -> Any:
        """A nested layer entry (a Bidirectional's ``layer``) -> a jaxgru layer."""
        return layer_from_config(entry, self.legacy)

    def exportable(self, value: Any, what: str) -> Any:
        """``value`` (an activation or initializer) as Keras 3 can read it, or an error."""
        if isinstance(value, initializers.KerasInitializer):
            return {"module": value.module, "class_name": value.class_name,
                    "config": value.config, "registered_name": None}  # fmt: skip
        if isinstance(value, activations.KerasActivation):
            config = {"name": value.class_name.lower(), "trainable": True, "dtype": "float32"}
            return {"module": "keras.layers", "class_name": value.class_name,
                    "config": {**config, **value.config}, "registered_name": None}  # fmt: skip
        if value is not None and not isinstance(value, str):
            raise KerasFileError(
                f"layer {self.name!r}: {what} {value!r} is a Python callable; only Keras names "
                "can be written to a Keras file"
            )
        if value == "hard_sigmoid_tf_keras":
            raise KerasFileError(
                f"layer {self.name!r}: {what} 'hard_sigmoid_tf_keras' (tf_keras's "
                "clip(0.2x+0.5)) has no Keras 3 equivalent, so Keras 3 could not reproduce "
                "this model"
            )
        return value

    def unsupported(self, why: str = "", class_name: str | None = None) -> KerasFileError:
        """The refusal of this entry (``why``: e.g. ``" with time_major=True"``)."""
        return KerasFileError(
            f"layer {self.name!r} of class {class_name or self.class_name} is not supported"
            f"{why}; jaxgru reads {_supported()} in Sequential and functional models"
            " (jaxgru.register_layer adds your own)"
        )


def layer_from_config(entry: dict, legacy: bool) -> Any:
    """One Keras layer entry ``{"class_name", "config"}`` -> a jaxgru layer, through the
    registry (``registered_name`` first, for layers registered in Keras)."""
    class_name, config = entry.get("class_name"), entry.get("config", {})
    name = config.get("name", entry.get("name"))
    context = KerasContext(legacy, str(class_name), name or "?")
    cls = _class_of(entry)
    if cls is None:
        raise context.unsupported()
    _check_dtype_policy(name, class_name, config.get("dtype"))
    try:
        return weight_rules.from_keras(
            cls.from_keras_config({**config, "name": name}, context), config
        )
    except KeyError as missing:
        raise KerasFileError(f"layer {name!r} ({class_name}) config lacks {missing}") from None
    except (ValueError, TypeError) as error:
        if isinstance(error, KerasFileError):
            raise
        raise KerasFileError(f"layer {name!r} ({class_name}): {error}") from None


def _check_dtype_policy(name: str, class_name: str, dtype: Any) -> None:
    """Refuse a dtype policy jaxgru does not reproduce (it computes in the params' float32)."""
    policy = dtype
    while isinstance(policy, dict):  # Keras 3 DTypePolicy / tf_keras Policy entries
        policy = policy.get("config", {}).get("name")
    if policy not in (None, "float32"):
        raise KerasFileError(
            f"layer {name!r} ({class_name}) uses the dtype policy {policy!r}; jaxgru computes "
            "in float32 and would not reproduce Keras's outputs under it. Rebuild the model "
            "under keras.mixed_precision.set_global_policy('float32'), copy the weights "
            "(set_weights) and save it again"
        )


def _batch_shape(config: dict) -> list | None:
    return config.get("batch_shape") or config.get("batch_input_shape")


def sequential_from_config(body: dict, legacy: bool) -> Sequential:
    """A Keras ``Sequential``'s ``config`` -> a ``Sequential``.

    Args:
        legacy: the config was written by tf_keras 2.x (its ``hard_sigmoid`` differs).
    """
    entries = [e for e in body.get("layers", []) if e.get("class_name") != "InputLayer"]
    inputs = [e for e in body.get("layers", []) if e.get("class_name") == "InputLayer"]
    batch_shape = _batch_shape(inputs[0]["config"]) if inputs else None
    batch_shape = batch_shape or (entries and _batch_shape(entries[0].get("config", {})))
    batch_shape = batch_shape or body.get("build_input_shape")
    if not batch_shape:
        raise KerasFileError("the model config does not say its input shape")
    layers = [layer_from_config(entry, legacy) for entry in entries]
    try:
        return Sequential(
            layers,
            input_shape=tuple(batch_shape[1:]),
            name=body.get("name", "model"),
            batch_size=batch_shape[0],
        )
    except (ValueError, TypeError) as error:
        raise KerasFileError(f"the model cannot be rebuilt: {error}") from None


def _base_config(item: Any) -> dict:
    """The keys every Keras layer config starts with, less those a class's ``get_config``
    leaves out (``keras_base_keys``: Keras's SpatialDropout1D writes no ``trainable`` and
    refuses one)."""
    base = {"name": item.name, "trainable": True, "dtype": "float32"}
    keys = getattr(item, "keras_base_keys", tuple(base))
    return {k: v for k, v in base.items() if k in keys}


def layer_to_config(item: Any, input_shape: tuple | None) -> dict:
    """A jaxgru layer -> the Keras 3 layer entry that ``keras.models.load_model`` reads; a
    nested layer in its config (a Bidirectional's GRUs) becomes an entry too."""
    try:
        keras_name = layer.keras_name(item)
        body = item.keras_config(KerasContext(False, keras_name, item.name))
        body.update(weight_rules.to_keras(item))
    except (ValueError, TypeError) as error:
        if isinstance(error, KerasFileError):
            raise
        raise KerasFileError(
            f"cannot write layer {item.name!r} to a Keras file: {error}"
        ) from None
    inner_shape = input_shape
    if input_shape is not None and hasattr(item, "wrapped_input_shape"):
        inner_shape = item.wrapped_input_shape(tuple(input_shape))
    body = {key: layer_to_config(v, inner_shape) if isinstance(v, layer.Layer) else v
            for key, v in body.items()}  # fmt: skip
    registered = ">" in keras_name  # a layer registered in Keras: "package>Class"
    entry = {
        "module": None if registered else "keras.layers",
        "class_name": layer.keras_class_name(item),
        "config": {**_base_config(item), **body},
        "registered_name": keras_name if registered else None,
    }
    if input_shape is not None:
        build = getattr(item, "keras_build_config", None)  # a layer Keras builds from several
        entry["build_config"] = (build(input_shape) if build is not None
                                 else {"input_shape": list(input_shape)})  # fmt: skip
    return entry


def sequential_to_config(model: Sequential) -> dict:
    """A ``Sequential`` -> the Keras 3 ``config.json`` content of a ``.keras`` file."""
    if model.batch_size is None and model.initial_states(1):
        raise KerasFileError(
            f"model {model.name!r} has a stateful GRU, which Keras loads only with a fixed batch "
            "size; build it as Sequential(..., batch_size=N) (a loaded Keras model keeps its "
            "batch size)"
        )
    batch_shape = [model.batch_size, *model.input_shape]
    input_dtype = layer.input_dtype(model.layers[0])
    input_layer = {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {"batch_shape": batch_shape, "dtype": input_dtype, "name": "input_layer"},
        "registered_name": None,
    }
    layers = [input_layer] + [
        layer_to_config(item, shape)
        for item, shape in zip(model.layers, model.layer_input_shapes())
    ]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": model.name, "trainable": True, "layers": layers},
        "registered_name": None,
        "build_config": {"input_shape": batch_shape},
    }
