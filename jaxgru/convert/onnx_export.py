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

Around the GRUs: ``Conv1D`` and ``Conv2D`` are ``Conv`` between transposes (ONNX reads
channels first), Keras's ``same`` padding is ``SAME_UPPER`` and ``causal`` a left pad;
``SeparableConv1D`` is a depthwise and a pointwise ``Conv``; the 1-D pools are ``MaxPool`` and
``AveragePool`` (real steps only at the ends); ``BatchNormalization`` is its inference affine
map as constants and ``LayerNormalization`` ONNX's operator (last axis); ``SimpleRNN`` is
ONNX's ``RNN`` (unmasked); ``PReLU``, ``Flatten``, ``Permute``, ``Reshape``, ``Cropping1D``,
``ZeroPadding1D``, ``RepeatVector``, the global pools and ``TimeDistributed(Dense)`` map to
one or two operators each.

A graph ``Model`` exports the same layers joined by its merges (``Concat``, ``Sum``, ``Sub``,
``Mul``, ``Mean``, ``Max``, ``Min``; ``Dot`` as an ``Einsum``), with one ONNX input per model
input and masks propagated as Keras propagates them (Keras 3's recorded mask operations are
those masks, so they are left out). Anything else (the attention layers, which ONNX has no
operator for; ``initial_state``; a layer with several outputs; a masked average or
``SimpleRNN``; ``rms_scaling``; another axis) is refused with the reason.
"""

from __future__ import annotations

import functools
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
from jaxgru.convolution import Conv1D, Conv2D, SeparableConv1D
from jaxgru.graph import Model, TensorRef, _resolve, output_shapes
from jaxgru.gru import GRU
from jaxgru.keras_ops import KerasOp
from jaxgru.layer import input_dtype
from jaxgru.layers import Bidirectional, Dense, Dropout, Embedding, Masking
from jaxgru.merging import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
)
from jaxgru.model import Sequential
from jaxgru.noise import AlphaDropout, GaussianDropout, GaussianNoise, SpatialDropout1D
from jaxgru.normalization import BatchNormalization, LayerNormalization
from jaxgru.pooling import (
    AveragePooling1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    MaxPooling1D,
)
from jaxgru.reshaping import (
    Cropping1D,
    Flatten,
    Permute,
    RepeatVector,
    Reshape,
    ZeroPadding1D,
)
from jaxgru.rnn import RNN
from jaxgru.simple_rnn import SimpleRNN
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
            y = _reverse_time(g, y)
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


def _channels_first(g: _Graph, x: str, rank: int = 1) -> str:
    """``(batch, *spatial, channels)`` -> ``(batch, channels, *spatial)``, as ONNX reads."""
    return g.add("Transpose", [x], perm=[0, rank + 1, *range(1, rank + 1)])


def _channels_last(g: _Graph, x: str, rank: int = 1) -> str:
    return g.add("Transpose", [x], perm=[0, *range(2, rank + 2), 1])


def _conv(g: _Graph, padding: str, x: str, kernel: Any, strides, dilations, group: int) -> str:
    """One ``Conv`` on channels-first ``x``; ``kernel`` in Keras's layout ``(*size, in /
    group, out)``. Keras's same is ONNX's SAME_UPPER, causal a left pad."""
    rank = kernel.ndim - 2
    sizes = list(kernel.shape[:rank])
    weights = np.transpose(numpy_f32(kernel), (rank + 1, rank, *range(rank)))
    pads = {"valid": {"pads": [0] * 2 * rank}, "same": {"auto_pad": "SAME_UPPER"},
            "causal": {"pads": [(sizes[0] - 1) * dilations[0], 0]}}[padding]  # fmt: skip
    if padding == "same" and any(d > 1 for d in dilations):
        # onnxruntime has no SAME with dilation; Keras allows dilation with stride 1 only,
        # where TensorFlow's same pads (size - 1) * dilation, the smaller half first.
        totals = [(k - 1) * d for k, d in zip(sizes, dilations)]
        pads = {"pads": [t // 2 for t in totals] + [t - t // 2 for t in totals]}
    return g.add("Conv", [x, g.const(weights, "kernel")], strides=list(strides),
                 dilations=list(dilations), group=group, kernel_shape=sizes, **pads)  # fmt: skip


def _conv_finish(g: _Graph, layer: Any, p: dict, y: str, rank: int) -> str:
    """Bias and activation on the channels-last result."""
    y = _channels_last(g, y, rank)
    if layer.use_bias:
        y = g.add("Add", [y, g.const(numpy_f32(p["bias"]), "bias")])
    if same_activation(layer.activation, "linear"):
        return y
    return _activate(g, layer.activation, y, f"{type(layer).__name__} {layer.name!r}")


def _conv_node(g: _Graph, layer: Conv1D | Conv2D, p: dict, x: str, mask: str | None):
    """``Conv1D`` and ``Conv2D``: ``Conv`` between transposes."""
    rank = layer.rank
    y = _conv(g, layer.padding, _channels_first(g, x, rank), np.asarray(p["kernel"]),
              layer.strides, layer.dilation_rate, layer.groups)  # fmt: skip
    return _conv_finish(g, layer, p, y, rank), None


def _separable_conv_node(g: _Graph, layer: SeparableConv1D, p: dict, x: str, mask):
    """A depthwise ``Conv`` (one group per channel, TensorFlow's channel-major order) and a
    pointwise ``Conv``."""
    depthwise = np.asarray(p["depthwise_kernel"])
    size, channels, multiplier = depthwise.shape
    depthwise = depthwise.reshape(size, 1, channels * multiplier)
    y = _conv(g, layer.padding, _channels_first(g, x), depthwise, layer.strides,
              layer.dilation_rate, channels)  # fmt: skip
    y = _conv(g, "valid", y, np.asarray(p["pointwise_kernel"]), (1,), (1,), 1)
    return _conv_finish(g, layer, p, y, 1), None


def _crop_pad_node(g: _Graph, layer: Any, p: dict, x: str, mask: str | None):
    """``Cropping1D`` is a ``Slice`` over time, ``ZeroPadding1D`` a ``Pad``; no mask after
    either, as in Keras."""
    if isinstance(layer, Cropping1D):
        start, end = layer.cropping
        bounds = ([start], [-end if end else np.iinfo(np.int64).max], [1])
        return g.add("Slice", [x, *(g.const(v, "slice", np.int64) for v in bounds)]), None
    before, after = layer.padding
    pads = g.const([0, before, 0, 0, after, 0], "pads", np.int64)
    return g.add("Pad", [x, pads]), None


def _repeat_vector_node(g: _Graph, layer: RepeatVector, p: dict, x: str, mask: str | None):
    """``(batch, d)`` -> ``(batch, n, d)``: ``Unsqueeze`` then ``Tile``."""
    y = g.add("Unsqueeze", [x, g.const([1], "axes", np.int64)])
    return g.add("Tile", [y, g.const([1, layer.n, 1], "repeats", np.int64)]), None


def _simple_rnn_node(g: _Graph, layer: SimpleRNN, p: dict, x: str, mask: str | None):
    """ONNX's ``RNN`` (``W = kernel.T``, ``R = recurrent_kernel.T``, ``B = [bias, 0]``),
    unmasked; ``go_backwards`` is ``direction="reverse"``, its outputs in Keras's order."""
    where = f"SimpleRNN {layer.name!r}"
    if mask is not None:
        raise ConversionError(f"{where} receives a mask, which the ONNX export does not apply")
    key = _activation_key(layer.activation, _GRU_ACTIVATIONS, where)
    op, alpha, beta = _GRU_ACTIVATIONS[key]
    extra = {"activation_alpha": [alpha], "activation_beta": [beta]} if alpha is not None else {}
    units = layer.units
    bias = numpy_f32(p["bias"]) if "bias" in p else np.zeros(units, np.float32)
    w = g.const(numpy_f32(p["kernel"]).T[None], "W")
    r = g.const(numpy_f32(p["recurrent_kernel"]).T[None], "R")
    b = g.const(np.concatenate([bias, np.zeros(units, np.float32)])[None], "B")
    y, y_h = g.add("RNN", [g.add("Transpose", [x], perm=[1, 0, 2]), w, r, b], n_out=2,
                   hidden_size=units, activations=[op],
                   direction="reverse" if layer.go_backwards else "forward", **extra)  # fmt: skip
    if not layer.return_sequences:
        return g.add("Squeeze", [y_h, g.const([0], "axes", np.int64)]), None
    if layer.go_backwards:  # Keras keeps go_backwards outputs in processing order
        y = _reverse_time(g, y)
    y = g.add("Squeeze", [y, g.const([1], "axes", np.int64)])  # (time, batch, u)
    return g.add("Transpose", [y], perm=[1, 0, 2]), None


def _reverse_time(g: _Graph, y: str) -> str:
    """``y (time, ...)`` with its time axis reversed."""
    bounds = ([-1], [np.iinfo(np.int64).min], [0], [-1])
    return g.add("Slice", [y, *(g.const(v, "slice", np.int64) for v in bounds)])


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


def _sequential_nodes(g: _Graph, model: Sequential, params: dict) -> tuple[list, list]:
    """A ``Sequential``'s nodes: ``(input value infos, [output name])``."""
    onnx = g.onnx
    ids = input_dtype(model.layers[0]) == "int32"  # ids before an Embedding
    dims = ["batch", "time", *model.input_shape[1:]]
    elem = onnx.TensorProto.INT64 if ids else onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("input", elem, dims)]
    x, mask = "input", None
    for layer in model.layers:
        export = _EXPORTS.get(type(layer))
        if export is None:
            _no_export(layer)
        x, mask = export(g, layer, params.get(layer.name, {}), x, mask)
    return inputs, [x]


