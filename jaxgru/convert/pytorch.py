"""PyTorch ``nn.GRU`` <-> jaxgru, exactly.

``nn.GRU`` is Keras's ``reset_after=True`` GRU with the gate blocks ordered ``r | z | n`` and
every matrix transposed. For layer ``k`` (suffix ``_reverse`` for the backward direction)::

    weight_ih_l{k}  (3u, input)  = swap_zr(kernel.T)
    weight_hh_l{k}  (3u, u)      = swap_zr(recurrent_kernel.T)
    bias_ih_l{k}    (3u,)        = swap_zr(bias[0])
    bias_hh_l{k}    (3u,)        = swap_zr(bias[1])

A stack of ``num_layers`` becomes that many ``GRU(return_sequences=True)`` layers (each a
``Bidirectional`` when ``bidirectional=True``), with a ``Dropout`` between them when the module
has ``dropout > 0``. jaxgru is batch-major: feed ``(batch, time, features)`` whatever the
module's ``batch_first``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgru.convert._common import (
    ConversionError,
    check_no_bias,
    check_standard_cell,
    gru_bias_rows,
    inner_gru,
    numpy_f32,
    require,
    swap_zr,
)
from jaxgru.gru import GRU
from jaxgru.layers import Bidirectional, Dropout
from jaxgru.model import Sequential

_KEY = re.compile(
    r"^(?P<prefix>.*?)(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh)_l(?P<layer>\d+)(?P<reverse>_reverse)?$"
)


def _gru_prefixes(keys: list[str]) -> list[str]:
    return sorted({m["prefix"] for k in keys if (m := _KEY.match(k)) and m["kind"] == "weight_ih"})


def _own_key(key: str, prefix: str) -> str | None:
    """``key`` without ``prefix`` when it is one of the GRU's own arrays there, else None."""
    if not key.startswith(prefix):
        return None
    match = _KEY.match(key[len(prefix) :])
    return key[len(prefix) :] if match and not match["prefix"] else None


def _select(state_dict: Mapping, prefix: str | None) -> dict[str, np.ndarray]:
    """The one GRU's arrays, keys without the prefix; an error names anything left over."""
    keys = [str(k) for k in state_dict]
    prefixes = _gru_prefixes(keys)
    explicit = prefix is not None
    if not explicit and len(prefixes) != 1:
        raise ConversionError(
            f"expected the state_dict of one nn.GRU (keys like 'weight_ih_l0'); GRU key "
            f"prefixes found: {prefixes or 'none'}. Pass prefix=... to choose one"
        )
    if explicit and prefix not in prefixes:
        raise ConversionError(f"no nn.GRU under prefix {prefix!r}; GRU prefixes: {prefixes}")
    prefix = prefix if explicit else prefixes[0]
    arrays = {
        own: numpy_f32(value)
        for key, value in state_dict.items()
        if (own := _own_key(str(key), prefix))
    }
    if len(arrays) < len(keys) and not explicit:
        others = sorted(key for key in keys if _own_key(key, prefix) is None)
        raise ConversionError(
            f"the state_dict holds more than the nn.GRU: keys {others} are not part of it, so "
            f"converting would drop them. Pass prefix={prefix!r} (jaxgru convert "
            f"--torch-prefix {prefix}) to convert the GRU alone"
        )
    return arrays


def _check_shapes(arrays: dict[str, np.ndarray], units: int) -> None:
    """Every array has a GRU's ``3u`` rows (an LSTM's state_dict has ``4u``) and fits."""
    for name, array in arrays.items():
        kind = _KEY.match(name)["kind"]
        expected = {"weight_hh": (3 * units, units), "weight_ih": (3 * units, array.shape[-1])}
        want = expected.get(kind, (3 * units,))
        if array.shape != want:
            raise ConversionError(
                f"{name} has shape {array.shape}, but an nn.GRU with hidden_size={units} has "
                f"{want} (an nn.LSTM's arrays have 4 * hidden_size rows)"
            )


def _layer_params(arrays: dict, suffix: str, bias: bool) -> dict[str, np.ndarray]:
    """One direction of one layer in Keras layout."""
    params = {
        "kernel": swap_zr(arrays[f"weight_ih{suffix}"]).T.copy(),
        "recurrent_kernel": swap_zr(arrays[f"weight_hh{suffix}"]).T.copy(),
    }
    if bias:
        params["bias"] = np.stack(
            [swap_zr(arrays[f"bias_ih{suffix}"]), swap_zr(arrays[f"bias_hh{suffix}"])]
        )
    return params


