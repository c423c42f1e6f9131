"""Keras functional-model configs (Keras 3 and tf_keras 2.x) <-> ``jaxgru.Model``.

A functional config lists its layers, each with ``inbound_nodes``: one entry per call. Keras 3
writes a call as ``{"args": [...], "kwargs": {...}}`` with every tensor as
``{"class_name": "__keras_tensor__", "config": {"keras_history": [layer, call, output]}}``;
tf_keras writes it as ``[[layer, call, output, kwargs], ...]``, one item per input tensor, with
tensors inside ``kwargs`` as ``[layer, call, output]`` and an RNN's ``initial_state`` as extra
inputs after the sequence. Both become ``graph.Call`` values. A graph that is a plain chain
(one input, one output, each layer called once on the one before, no call arguments) is read as
a ``Sequential``, as before.
"""

from __future__ import annotations

from typing import Any

from jaxgru import layer as protocol
from jaxgru.graph import (
    Call,
    InputSpec,
    Model,
    TensorRef,
    call_sources,
    keras_order,
    numbered_calls,
)
from jaxgru.keras_io.config import (
    _batch_shape,
    check_supported,
    layer_from_config,
    layer_to_config,
    sequential_from_config,
    sequential_to_config,
)
from jaxgru.keras_io.errors import KerasFileError
from jaxgru.keras_ops import TENSOR, KerasOp, fill_arguments, is_op_entry
from jaxgru.model import Sequential

_RECURRENT = ("GRU", "CuDNNGRU", "RNN", "Bidirectional")  # tf_keras: extra inputs are states


def _entry_name(entry: dict) -> str:
    return entry.get("name", entry.get("config", {}).get("name"))


def _is_tf_ref(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
        and all(isinstance(v, int) for v in value[1:])
    )  # fmt: skip


def _refs(value: Any, where: str) -> Any:
    """Keras 3 ``__keras_tensor__`` dicts / tf_keras ``[name, call, index]`` lists -> refs."""
    if isinstance(value, TensorRef):
        return value
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return TensorRef(*value["config"]["keras_history"])
    if _is_tf_ref(value):
        return TensorRef(*value)
    if isinstance(value, (list, tuple)):
        return tuple(_refs(v, where) for v in value)
    if isinstance(value, dict):
        raise KerasFileError(f"{where}: cannot read the call argument {value!r}")
    return value


def _arguments(kwargs: dict, where: str, layer: Any = None) -> tuple:
    """A call's keyword arguments that change what it computes; others are refused.

    ``layer``'s own ``call_arguments`` are kept too (an attention layer's
    ``use_causal_mask``); a ``False`` or ``None`` among them is Keras's default and dropped.
    """
    own = protocol.call_arguments(layer) if layer is not None else ()
    kept = {}
    for key, value in kwargs.items():
        if value is None or (key in own and value is False):
            continue  # Keras's default (a mask of None: the propagated one)
        if key == "return_attention_scores" and value is False:
            continue
        if key in ("initial_state", "mask", *own):
            kept[key] = _refs(value, where)
        elif key == "training":
            kept[key] = bool(value)
        else:
            hint = (
                " (jaxgru's attention layers return the attended values only)"
                if key == "return_attention_scores"
                else ""
            )
            raise KerasFileError(
                f"{where} is called with {key}={value!r} in the graph, which jaxgru does not "
                f"apply{hint}; loading without it would compute another model. Call the layer "
                f"without it, or ask for {key} support"
            )
    return tuple(sorted(kept.items()))


def _named_tensors(layer: Any, args: list, kwargs: dict, where: str) -> tuple[tuple, dict]:
    """For a layer called on several named tensors (``MultiHeadAttention``'s query, value,
    key): ``(the tensors in order, the other keyword arguments)``."""
    names = protocol.call_tensors(layer)
    kwargs = dict(kwargs)
    given = list(args) + [kwargs.pop(name, None) for name in names[len(args) :]]
    while given and given[-1] is None:
        given.pop()
    if len(given) > len(names) or None in given:
        raise KerasFileError(f"{where} is called on {len(given)} tensors; it takes {names}")
    return tuple(_refs(value, where) for value in given), kwargs