# Each exportable layer class -> its nodes: (graph, layer, params, x, mask) -> (y, mask).
_EXPORTS = {
    Embedding: _embedding_node, Masking: _masking_node, GRU: _gru_node, RNN: _gru_node,
    Bidirectional: _gru_node, Dense: _dense_node, Dropout: _identity_node,
    **dict.fromkeys((Activation, ReLU, LeakyReLU, ELU, Softmax), _activation_node),
    Conv1D: _conv_node, Conv2D: _conv_node, SeparableConv1D: _separable_conv_node,
    Cropping1D: _crop_pad_node, ZeroPadding1D: _crop_pad_node,
    RepeatVector: _repeat_vector_node, SimpleRNN: _simple_rnn_node,
    MaxPooling1D: _pool1d_node, AveragePooling1D: _pool1d_node,
    GlobalAveragePooling1D: _global_pool_node, GlobalMaxPooling1D: _global_pool_node,
    BatchNormalization: _normalization_node, LayerNormalization: _normalization_node,
    Flatten: _shape_node, Permute: _shape_node, Reshape: _shape_node, PReLU: _prelu_node,
    TimeDistributed: _time_distributed_node,
    **dict.fromkeys((SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout),
                    _identity_node),
}  # fmt: skip


# The merges of a graph model -> their ONNX op.
_MERGES = {Add: "Sum", Subtract: "Sub", Multiply: "Mul", Average: "Mean", Maximum: "Max",
           Minimum: "Min", Concatenate: "Concat"}  # fmt: skip