def from_torch(
    source: Any, *, prefix: str | None = None, dropout: float | None = None
) -> tuple[Sequential, dict]:
    """An ``nn.GRU`` (or its ``state_dict``) as a jaxgru ``Sequential`` and its params.

    Args:
        source: an ``nn.GRU``, or a mapping of its arrays (torch tensors or NumPy arrays) such
            as ``module.state_dict()`` or what ``torch.load(path)`` returns.
        prefix: the keys' prefix when the state_dict is a larger module's, e.g. ``"gru."``.
        dropout: the rate between stacked layers for a state_dict (a module carries its own).

    Returns:
        ``(model, params)``: one ``GRU(units, return_sequences=True)`` per torch layer, each
        wrapped in ``Bidirectional`` for a bidirectional module; ``input_shape (None, input)``.
        ``model.apply(params, x (batch, time, input))`` equals the module's ``output``.
    """
    if callable(getattr(source, "state_dict", None)):  # a torch module
        torch = require("torch", "from_torch")
        if not isinstance(source, torch.nn.GRU):
            raise ConversionError(
                f"from_torch converts an nn.GRU, got {type(source).__name__}; for a GRU inside "
                "a larger module pass module.state_dict() and prefix='<name>.'"
            )
        if dropout is None:
            dropout = float(source.dropout)
        source = source.state_dict()
    if not isinstance(source, Mapping):
        raise ConversionError(
            f"from_torch takes an nn.GRU or its state_dict, got {type(source).__name__}"
        )
    arrays = _select(source, prefix)
    num_layers = 1 + max(int(_KEY.match(k)["layer"]) for k in arrays)
    bidirectional = any(k.endswith("_reverse") for k in arrays)
    bias = "bias_ih_l0" in arrays
    units = arrays["weight_hh_l0"].shape[1]
    input_size = arrays["weight_ih_l0"].shape[1]
    suffixes = ("", "_reverse") if bidirectional else ("",)
    expected = {
        f"{kind}_l{k}{s}"
        for k in range(num_layers)
        for s in suffixes
        for kind in ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if bias else ()))
    }
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise ConversionError(
            f"not a complete nn.GRU state_dict: missing {missing}, unexpected {extra}"
        )
    _check_shapes(arrays, units)
    layers, params = [], {}
    for k in range(num_layers):
        if k and dropout:
            layers.append(Dropout(dropout, name=f"dropout_l{k}"))
        gru = GRU(units, return_sequences=True, use_bias=bias, name=f"gru_l{k}")
        per_direction = [_layer_params(arrays, f"_l{k}{s}", bias) for s in suffixes]
        if bidirectional:
            layer = Bidirectional(gru, name=f"bidirectional_l{k}")
            params[layer.name] = dict(zip(("forward_layer", "backward_layer"), per_direction))
        else:
            layer = gru
            params[layer.name] = per_direction[0]
        layers.append(layer)
    return Sequential(layers, input_shape=(None, input_size)), params


def _stack(model: Any, params: dict) -> tuple[list[tuple[Any, dict]], float]:
    """The ``(GRU or Bidirectional, params)`` of each torch layer, and the dropout between."""
    if isinstance(model, (GRU, Bidirectional)):
        layers, layer_params = [model], [params]
    elif isinstance(model, Sequential):
        layers = list(model.layers)
        layer_params = [params.get(layer.name, {}) for layer in layers]
    else:
        raise ConversionError(f"to_torch takes a Sequential, GRU or Bidirectional, got {model!r}")
    rates = {layer.rate for layer in layers if isinstance(layer, Dropout)}
    for i, layer in enumerate(layers):
        if isinstance(layer, Dropout):
            if i in (0, len(layers) - 1) or not isinstance(layers[i - 1], (GRU, Bidirectional)):
                raise ConversionError(
                    f"Dropout {layer.name!r} is not between two GRU layers; nn.GRU's dropout "
                    "only sits between its layers"
                )
        elif not isinstance(layer, (GRU, Bidirectional)):
            raise ConversionError(
                f"layer {layer.name!r} ({type(layer).__name__}) has no place in an nn.GRU, which "
                "holds only a stack of GRU layers; convert the GRU layers alone, e.g. "
                "Sequential(model.layers[:k], model.input_shape)"
            )
    grus = [layer for layer in layers if isinstance(layer, (GRU, Bidirectional))]
    if len(rates) > 1:
        raise ConversionError(f"nn.GRU has one dropout rate, the model has {sorted(rates)}")
    if {isinstance(layer, Bidirectional) for layer in grus} == {True, False}:
        raise ConversionError("nn.GRU is bidirectional in every layer or none; the model mixes")
    if len({inner_gru(layer).units for layer in grus}) > 1:
        raise ConversionError("nn.GRU has one hidden_size; the model's GRU layers differ in units")
    for layer in grus:
        inner = inner_gru(layer)
        check_standard_cell(inner, "PyTorch nn.GRU")
        if inner.go_backwards:
            raise ConversionError(
                f"GRU {inner.name!r} has go_backwards=True; nn.GRU runs backwards only as the "
                "second direction of bidirectional=True"
            )
        if isinstance(layer, Bidirectional) and layer.merge_mode != "concat":
            raise ConversionError(
                f"Bidirectional {layer.name!r} has merge_mode={layer.merge_mode!r}; nn.GRU "
                "concatenates the two directions"
            )
    stack = [
        (layer, p) for layer, p in zip(layers, layer_params) if not isinstance(layer, Dropout)
    ]
    return stack, (rates.pop() if rates else 0.0)


