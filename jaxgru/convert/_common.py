"""What every converter shares: the error type, gate reordering, layout checks, lazy imports.

Keras orders a GRU's gate blocks ``z | r | h`` along the ``3u`` axis; PyTorch, Flax and
Equinox order them ``r | z | n`` (``n`` is Keras's ``h``, the candidate). ONNX uses Keras's
order. ``swap_zr`` turns one order into the other and is its own inverse.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from jaxgru import activations
from jaxgru.errors import ConversionError
from jaxgru.gru import GRU
from jaxgru.layers import Bidirectional


def require(package: str, purpose: str) -> ModuleType:
    """Import an optional framework, or raise ``ConversionError`` naming the install command."""
    try:
        return importlib.import_module(package)
    except ImportError:
        install = "torch==2.13.0" if package == "torch" else package
        raise ConversionError(
            f"{purpose} needs {package}, which is not installed: pip install {install} "
            "(or pip install 'jaxgru[convert]')"
        ) from None


def numpy_f32(array: Any) -> np.ndarray:
    """Any array (NumPy, JAX, or a torch tensor) as a float32 NumPy array of the same shape."""
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


def swap_zr(blocks: np.ndarray, axis: int = 0) -> np.ndarray:
    """Swap the first two of three equal blocks along ``axis``: ``z|r|h`` <-> ``r|z|h``."""
    first, second, third = np.split(np.asarray(blocks), 3, axis=axis)
    return np.concatenate([second, first, third], axis=axis)


def same_activation(identifier: Any, name: str) -> bool:
    """True when a GRU's activation field means the Keras activation ``name``."""
    return identifier == name or activations.get(identifier) is activations.get(name)


def inner_gru(layer: GRU | Bidirectional) -> GRU:
    """The GRU itself, or the one a ``Bidirectional`` wraps (whose backward direction must
    mirror it: the other frameworks' bidirectional GRUs run one setting both ways)."""
    if not isinstance(layer, Bidirectional):
        return layer
    if not layer.mirrored:
        raise ConversionError(
            f"Bidirectional {layer.name!r} has a backward_layer with settings of its own; "
            "PyTorch, ONNX, Flax and Equinox run one GRU setting in both directions, so it "
            "cannot be converted exactly"
        )
    return layer.layer


def check_reset_after(layer: GRU, target: str) -> None:
    """Refuse ``reset_after=False`` for a ``target`` that applies r after the recurrent matmul."""
    if not layer.reset_after:
        raise ConversionError(
            f"GRU {layer.name!r} has reset_after=False, which {target} cannot hold exactly: "
            f"{target} applies the reset gate after the recurrent matmul, "
            "r ⊙ (h_prev U_h + b_h,h), while reset_after=False computes (r ⊙ h_prev) U_h, a "
            "different function. Retrain with reset_after=True, or export to ONNX "
            "(linear_before_reset=0 is exactly reset_after=False)"
        )


def check_standard_cell(layer: GRU, target: str) -> None:
    """Refuse a GRU whose step math ``target`` (a cell with σ=sigmoid, φ=tanh) cannot express.

    Raises:
        ConversionError: for ``reset_after=False`` or non-default activations.
    """
    check_reset_after(layer, target)
    for field, name in (("recurrent_activation", "sigmoid"), ("activation", "tanh")):
        if not same_activation(getattr(layer, field), name):
            raise ConversionError(
                f"GRU {layer.name!r} has {field}={getattr(layer, field)!r}; {target} always "
                f"uses {name}, so the outputs would differ"
            )


def check_no_bias(layer: GRU, b_x: np.ndarray, b_h: np.ndarray, target: str, fix: str) -> None:
    """Refuse non-zero biases for a bias-free ``target``; ``fix`` says how to keep them."""
    if np.any(b_x) or np.any(b_h):
        raise ConversionError(
            f"GRU {layer.name!r} has non-zero biases, which {target} cannot hold; {fix}"
        )


def gru_bias_rows(layer: GRU, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(b_x, b_h)``, each ``(3u,)`` in Keras order; zeros where the layer has no bias.

    Only for ``reset_after=True`` layers (row 0 input bias, row 1 recurrent bias).
    """
    zeros = np.zeros(3 * layer.units, np.float32)
    if not layer.use_bias:
        return zeros, zeros
    bias = numpy_f32(params["bias"])
    return bias[0], bias[1]


def fold_recurrent_zr(b_x: np.ndarray, b_h: np.ndarray, units: int) -> np.ndarray:
    """The input bias with the recurrent z and r biases added in: ``(3u,)``, Keras order.

    ``σ(x W + b_x + h U + b_h)`` only ever sees the sum for z and r, so folding is exact up to
    the one float32 rounding of the sum; ``b_h,h`` cannot fold (it sits inside ``r ⊙ (...)``).
    """
    folded = b_x.copy()
    folded[: 2 * units] += b_h[: 2 * units]
    return folded


def unfolded_bias(folded: np.ndarray, b_hh: np.ndarray, units: int) -> np.ndarray:
    """A Keras ``bias (2, 3u)`` from a folded input bias and the candidate's recurrent bias."""
    recurrent = np.zeros(3 * units, np.float32)
    recurrent[2 * units :] = b_hh
    return np.stack([numpy_f32(folded), recurrent])