def _merge_mask(g: _Graph, layer: Any, masks: list, rank: int) -> str | None:
    """Keras's mask of a merge, as 0/1 floats: the elementwise merges' is an OR of the masks
    when every input has one; a Concatenate over features is all true where an input has
    none (so no mask) and an OR otherwise."""
    if all(m is None for m in masks):
        return None
    if isinstance(layer, Concatenate) and layer.axis % rank != rank - 1:
        raise ConversionError(
            f"Concatenate {layer.name!r} joins masked inputs along axis {layer.axis}; the ONNX "
            "export joins masked inputs along the features only"
        )
    if any(m is None for m in masks):
        return None
    return masks[0] if len(masks) == 1 else g.add("Max", masks)


def _check_graph_call(model: Any, call: Any, layer: Any) -> None:
    """Refuse what a graph call asks of ONNX that the export does not build."""
    where = f"layer {layer.name!r} ({type(layer).__name__})"
    arguments = call.kwargs
    if "initial_state" in arguments:
        raise ConversionError(f"{where} is given initial_state, which the ONNX export omits")
    if model.legacy and arguments.get("training"):
        raise ConversionError(
            f"{where} is called with training=True in a tf_keras graph, where it stays on at "
            "inference (Monte Carlo dropout); ONNX exports the inference graph only"
        )
    extra = sorted(set(arguments) - {"initial_state", "mask", "training"})
    if extra:
        raise ConversionError(f"{where} is called with {extra}, which the ONNX export omits")