def _keras3_call(name: str, node: dict, op: bool, layer: Any) -> tuple[Any, tuple, tuple]:
    """``(inputs, arguments, op positional template)`` of a Keras 3 call node (``layer``: the
    layer called, ``None`` for an operation)."""
    where = f"layer {name!r}"
    args = node.get("args", [])
    if op:  # every positional argument, tensors marked in the template
        flat: list[TensorRef] = []

        def template(value: Any) -> Any:
            ref = _refs(value, where)
            if isinstance(ref, TensorRef):
                flat.append(ref)
                return TENSOR
            if isinstance(value, (list, tuple)):
                return tuple(template(v) for v in value)
            return value

        shape = tuple(template(a) for a in args)
        return (flat[0] if len(flat) == 1 else tuple(flat)), (), shape
    if protocol.call_tensors(layer):
        tensors, kwargs = _named_tensors(layer, args, node.get("kwargs", {}), where)
        return tensors, _arguments(kwargs, where, layer), ()
    if len(args) != 1:
        raise KerasFileError(
            f"{where} is called with {len(args)} positional arguments; jaxgru reads calls on "
            "one tensor or one list of tensors"
        )
    return _refs(args[0], where), _arguments(node.get("kwargs", {}), where, layer), ()


def _tf_keras_call(name: str, class_name: str, node: list, layer: Any) -> tuple[Any, tuple]:
    """``(inputs, arguments)`` of a tf_keras call node (one item per input tensor; a layer
    called on named tensors has the first there and the others in its keyword arguments)."""
    where = f"layer {name!r}"
    refs = [TensorRef(*item[:3]) for item in node]
    kwargs: dict = {}
    for item in node:
        if len(item) > 3 and isinstance(item[3], dict):
            kwargs.update(item[3])
    for unused in ("constants",):
        if kwargs.get(unused) is None:
            kwargs.pop(unused, None)
    if class_name in _RECURRENT and len(refs) > 1:  # the states come as extra inputs
        states = tuple(refs[1:])
        kwargs["initial_state"] = states[0] if len(states) == 1 else states
        refs = refs[:1]
    if protocol.call_tensors(layer):
        inputs, kwargs = _named_tensors(layer, refs, kwargs, where)
        return inputs, _arguments(kwargs, where, layer)
    inputs = refs[0] if len(refs) == 1 else tuple(refs)
    return inputs, _arguments(kwargs, where, layer)


def _outputs(endpoints: Any) -> Any:
    """``["dense", 0, 0]`` (one) or ``[["dense", 0, 0], ...]`` -> a ref or a tuple of refs."""
    if endpoints and isinstance(endpoints[0], str):
        return TensorRef(*endpoints)
    if isinstance(endpoints, dict):
        raise KerasFileError("a functional model with a dict of outputs is not supported")
    return tuple(TensorRef(*e) for e in endpoints)


def _topological(calls: list[Call], inputs: set[str]) -> list[Call]:
    """Calls ordered so every call's inputs are computed first (config order among equals)."""
    done = {(name, 0) for name in inputs}
    ordered: list[Call] = []
    pending = list(numbered_calls(calls))
    while pending:
        ready = [
            k for k, (c, i) in enumerate(pending)
            if all((r.layer, r.call) in done for r in call_sources(c))
            and (i == 0 or (c.layer, i - 1) in done)  # a layer's calls keep their numbers
        ]  # fmt: skip
        if not ready:
            names = [c.layer for c, _ in pending]
            raise KerasFileError(f"the functional graph's calls of {names} cannot be ordered")
        call, index = pending.pop(ready[0])
        ordered.append(call)
        done.add((call.layer, index))
    return ordered


