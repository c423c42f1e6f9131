"""Model files by format, for ``jaxgru convert IN OUT``: Keras, PyTorch state_dict and ONNX.

The format comes from the file name unless given: ``.keras`` and ``.h5`` (Keras), ``.pt`` and
``.pth`` (a ``torch.save``'d ``nn.GRU`` state_dict), ``.onnx`` (written, not read).
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxgru._files import atomic_write
from jaxgru.convert._common import ConversionError, require
from jaxgru.convert.onnx_export import to_onnx
from jaxgru.convert.pytorch import from_torch, to_torch, torch_gru_kwargs
from jaxgru.keras_io import load_keras, save_keras, save_keras_weights
from jaxgru.model import Sequential

FORMATS = ("keras", "h5", "torch", "onnx")
_SUFFIXES = {".keras": "keras", ".h5": "h5", ".pt": "torch", ".pth": "torch", ".onnx": "onnx"}


def format_of(path: Path, given: str | None) -> str:
    """``given``, or the format that the file name's suffix names."""
    if given is not None:
        if given not in FORMATS:
            raise ConversionError(f"unknown format {given!r}; expected one of {FORMATS}")
        return given
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise ConversionError(
            f"{path}: cannot tell the format from {path.suffix or 'no suffix'!r}; use a name "
            f"ending in {', '.join(_SUFFIXES)} or pass --from/--to ({', '.join(FORMATS)})"
        ) from None


def read_model(
    path: str | os.PathLike, fmt: str | None = None, *, torch_prefix: str | None = None
) -> tuple[Sequential, dict]:
    """``(model, params)`` from a Keras file or a PyTorch ``nn.GRU`` state_dict file."""
    path = Path(path)
    fmt = format_of(path, fmt)
    if fmt == "onnx":
        raise ConversionError(
            f"{path}: jaxgru writes ONNX but does not read it; convert from the model's "
            ".keras or .pt file instead"
        )
    if fmt in ("keras", "h5"):
        return load_keras(path)
    torch = require("torch", "reading a .pt file")
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch each fail their own way
        raise ConversionError(
            f"{path} is not a torch state_dict file ({type(error).__name__}); write one with "
            "torch.save(module.state_dict(), path)"
        ) from None
    return from_torch(state, prefix=torch_prefix)


def write_model(
    model: Sequential, params: dict, path: str | os.PathLike, fmt: str | None = None
) -> str:
    """Write ``model`` atomically in the format ``path`` names; returns a line describing it."""
    path = Path(path)
    fmt = format_of(path, fmt)
    if fmt == "keras":
        save_keras(model, params, path)
        return f"Keras model with layers {[layer.name for layer in model.layers]}"
    if fmt == "h5":
        if not path.name.endswith(".weights.h5"):
            raise ConversionError(
                f"{path}: jaxgru writes Keras 3 files, .keras (model) or .weights.h5 (weights)"
            )
        save_keras_weights(model, params, path)
        return "Keras 3 weights"
    if fmt == "onnx":
        to_onnx(model, params, path)
        return "ONNX graph (opset 17) with input 'input' and output 'output'"
    torch = require("torch", "writing a .pt file")
    state = to_torch(model, params)
    atomic_write(path, lambda f: torch.save(state, f))
    kwargs = ", ".join(f"{k}={v}" for k, v in torch_gru_kwargs(model, params).items())
    return f"state_dict of torch.nn.GRU({kwargs})"