def _graph_nodes(g: _Graph, model: Any, params: dict) -> tuple[list, list]:
    """A graph model's nodes: ``(input value infos, output names)``. Keras 3's recorded mask
    operations (``KerasOp``) are what the layers' masks propagate to, so the export follows
    the propagated masks and leaves those operations out."""
    onnx = g.onnx
    names, masks, inputs = {}, {}, []
    for spec in model.inputs:
        kinds = {"int": onnx.TensorProto.INT64, "float": onnx.TensorProto.FLOAT,
                 "bool": onnx.TensorProto.BOOL}  # fmt: skip
        elem = next((v for k, v in kinds.items() if spec.dtype.startswith(k)), None)
        if elem is None:
            raise ConversionError(f"input {spec.name!r} is {spec.dtype}; the ONNX export takes "
                                  "float features, int ids and bool masks")  # fmt: skip
        dims = ["batch", *(d if d is not None else f"{spec.name}_axis_{i + 1}"
                           for i, d in enumerate(spec.shape))]  # fmt: skip
        inputs.append(onnx.helper.make_tensor_value_info(spec.name, elem, dims))
        names[TensorRef(spec.name)], masks[TensorRef(spec.name)] = spec.name, None
    layers = {item.name: item for item in model.layers}
    shapes = model.tensor_shapes()
    input_names = {spec.name for spec in model.inputs}
    for call, i in model.call_indices():
        layer = layers[call.layer]
        out = TensorRef(call.layer, i, 0)
        if isinstance(layer, KerasOp):
            continue  # a mask computation: the propagated masks carry it
        _check_graph_call(model, call, layer)
        in_shape = _resolve(call.inputs, shapes.__getitem__)
        if len(output_shapes(layer, in_shape)) > 1:
            raise ConversionError(
                f"layer {layer.name!r} ({type(layer).__name__}) has several outputs "
                "(return_state, or merge_mode=None); the ONNX export takes one per layer"
            )
        mask_arg = call.kwargs.get("mask")
        if isinstance(mask_arg, TensorRef) and mask_arg.layer not in input_names:
            if not isinstance(layers.get(mask_arg.layer), KerasOp):
                raise ConversionError(f"layer {layer.name!r} is given a computed mask=; the "
                                      "ONNX export reads masks from Masking, Embedding or an "
                                      "input")  # fmt: skip
            mask_arg = None
        if isinstance(call.inputs, TensorRef):
            x = names[call.inputs]
            mask = masks[call.inputs]
            if isinstance(mask_arg, TensorRef):  # a boolean mask input
                mask = g.add("Cast", [names[mask_arg]], to=onnx.TensorProto.FLOAT)
            export = _EXPORTS.get(type(layer))
            if export is None:
                _no_export(layer)
            y, y_mask = export(g, layer, params.get(layer.name, {}), x, mask)
        else:
            refs = list(call.inputs)
            op = _MERGES.get(type(layer))
            values = [names[r] for r in refs]
            if isinstance(layer, Dot):
                names[out] = _dot(g, layer, values, [len(shapes[r]) for r in refs])
                masks[out] = None
                continue
            if op is None:
                _no_export(layer)
            if op == "Mul":  # ONNX's Mul takes two
                y = functools.reduce(lambda a, b: g.add("Mul", [a, b]), values)
            else:
                y = g.add(op, values, **({"axis": layer.axis} if op == "Concat" else {}))
            y_mask = _merge_mask(g, layer, [masks[r] for r in refs], len(shapes[refs[0]]))
        names[out], masks[out] = y, y_mask
    return inputs, [names[ref] for ref in model.output_refs]