def torch_gru_kwargs(model: Any, params: dict) -> dict[str, Any]:
    """The ``nn.GRU(**kwargs)`` that ``to_torch(model, params)`` fits, ``batch_first=True``."""
    stack, dropout = _stack(model, params)
    first_layer, first_params = stack[0]
    first = (
        first_params["forward_layer"] if isinstance(first_layer, Bidirectional) else first_params
    )
    return {
        "input_size": int(np.shape(first["kernel"])[0]),
        "hidden_size": inner_gru(first_layer).units,
        "num_layers": len(stack),
        "bias": inner_gru(first_layer).use_bias,
        "batch_first": True,
        "dropout": dropout,
        "bidirectional": isinstance(first_layer, Bidirectional),
    }


def to_torch(model: Any, params: dict, *, bias: bool | None = None) -> OrderedDict:
    """A state_dict that ``nn.GRU(**torch_gru_kwargs(model, params)).load_state_dict`` accepts.

    Args:
        model: a ``Sequential`` of ``GRU`` or ``Bidirectional`` layers (``Dropout`` between
            them allowed), or one such layer.
        params: its params.
        bias: ``False`` for an ``nn.GRU(bias=False)``; refused if any bias is non-zero.
            Default: the layers' own ``use_bias``.

    Returns:
        ``OrderedDict`` of float32 CPU tensors: ``weight_ih_l0 (3u, input)``,
        ``weight_hh_l0 (3u, u)``, ``bias_ih_l0 (3u,)``, ``bias_hh_l0 (3u,)``, ... in
        ``nn.GRU``'s own order.

    Raises:
        ConversionError: for what ``nn.GRU`` cannot hold exactly (``reset_after=False``,
            other activations, ``go_backwards``, other layers, ...).
    """
    torch = require("torch", "to_torch")
    stack, _ = _stack(model, params)
    use_bias = inner_gru(stack[0][0]).use_bias if bias is None else bias
    state = OrderedDict()
    for k, (layer, layer_params) in enumerate(stack):
        directions = (
            [("", layer_params["forward_layer"]), ("_reverse", layer_params["backward_layer"])]
            if isinstance(layer, Bidirectional)
            else [("", layer_params)]
        )
        inner = inner_gru(layer)
        for suffix, p in directions:
            state[f"weight_ih_l{k}{suffix}"] = swap_zr(numpy_f32(p["kernel"]).T)
            state[f"weight_hh_l{k}{suffix}"] = swap_zr(numpy_f32(p["recurrent_kernel"]).T)
            b_x, b_h = gru_bias_rows(inner, p)
            if use_bias:
                state[f"bias_ih_l{k}{suffix}"] = swap_zr(b_x)
                state[f"bias_hh_l{k}{suffix}"] = swap_zr(b_h)
            else:
                check_no_bias(inner, b_x, b_h, "nn.GRU(bias=False)", "export with bias=True")
    return OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in state.items())


def to_torch_module(model: Any, params: dict, *, batch_first: bool = True) -> Any:
    """A ready ``torch.nn.GRU`` holding ``to_torch(model, params)``, in eval mode."""
    torch = require("torch", "to_torch_module")
    kwargs = torch_gru_kwargs(model, params) | {"batch_first": batch_first}
    module = torch.nn.GRU(**kwargs)
    module.load_state_dict(to_torch(model, params))
    return module.eval()