def model_from_functional(body: dict, legacy: bool) -> Model | Sequential:
    """A functional model's ``config`` -> a ``Model`` (a ``Sequential`` when it is a chain)."""
    inputs, layers, calls = [], [], []
    for entry in body.get("layers", []):
        name, class_name = _entry_name(entry), entry.get("class_name")
        nodes = entry.get("inbound_nodes", [])
        if class_name == "InputLayer":
            shape = _batch_shape(entry.get("config", {}))
            if not shape:
                raise KerasFileError(f"input {name!r} does not say its shape")
            dtype = entry["config"].get("dtype", "float32")
            dtype = dtype if isinstance(dtype, str) else "float32"
            inputs.append(InputSpec(name, tuple(shape[1:]), dtype, shape[0]))
            continue
        op = is_op_entry(entry)
        layer = None if op else layer_from_config(entry, legacy)
        templates = []
        for node in nodes:
            if isinstance(node, dict):
                call_inputs, arguments, template = _keras3_call(name, node, op, layer)
                templates.append(template)
            else:
                call_inputs, arguments = _tf_keras_call(name, class_name, node, layer)
            calls.append(Call(name, call_inputs, arguments))
        if op:
            if len(set(templates)) > 1:
                raise KerasFileError(f"operation {name!r} is called with different arguments")
            layer = KerasOp.from_keras_entry(entry, templates[0] if templates else ())
        layers.append(layer)
    by_name = {spec.name: spec for spec in inputs}
    input_refs = _outputs(body["input_layers"])
    input_refs = (input_refs,) if isinstance(input_refs, TensorRef) else input_refs
    try:
        ordered_inputs = tuple(by_name[ref.layer] for ref in input_refs)
    except KeyError as missing:
        raise KerasFileError(
            f"the functional model's input {missing} is not an InputLayer"
        ) from None
    calls = _topological(calls, set(by_name))
    outputs = _outputs(body["output_layers"])
    if legacy and isinstance(outputs, tuple) and len(outputs) == 1:
        outputs = outputs[0]  # tf_keras lists even a single output; its model returns one array
    try:
        model = Model(
            ordered_inputs, outputs, name=body.get("name", "model"), layers=tuple(layers),
            calls=tuple(calls), legacy=legacy,
        )  # fmt: skip
    except (ValueError, TypeError) as error:
        if isinstance(error, KerasFileError):
            raise
        raise KerasFileError(f"the functional model cannot be rebuilt: {error}") from None
    return as_chain(model) or model


def as_chain(model: Model) -> Sequential | None:
    """The ``Sequential`` a graph is, when it is a plain chain; else ``None``."""
    if len(model.inputs) != 1 or not model.single_output or len(model.calls) != len(
        model.layers) or not model.calls:  # fmt: skip
        return None
    previous = TensorRef(model.inputs[0].name)
    for call in model.calls:
        if call.inputs != previous or call.arguments or isinstance(
            model.layer(call.layer), KerasOp) or getattr(
            model.layer(call.layer), "return_state", False):  # fmt: skip
            return None
        previous = TensorRef(call.layer)
    if model.outputs != previous:
        return None
    ordered = [model.layer(call.layer) for call in model.calls]
    spec = model.inputs[0]
    return Sequential(ordered, input_shape=spec.shape, name=model.name,
                      batch_size=spec.batch_size)  # fmt: skip


def in_keras_order(model: Model) -> Model:
    """The same model with ``layers`` in the order Keras 3 keeps them (its HDF5 keys)."""
    names = keras_order(model.calls, model.output_refs, model.inputs)
    rank = {name: i for i, name in enumerate(names)}
    layers = sorted(model.layers, key=lambda item: rank.get(item.name, len(rank)))
    return Model(model.inputs, model.outputs, model.name, tuple(layers), model.calls,
                 model.legacy)  # fmt: skip


def _check_keras3_rules(model: Model) -> None:
    """Refuse to write a tf_keras graph whose meaning Keras 3's rules would change."""
    if not model.legacy:
        return
    if any(dict(c.arguments).get("training") is not None for c in model.calls):
        raise KerasFileError(
            f"model {model.name!r} came from tf_keras, where training= written in a call wins "
            "over predict's; Keras 3 lets predict switch it off, so the file would predict "
            "differently. Export it with tf_keras, or rebuild the calls without training="
        )
    masking = [
        name
        for call in model.calls
        if "initial_state" in call.kwargs and "mask" not in call.kwargs
        for name in _layers_upstream(model, call.inputs)
        if type(model.layer(name)).__name__ == "Masking"
        or getattr(model.layer(name), "mask_zero", False)
    ]
    if masking:
        raise KerasFileError(
            f"model {model.name!r} came from tf_keras, where a GRU given initial_state keeps "
            f"the mask of {masking}; Keras 3 drops it, so the file would compute another "
            "model. Export it with tf_keras, or pass the mask explicitly (mask=) in the graph"
        )  # fmt: skip