def _dot(g: _Graph, layer: Dot, values: list[str], ranks: list[int]) -> str:
    """Keras's ``batch_dot`` as an ``Einsum``: the contracted axes share a letter, the
    batch another; two vectors give ``(batch, 1)``."""
    a, b = layer._axes(ranks)
    x, y = values
    if layer.normalize:  # x / max(||x||, 1e-7), as Keras's ops.normalize
        x, y = (_l2_normalise(g, v, axis) for v, axis in ((x, a), (y, b)))
    letters = iter("cdefghijklmnopqrstuvwxyz")
    left = ["b"] + [next(letters) for _ in range(ranks[0] - 1)]
    right = ["b"] + [next(letters) for _ in range(ranks[1] - 1)]
    right[b] = left[a]
    rest = [c for i, c in enumerate(left) if i not in (0, a)]
    rest += [c for i, c in enumerate(right) if i not in (0, b)]
    equation = f"{''.join(left)},{''.join(right)}->b{''.join(rest)}"
    y = g.add("Einsum", [x, y], equation=equation)
    return y if rest else g.add("Unsqueeze", [y, g.const([1], "axes", np.int64)])


def _l2_normalise(g: _Graph, x: str, axis: int) -> str:
    squares = g.add("ReduceSum", [g.add("Mul", [x, x]), g.const([axis], "axis", np.int64)],
                    keepdims=1)  # fmt: skip
    norm = g.add("Max", [g.add("Sqrt", [squares]), g.const(1e-7, "epsilon")])
    return g.add("Div", [x, norm])


# Why a layer jaxgru reads has no ONNX export.
_NO_EXPORT_REASONS = dict.fromkeys(
    ("Attention", "AdditiveAttention", "MultiHeadAttention"),
    "ONNX (opset 17) has no attention operator, and the export does not compose one from "
    "MatMul and Softmax",
)


def _no_export(layer: Any) -> None:
    exportable = ", ".join(cls.__name__ for cls in (*_EXPORTS, *_MERGES, Dot))
    reason = _NO_EXPORT_REASONS.get(type(layer).__name__)
    raise ConversionError(
        f"layer {layer.name!r} ({type(layer).__name__}) has no ONNX export"
        + (f": {reason}" if reason else "")
        + f"; to_onnx exports {exportable}"
    )


def to_onnx(model: Sequential | Model, params: dict, path: str | os.PathLike) -> None:
    """Write ``model`` as an ONNX file (opset 17) that onnxruntime runs.

    Args:
        model: a ``Sequential``, or a graph ``Model`` of the same layers joined by merges
            (``Concatenate``, ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``,
            ``Minimum``).
        params: its params.
        path: the ``.onnx`` file, written atomically.

    A ``Sequential``'s input ``input`` is ``(batch, time, features)`` float32 (or ``(batch,
    time)`` int64 ids before an ``Embedding``) with symbolic batch and time; a graph's inputs
    are named as the model's. The output ``output`` (``output_0``, ``output_1``, ... for
    several) is what ``model.apply(params, input)`` returns.
    """
    onnx = require("onnx", "to_onnx")
    if not isinstance(model, (Sequential, Model)):
        raise ConversionError(f"to_onnx takes a Sequential or a Model, got {type(model).__name__}")
    g = _Graph(onnx)
    if isinstance(model, Model):
        inputs, results = _graph_nodes(g, model, params)
        shapes = model.tensor_shapes()
        out_shapes = [shapes[ref] for ref in model.output_refs]
    else:
        inputs, results = _sequential_nodes(g, model, params)
        out_shapes = [model.output_shape()]
    out_names = ["output"] if len(results) == 1 else [f"output_{i}" for i in range(len(results))]
    outputs = []
    for result, name, shape in zip(results, out_names, out_shapes):
        g.nodes.append(onnx.helper.make_node("Identity", [result], [name]))
        dims = ["batch", *(d if d is not None else f"{name}_axis_{i}"
                           for i, d in enumerate(shape) if i > 0)]  # fmt: skip
        outputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    graph = onnx.helper.make_graph(g.nodes, model.name, inputs, outputs, g.constants)
    proto = onnx.helper.make_model(
        graph, producer_name="jaxgru", opset_imports=[onnx.helper.make_opsetid("", OPSET)]
    )
    proto.ir_version = 8  # readable by every onnxruntime that runs opset 17
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(Path(path), lambda f: f.write(data))
