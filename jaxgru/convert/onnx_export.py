"""A jaxgru ``Sequential`` as an ONNX graph built on ONNX's own ``GRU`` operator.

ONNX's GRU orders gates ``z | r | h`` as Keras does and stores matrices transposed, one slice
per direction::

    W (dirs, 3u, input) = kernel.T          R (dirs, 3u, u) = recurrent_kernel.T
    B (dirs, 6u)        = [b_x, b_h]   (reset_after=True)   or   [bias, 0]   (False)
    linear_before_reset = 1 if reset_after else 0

A ``Bidirectional`` is one GRU node with ``direction="bidirectional"``; ``go_backwards`` is
``direction="reverse"`` with the outputs put in Keras's processing order. A mask (from
``Masking`` or ``Embedding(mask_zero=True)``) becomes ``sequence_lens``: ONNX counts the
valid steps, so masks must be right padding (valid steps first), which is how padded batches
are built. ``Dense`` is ``MatMul`` + ``Add`` + its activation; ``Dropout`` and the noise layers
are the identity.

Around the GRUs: ``Conv1D`` is ``Conv`` between transposes (ONNX reads channels first), Keras's
``same`` padding is ``SAME_UPPER`` and ``causal`` a left pad; the 1-D pools are ``MaxPool`` and
``AveragePool`` (real steps only at the ends); ``BatchNormalization`` is its inference affine
map as constants and ``LayerNormalization`` ONNX's operator (last axis); ``PReLU``,
``Flatten``, ``Permute``, ``Reshape``, the global pools and ``TimeDistributed(Dense)`` map to
one operator each. Anything else (``Conv2D``, a masked average, ``rms_scaling``, another axis)
is refused with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxgru._files import atomic_write
from jaxgru.activation_layers import ELU, Activation, LeakyReLU, PReLU, ReLU, Softmax
from jaxgru.activations import KerasActivation
from jaxgru.convert._common import (
    ConversionError,
    inner_gru,
    numpy_f32,
    require,
    same_activation,
)
from jaxgru.convolution import Conv1D
from jaxgru.gru import GRU
from jaxgru.layer import input_dtype
from jaxgru.layers import Bidirectional, Dense, Dropout, Embedding, Masking
from jaxgru.model import Sequential
from jaxgru.noise import AlphaDropout, GaussianDropout, GaussianNoise, SpatialDropout1D
from jaxgru.normalization import BatchNormalization, LayerNormalization
from jaxgru.pooling import (
    AveragePooling1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    MaxPooling1D,
)
from jaxgru.reshaping import Flatten, Permute, Reshape
from jaxgru.rnn import RNN
from jaxgru.time_distributed import TimeDistributed

OPSET = 17

# Keras activation -> (ONNX GRU activation, alpha, beta); alpha/beta None for the defaults.
_GRU_ACTIVATIONS = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1 / 6, 0.5),
    "hard_sigmoid_tf_keras": ("HardSigmoid", 0.2, 0.5),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
}

# Keras activation -> (ONNX op, attributes) applied after a Dense.
_DENSE_ACTIVATIONS = {
    "sigmoid": ("Sigmoid", {}),
    "tanh": ("Tanh", {}),
    "relu": ("Relu", {}),
    "elu": ("Elu", {"alpha": 1.0}),
    "selu": ("Selu", {}),
    "softplus": ("Softplus", {}),
    "softsign": ("Softsign", {}),
    "exponential": ("Exp", {}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.2}),
    "softmax": ("Softmax", {"axis": -1}),
    "log_softmax": ("LogSoftmax", {"axis": -1}),
}


def _activation_key(identifier: Any, table: dict, where: str) -> str | None:
    """The table key matching a layer's activation; ``None`` for linear in a Dense."""
    if where.startswith("Dense") and same_activation(identifier, "linear"):
        return None
    for name in table:
        if same_activation(identifier, name):
            return name
    raise ConversionError(
        f"{where}: activation {identifier!r} has no ONNX equivalent here; supported: "
        f"{', '.join(sorted(table))}"
    )