def _layers_upstream(model: Model, inputs: Any) -> list[str]:
    """The names of the layers whose calls ``inputs`` depend on (a mask can only come from
    one of them), in the order first met walking back."""
    producer = {(c.layer, i): c for c, i in model.call_indices()}
    found: list[str] = []
    todo = call_sources(Call("", inputs))
    seen: set = set()
    while todo:
        ref = todo.pop()
        key = (ref.layer, ref.call)
        if key in seen or key not in producer:
            continue
        seen.add(key)
        found.append(ref.layer)
        todo.extend(call_sources(producer[key]))
    return list(dict.fromkeys(found))


def _tensor_entry(ref: TensorRef, shapes: dict, dtypes: dict) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(shapes[ref]), "dtype": dtypes.get(ref.layer, "float32"),
                       "keras_history": list(ref)}}  # fmt: skip


def model_to_functional(model: Model) -> dict:
    """A ``Model`` -> the Keras 3 ``config.json`` content of a functional ``.keras`` file."""
    _check_keras3_rules(model)
    if model.batch_size is None and model.initial_states(1):
        raise KerasFileError(
            f"model {model.name!r} has a stateful GRU, which Keras loads only with a fixed batch "
            "size; give its Input a batch_size"
        )
    model = in_keras_order(model)
    shapes = model.tensor_shapes()
    dtypes = {spec.name: spec.dtype for spec in model.inputs}
    dtypes.update({item.name: "bool" for item in model.layers if isinstance(item, KerasOp)})

    def tensors(value: Any) -> Any:
        if isinstance(value, TensorRef):
            return _tensor_entry(value, shapes, dtypes)
        if isinstance(value, (list, tuple)):
            return [tensors(v) for v in value]
        return value

    nodes: dict[str, list] = {item.name: [] for item in model.layers}
    for call in model.calls:
        layer = model.layer(call.layer)
        if isinstance(layer, KerasOp):
            args = fill_arguments(layer.arguments, [tensors(r) for r in call_sources(call)])
            nodes[call.layer].append({"args": args, "kwargs": {}})
        else:
            kwargs = {k: tensors(v) for k, v in call.arguments}
            args = tensors(call.inputs)  # named tensors are positional arguments
            args = args if protocol.call_tensors(layer) else [args]
            nodes[call.layer].append({"args": args, "kwargs": kwargs})
    entries = []
    for spec in model.inputs:
        config = {"batch_shape": [spec.batch_size, *spec.shape], "dtype": spec.dtype,
                  "name": spec.name}  # fmt: skip
        entry = {"module": "keras.layers", "class_name": "InputLayer", "config": config}
        entries.append({**entry, "registered_name": None, "name": spec.name, "inbound_nodes": []})
    for item, in_shape in zip(model.layers, model.layer_input_shapes()):
        if isinstance(item, KerasOp):
            entry = item.keras_entry()
        else:
            entry = layer_to_config(item, in_shape)
            entry["name"] = item.name
        entry["inbound_nodes"] = nodes[item.name]
        entries.append(entry)
    outputs = [list(ref) for ref in model.output_refs]
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": model.name, "trainable": True, "layers": entries,
            "input_layers": [[spec.name, 0, 0] for spec in model.inputs],
            "output_layers": outputs[0] if model.single_output else outputs,
        },
        "registered_name": "Functional",
    }  # fmt: skip


def model_from_config(config: dict, legacy: bool) -> Model | Sequential:
    """A whole-model config ``{"class_name": "Sequential"|"Functional"|"Model", "config"}``;
    every unsupported layer is named at once first.

    Args:
        legacy: the config was written by tf_keras 2.x (its ``hard_sigmoid`` and graph rules
            differ).
    """
    class_name, body = config.get("class_name"), config.get("config", {})
    if class_name not in ("Sequential", "Functional", "Model"):
        raise KerasFileError(
            f"model class {class_name!r} is not supported; jaxgru reads Sequential and "
            "functional models (a subclassed model has no config: build the same model in "
            "jaxgru and read its weights with jaxgru.load_keras_weights)"
        )
    check_supported(body.get("layers", []))
    if class_name == "Sequential":
        return sequential_from_config(body, legacy)
    return model_from_functional(body, legacy)


def model_to_config(model: Model | Sequential) -> dict:
    """A ``Sequential`` or ``Model`` -> the Keras 3 ``config.json`` content of a ``.keras``."""
    if isinstance(model, Sequential):
        return sequential_to_config(model)
    return model_to_functional(model)