class _Graph:
    """Nodes and constants of the graph being built, with unique value names."""

    def __init__(self, onnx: Any):
        self.onnx, self.nodes, self.constants, self.count = onnx, [], [], 0

    def const(self, array: Any, name: str, dtype: Any = np.float32) -> str:
        value = f"{name}_{len(self.constants)}"
        self.constants.append(self.onnx.numpy_helper.from_array(np.asarray(array, dtype), value))
        return value

    def add(self, op: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> Any:
        self.count += 1
        outputs = [f"{op.lower()}_{self.count}_{i}" for i in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0] if n_out == 1 else outputs


def _directions(layer: GRU | Bidirectional, params: dict) -> list[tuple[GRU, dict]]:
    if isinstance(layer, Bidirectional):
        if layer.merge_mode is None:
            raise ConversionError(
                f"Bidirectional {layer.name!r} has merge_mode=None (two outputs); export a "
                "model with one output"
            )
        inner_gru(layer)  # refuses a backward_layer with settings of its own
        forward, backward = layer.directions
        return [(forward, params["forward_layer"]), (backward, params["backward_layer"])]
    return [(layer, params)]


def _gru_weights(gru: GRU, params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``W (3u, input)``, ``R (3u, u)``, ``B (6u,)`` of one direction."""
    u = gru.units
    bias = np.zeros(6 * u, np.float32)
    if gru.use_bias:
        b = numpy_f32(params["bias"])
        bias[: b.size] = b.reshape(-1)  # (2, 3u) -> [b_x, b_h]; (3u,) -> [bias, 0]
    return numpy_f32(params["kernel"]).T, numpy_f32(params["recurrent_kernel"]).T, bias


def _gru(g: _Graph, layer: GRU | Bidirectional, params: dict, x: str, mask: str | None) -> str:
    """The GRU node and the reshaping to Keras's output; ``x (batch, time, features)``."""
    directions = _directions(layer, params)
    grus = [gru for gru, _ in directions]
    first = grus[0]
    if isinstance(layer, Bidirectional) and first.go_backwards:
        raise ConversionError(f"Bidirectional {layer.name!r} wraps a go_backwards GRU")
    weights = [_gru_weights(gru, p) for gru, p in directions]
    w, r, b = (g.const(np.stack(parts), n) for parts, n in zip(zip(*weights), "WRB"))
    names, alphas, betas = [], [], []
    for gru in grus:
        for field in ("recurrent_activation", "activation"):
            key = _activation_key(getattr(gru, field), _GRU_ACTIVATIONS, f"GRU {gru.name!r}")
            op, alpha, beta = _GRU_ACTIVATIONS[key]
            names.append(op)
            if alpha is not None:  # onnxruntime hands alphas only to functions that take one
                alphas.append(alpha)
                betas.append(beta)
    extra = {"activation_alpha": alphas, "activation_beta": betas} if alphas else {}
    lens = ""
    if mask is not None:
        lens = g.add(
            "Cast",
            [g.add("ReduceSum", [mask, g.const([1], "axis", np.int64)], keepdims=0)],
            to=g.onnx.TensorProto.INT32,
        )
    direction = (
        "bidirectional" if len(grus) == 2 else "reverse" if first.go_backwards else "forward"
    )
    x_tm = g.add("Transpose", [x], perm=[1, 0, 2])
    y, y_h = g.add(
        "GRU",
        [x_tm, w, r, b, lens],
        n_out=2,
        hidden_size=first.units,
        direction=direction,
        linear_before_reset=int(first.reset_after),
        activations=names,
        **extra,
    )
    # y (time, dirs, batch, u), y_h (dirs, batch, u)
    if not first.return_sequences:
        merged_axis, out = 1, g.add("Transpose", [y_h], perm=[1, 0, 2])  # (batch, dirs, u)
    else:
        if mask is not None and direction == "forward" and not first.zero_output_for_mask:
            # Keras repeats the last valid output at masked steps; ONNX writes zeros there.
            keep = g.add(
                "Unsqueeze",
                [g.add("Transpose", [mask], perm=[1, 0]), g.const([1, 3], "axes", np.int64)],
            )
            y = g.add("Where", [g.add("Cast", [keep], to=g.onnx.TensorProto.BOOL), y, y_h])
        if direction == "reverse":  # Keras keeps go_backwards outputs in processing order
            y = g.add(
                "Slice",
                [y]
                + [
                    g.const(v, "slice", np.int64)
                    for v in ([-1], [np.iinfo(np.int64).min], [0], [-1])
                ],
            )
        merged_axis, out = 2, g.add("Transpose", [y], perm=[2, 0, 1, 3])  # (batch, time, dirs, u)
    merge = layer.merge_mode if isinstance(layer, Bidirectional) else "concat"
    if merge == "concat":
        shape = [0, -1] if merged_axis == 1 else [0, 0, -1]
        return g.add("Reshape", [out, g.const(shape, "shape", np.int64)])
    reduce = {"sum": "ReduceSum", "ave": "ReduceMean", "mul": "ReduceProd"}[merge]
    axis_inputs = [g.const([merged_axis], "axis", np.int64)] if reduce == "ReduceSum" else []
    axis_attrs = {} if reduce == "ReduceSum" else {"axes": [merged_axis]}
    return g.add(reduce, [out, *axis_inputs], keepdims=0, **axis_attrs)


def _dense(g: _Graph, layer: Dense, params: dict, x: str) -> str:
    y = g.add("MatMul", [x, g.const(numpy_f32(params["kernel"]), "kernel")])
    if layer.use_bias:
        y = g.add("Add", [y, g.const(numpy_f32(params["bias"]), "bias")])
    return _activate(g, layer.activation, y, f"Dense {layer.name!r}")


def _activate(g: _Graph, activation: Any, x: str, where: str) -> str:
    """``activation(x)`` as ONNX nodes: a Keras activation name, or an activation layer's
    function with its arguments (``KerasActivation``) where ONNX has the same operator."""
    if isinstance(activation, KerasActivation):
        c, kind = activation.config, activation.class_name
        if kind == "ReLU" and c["negative_slope"] == 0 and c["threshold"] == 0:
            y = g.add("Relu", [x])
            if c["max_value"] is None:
                return y
            return g.add("Clip", [y, g.const(0.0, "min"), g.const(c["max_value"], "max")])
        if kind == "LeakyReLU":
            return g.add("LeakyRelu", [x], alpha=float(c["negative_slope"]))
        if kind == "ELU":
            return g.add("Elu", [x], alpha=float(c["alpha"]))
        if kind == "Softmax" and isinstance(c["axis"], int):
            return g.add("Softmax", [x], axis=c["axis"])
        raise ConversionError(
            f"{where}: activation {activation.__name__} has no ONNX operator with the same "
            "arguments (ReLU with negative_slope or threshold, Softmax over several axes)"
        )
    key = _activation_key(activation, _DENSE_ACTIVATIONS, where)
    if key is None:
        return x
    op, attrs = _DENSE_ACTIVATIONS[key]
    return g.add(op, [x], **attrs)


def _masking(g: _Graph, layer: Masking, x: str) -> tuple[str, str]:
    """``(x with masked steps zeroed, mask (batch, time) float 0/1)``."""
    differs = g.add("Not", [g.add("Equal", [x, g.const(layer.mask_value, "mask_value")])])
    as_float = g.add("Cast", [differs], to=g.onnx.TensorProto.FLOAT)
    mask = g.add("ReduceMax", [as_float], axes=[-1], keepdims=0)
    return g.add("Mul", [x, g.add("Unsqueeze", [mask, g.const([-1], "axes", np.int64)])]), mask


def _embedding_node(g: _Graph, layer: Embedding, p: dict, x: str, mask: str | None):
    if layer.mask_zero:
        zero = g.const(0, "zero", np.int64)
        not_zero = g.add("Not", [g.add("Equal", [x, zero])])
        mask = g.add("Cast", [not_zero], to=g.onnx.TensorProto.FLOAT)
    return g.add("Gather", [g.const(numpy_f32(p["embeddings"]), "embeddings"), x]), mask


def _masking_node(g: _Graph, layer: Masking, p: dict, x: str, mask: str | None):
    return _masking(g, layer, x)


def _gru_node(g: _Graph, layer: GRU | Bidirectional, p: dict, x: str, mask: str | None):
    return _gru(g, layer, p, x, mask), mask if inner_gru(layer).return_sequences else None


def _dense_node(g: _Graph, layer: Dense, p: dict, x: str, mask: str | None):
    return _dense(g, layer, p, x), mask


def _identity_node(g: _Graph, layer: Dropout, p: dict, x: str, mask: str | None):
    return x, mask  # dropout is the identity at inference


def _activation_node(g: _Graph, layer: Any, p: dict, x: str, mask: str | None):
    """An activation layer (``jaxgru.activation_layers``); the mask passes through."""
    where = f"{type(layer).__name__} {layer.name!r}"
    if isinstance(layer, Softmax) and mask is not None:
        raise ConversionError(f"{where} receives a mask, which the ONNX export cannot apply")
    return _activate(g, layer.function(), x, where), mask


# -- the layers around GRUs (channels last: ONNX's Conv and pools read channels first) ----


def _channels_first(g: _Graph, x: str) -> str:
    return g.add("Transpose", [x], perm=[0, 2, 1])


def _conv1d_node(g: _Graph, layer: Conv1D, p: dict, x: str, mask: str | None):
    """``Conv`` between transposes; Keras's same is ONNX's SAME_UPPER, causal is a left pad."""
    (size,), (stride,), (dilation,) = layer.kernel_size, layer.strides, layer.dilation_rate
    kernel = np.transpose(numpy_f32(p["kernel"]), (2, 1, 0))  # (filters, in/groups, size)
    inputs = [_channels_first(g, x), g.const(kernel, "kernel")]
    if layer.use_bias:
        inputs.append(g.const(numpy_f32(p["bias"]), "bias"))
    pads = {"valid": {"pads": [0, 0]}, "same": {"auto_pad": "SAME_UPPER"},
            "causal": {"pads": [(size - 1) * dilation, 0]}}[layer.padding]  # fmt: skip
    y = g.add("Conv", inputs, strides=[stride], dilations=[dilation], group=layer.groups,
              kernel_shape=[size], **pads)  # fmt: skip
    y = g.add("Transpose", [y], perm=[0, 2, 1])
    where = f"Conv1D {layer.name!r}"
    return (y if same_activation(layer.activation, "linear") else
            _activate(g, layer.activation, y, where)), None  # fmt: skip


def _pool1d_node(g: _Graph, layer: Any, p: dict, x: str, mask: str | None):
    """``MaxPool`` / ``AveragePool`` (real steps only at the ends, as TensorFlow's)."""
    op = "MaxPool" if isinstance(layer, MaxPooling1D) else "AveragePool"
    pads = {"auto_pad": "SAME_UPPER"} if layer.padding == "same" else {"pads": [0, 0]}
    extra = {"count_include_pad": 0} if op == "AveragePool" else {}
    y = g.add(op, [_channels_first(g, x)], kernel_shape=[layer.pool_size],
              strides=[layer.strides], **pads, **extra)  # fmt: skip
    return g.add("Transpose", [y], perm=[0, 2, 1]), None


def _global_pool_node(g: _Graph, layer: Any, p: dict, x: str, mask: str | None):
    if mask is not None and isinstance(layer, GlobalAveragePooling1D):
        raise ConversionError(
            f"GlobalAveragePooling1D {layer.name!r} receives a mask, whose masked mean the ONNX "
            "export does not build"
        )
    op = "ReduceMax" if isinstance(layer, GlobalMaxPooling1D) else "ReduceMean"
    return g.add(op, [x], axes=[1], keepdims=int(layer.keepdims)), None


def _normalization_node(g: _Graph, layer: Any, p: dict, x: str, mask: str | None):
    """Both normalisations over the last axis: BatchNormalization as its inference affine
    map ``x * inv + shift`` (constants), LayerNormalization as ONNX's operator."""
    where = f"{type(layer).__name__} {layer.name!r}"
    if layer.axis != -1:
        raise ConversionError(f"{where}: only axis=-1 is exported to ONNX, got {layer.axis}")
    if isinstance(layer, LayerNormalization):
        if layer.rms_scaling:
            raise ConversionError(f"{where}: rms_scaling has no ONNX operator")
        size = p["gamma"].shape[0] if "gamma" in p else p["beta"].shape[0]
        gamma = numpy_f32(p["gamma"]) if "gamma" in p else np.ones(size, np.float32)
        beta = numpy_f32(p["beta"]) if "beta" in p else np.zeros(size, np.float32)
        y = g.add("LayerNormalization", [x, g.const(gamma, "gamma"), g.const(beta, "beta")],
                  axis=-1, epsilon=float(layer.epsilon))  # fmt: skip
        return y, mask
    inv = 1.0 / np.sqrt(np.asarray(p["moving_variance"], np.float64) + layer.epsilon)
    if "gamma" in p:
        inv = inv * np.asarray(p["gamma"], np.float64)
    shift = -np.asarray(p["moving_mean"], np.float64) * inv
    if "beta" in p:
        shift = shift + np.asarray(p["beta"], np.float64)
    y = g.add("Mul", [x, g.const(inv, "bn_scale")])
    return g.add("Add", [y, g.const(shift, "bn_shift")]), mask


def _shape_node(g: _Graph, layer: Any, p: dict, x: str, mask: str | None):
    if isinstance(layer, Flatten):
        return g.add("Flatten", [x], axis=1), None
    if isinstance(layer, Permute):
        return g.add("Transpose", [x], perm=[0, *layer.dims]), None
    shape = g.const([0, *layer.target_shape], "shape", np.int64)  # 0: keep the batch size
    return g.add("Reshape", [x, shape]), None


def _prelu_node(g: _Graph, layer: PReLU, p: dict, x: str, mask: str | None):
    return g.add("PRelu", [x, g.const(numpy_f32(p["alpha"]), "alpha")]), mask


def _time_distributed_node(g: _Graph, layer: TimeDistributed, p: dict, x: str, mask):
    """A Dense over each step is the Dense on the whole sequence (MatMul broadcasts)."""
    if not isinstance(layer.layer, Dense):
        raise ConversionError(
            f"TimeDistributed {layer.name!r}: only TimeDistributed(Dense) is exported to ONNX, "
            f"got TimeDistributed({type(layer.layer).__name__})"
        )
    return _dense(g, layer.layer, p, x), mask


# Each exportable layer class -> its nodes: (graph, layer, params, x, mask) -> (y, mask).
_EXPORTS = {
    Embedding: _embedding_node, Masking: _masking_node, GRU: _gru_node, RNN: _gru_node,
    Bidirectional: _gru_node, Dense: _dense_node, Dropout: _identity_node,
    **dict.fromkeys((Activation, ReLU, LeakyReLU, ELU, Softmax), _activation_node),
    Conv1D: _conv1d_node, MaxPooling1D: _pool1d_node, AveragePooling1D: _pool1d_node,
    GlobalAveragePooling1D: _global_pool_node, GlobalMaxPooling1D: _global_pool_node,
    BatchNormalization: _normalization_node, LayerNormalization: _normalization_node,
    Flatten: _shape_node, Permute: _shape_node, Reshape: _shape_node, PReLU: _prelu_node,
    TimeDistributed: _time_distributed_node,
    **dict.fromkeys((SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout),
                    _identity_node),
}  # fmt: skip


def to_onnx(model: Sequential, params: dict, path: str | os.PathLike) -> None:
    """Write ``model`` as an ONNX file (opset 17) that onnxruntime runs.

    Args:
        model: a ``Sequential`` of ``GRU``, ``Bidirectional``, ``Dense``, ``Masking``,
            ``Embedding`` and ``Dropout`` layers.
        params: its params.
        path: the ``.onnx`` file, written atomically.

    The graph's input ``input`` is ``(batch, time, features)`` float32 (or ``(batch, time)``
    int64 ids before an ``Embedding``) with symbolic batch and time; its output ``output`` is
    what ``model.apply(params, input)`` returns.
    """
    onnx = require("onnx", "to_onnx")
    if not isinstance(model, Sequential):
        raise ConversionError(f"to_onnx takes a Sequential, got {type(model).__name__}")
    g = _Graph(onnx)
    ids = input_dtype(model.layers[0]) == "int32"  # ids before an Embedding
    dims = ["batch", "time", *model.input_shape[1:]]
    elem = onnx.TensorProto.INT64 if ids else onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("input", elem, dims)]
    x, mask = "input", None
    for layer in model.layers:
        export = _EXPORTS.get(type(layer))
        if export is None:
            exportable = ", ".join(cls.__name__ for cls in _EXPORTS)
            raise ConversionError(
                f"layer {layer.name!r} ({type(layer).__name__}) has no ONNX export; to_onnx "
                f"exports {exportable}"
            )
        x, mask = export(g, layer, params.get(layer.name, {}), x, mask)
    g.nodes.append(onnx.helper.make_node("Identity", [x], ["output"]))
    out_shape = model.output_shape()
    out_dims = ["batch", *(d if d is not None else f"axis_{i}"
                           for i, d in enumerate(out_shape) if i > 0)]  # fmt: skip
    outputs = [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, out_dims)]
    graph = onnx.helper.make_graph(g.nodes, model.name, inputs, outputs, g.constants)
    proto = onnx.helper.make_model(
        graph, producer_name="jaxgru", opset_imports=[onnx.helper.make_opsetid("", OPSET)]
    )
    proto.ir_version = 8  # readable by every onnxruntime that runs opset 17
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(Path(path), lambda f: f.write(data))
