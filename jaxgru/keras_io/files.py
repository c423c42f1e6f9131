"""Keras files in and out, with h5py, zipfile and json only (no TensorFlow).

Reads: Keras 3 ``.keras`` zips, ``.weights.h5``, full-model ``.h5`` from Keras 3 or
tf_keras 2.x, weights-only ``.h5`` from tf_keras 2.x, and live ``keras.Model`` objects.
Writes: ``.keras`` that Keras 3's ``keras.models.load_model`` reads, and ``.weights.h5``.
Every write goes to a temporary file in the same folder and is renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from jaxgru import layer as protocol
from jaxgru._files import atomic_write
from jaxgru._version import __version__
from jaxgru.keras_io import h5
from jaxgru.keras_io.errors import KerasFileError
from jaxgru.keras_io.graph_config import in_keras_order, model_from_config, model_to_config
from jaxgru.keras_io.manifest import write_manifest
from jaxgru.keras_io.weights import from_keras_weights, to_keras_weights
from jaxgru.model import Sequential

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"


def _kind(path: Path) -> str:
    """``"zip"`` or ``"hdf5"`` from the file's first bytes."""
    if not path.exists():
        if path.with_name(path.name + ".index").exists():
            raise KerasFileError(
                f"{path} is a TensorFlow checkpoint prefix ({path.name}.index, .data-*), not a "
                "Keras file; restore it into the Keras model (model.load_weights) and pass the "
                "live model to jaxgru.load_keras, or save its weights as .weights.h5"
            )
        raise KerasFileError(f"{path}: no such file")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise KerasFileError(
                f"{path} is a TensorFlow SavedModel, which holds a TensorFlow graph rather than "
                "a Keras config; load it in Keras (tf_keras.models.load_model) and pass the "
                "live model to jaxgru.load_keras, or save it as .keras"
            )
        raise KerasFileError(f"{path} is a folder, not a .keras or .h5 file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_SIGNATURE):
        return "zip"
    if head == _HDF5_SIGNATURE:
        return "hdf5"
    raise KerasFileError(
        f"{path} is neither a .keras (zip) nor an HDF5 (.h5) file; jaxgru reads .keras, "
        ".weights.h5 and .h5 files written by Keras"
    )


def _reading(path: Path, what: str, read: Callable[[], Any]) -> Any:
    """Run ``read``; any low-level failure of a damaged file becomes one KerasFileError."""
    try:
        return read()
    except KerasFileError:
        raise
    except Exception as error:  # zipfile, zlib, h5py and json each fail their own way
        raise KerasFileError(
            f"{path}: cannot read {what}; the file is damaged or truncated "
            f"({type(error).__name__}: {error})"
        ) from None


def _read_zip(path: Path) -> tuple[dict, bytes]:
    """A .keras zip -> (config, model.weights.h5 bytes); both entries are CRC-checked."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        for required in ("config.json", "model.weights.h5"):
            if required not in names:
                raise KerasFileError(
                    f"{path} has no '{required}' entry (it holds {names}); not a Keras .keras file"
                )
        return json.loads(archive.read("config.json")), archive.read("model.weights.h5")


def _is_legacy_version(version: Any) -> bool:
    version = version.decode() if isinstance(version, bytes) else str(version or "")
    return version.startswith(("1.", "2."))


def _assemble(
    model: Sequential, arrays: dict[str, list[np.ndarray]], source: str, legacy: bool
) -> dict:
    """``{stored layer name: arrays}`` -> params, matching by name or else by order."""
    with_weights = model.param_shapes()
    weighted = [layer for layer in model.layers if layer.name in with_weights]
    stored = {name: a for name, a in arrays.items() if a}
    if not all(layer.name in stored for layer in weighted):
        if len(stored) != len(weighted):
            raise KerasFileError(
                f"{source}: holds weights for layers {list(stored)}, but the model's layers "
                f"with weights are {[layer.name for layer in weighted]}"
            )
        stored = dict(zip((layer.name for layer in weighted), stored.values()))  # tf_keras order
    extra = sorted(set(stored) - {layer.name for layer in weighted})
    if extra:
        raise KerasFileError(f"{source}: holds weights for layers {extra} the model lacks")
    flat = []
    for layer in weighted:
        flat += protocol.from_keras_arrays(layer, stored[layer.name], legacy)  # a CuDNNGRU's
    try:
        return from_keras_weights(model, flat)
    except ValueError as error:
        raise KerasFileError(f"{source}: {error}") from None


def _open_h5(path: Path, contents: bytes | None = None) -> h5py.File:
    """The HDF5 weights: ``contents`` (from inside a .keras) or else the file at ``path``."""
    source = path if contents is None else io.BytesIO(contents)
    return _reading(path, "the HDF5 weights", lambda: h5py.File(source, "r"))


def _read_weights(f: h5py.File, model: Sequential, path: Path) -> dict:
    """Params for ``model`` from an open HDF5 file in either Keras layout."""

    def read() -> dict:
        legacy = h5.is_legacy(f)
        arrays = h5.read_legacy(f) if legacy else h5.read_keras3(f, model)
        return _assemble(model, arrays, str(path), legacy)

    return _reading(path, "the weights", read)


def _load_live(keras_model: Any) -> tuple[Sequential, dict]:
    legacy = type(keras_model).__module__.startswith("tf_keras")
    config = {"class_name": type(keras_model).__name__, "config": keras_model.get_config()}
    model = model_from_config(config, legacy=legacy)
    arrays = {layer.name: layer.get_weights() for layer in keras_model.layers}
    return model, _assemble(model, arrays, f"Keras model {keras_model.name!r}", legacy)


def load_keras(source: str | os.PathLike | Any) -> tuple[Sequential, dict]:
    """Load a Keras model as a ``Sequential`` and its params.

    Args:
        source: a ``.keras`` file, a full-model ``.h5`` (Keras 3 or tf_keras 2.x), or a live
            ``keras.Model`` (Keras is imported only by the caller).

    Returns:
        ``(model, params)``; params are keyed by Keras's layer names.

    Raises:
        KerasFileError: (a ``ValueError``) naming what is wrong with the file or model.
    """
    if hasattr(source, "get_config") and hasattr(source, "layers"):
        return _load_live(source)
    path = Path(source)
    if _kind(path) == "zip":
        config, weights = _reading(path, "the .keras archive", lambda: _read_zip(path))
        model = model_from_config(config, legacy=False)
        with _open_h5(path, weights) as f:
            return model, _read_weights(f, model, path)
    with _open_h5(path) as f:
        attrs = _reading(path, "the HDF5 attributes", lambda: dict(f.attrs))
        if "model_config" not in attrs:
            raise KerasFileError(
                f"{path} holds weights only; build the model and call "
                "jaxgru.load_keras_weights(model, path)"
            )
        config = _reading(path, "model_config", lambda: json.loads(attrs["model_config"]))
        model = model_from_config(config, legacy=_is_legacy_version(attrs.get("keras_version")))
        return model, _read_weights(f, model, path)


def load_keras_weights(model: Sequential, path: str | os.PathLike) -> dict:
    """Read a weights file into params for ``model``.

    Args:
        model: the ``Sequential`` the weights belong to.
        path: a ``.weights.h5`` (Keras 3), a weights-only or full-model ``.h5`` (Keras 3 or
            tf_keras 2.x), or a ``.keras`` file (its weights are used).

    Returns:
        Params keyed by the model's layer names. Layers are matched by name; a legacy ``.h5``
        whose names differ is matched by order, as tf_keras's ``load_weights`` does.
    """
    path = Path(path)
    contents = None
    if _kind(path) == "zip":
        contents = _reading(path, "the .keras archive", lambda: _read_zip(path))[1]
    with _open_h5(path, contents) as f:
        return _read_weights(f, model, path)


def _keras_ordered(model: Any) -> Any:
    """A graph ``Model`` with its layers in Keras 3's order (which numbers its HDF5 keys)."""
    return model if isinstance(model, Sequential) else in_keras_order(model)


def _weights_bytes(model: Sequential, params: dict) -> bytes:
    model = _keras_ordered(model)
    to_keras_weights(model, params)  # validates every name and shape first
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        h5.write_keras3(f, model, params)
    return buffer.getvalue()


def save_keras_weights(
    model: Sequential, params: dict, path: str | os.PathLike, manifest: bool = False
) -> None:
    """Write params as a Keras 3 ``.weights.h5`` (``keras_model.load_weights`` reads it);
    with ``manifest``, also its checksum manifest (``jaxgru.keras_io.manifest``)."""
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise KerasFileError(f"{path}: Keras 3 weights files must end in .weights.h5")
    data = _weights_bytes(model, params)
    atomic_write(path, lambda f: f.write(data))
    if manifest:
        write_manifest(path)


def save_keras(
    model: Sequential, params: dict, path: str | os.PathLike, manifest: bool = False
) -> None:
    """Write a Keras 3 ``.keras`` file that ``keras.models.load_model`` reads.

    Args:
        model: a ``Sequential``.
        params: its params.
        path: the output, ending in ``.keras``.
        manifest: also write ``<path>.sha256.json``, the checksums ``jaxgru inspect --verify``
            compares the file with.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise KerasFileError(f"{path}: a Keras model file must end in .keras")
    config = json.dumps(model_to_config(model))
    metadata = json.dumps({"keras_version": "3.0.0", "jaxgru_version": __version__})
    weights = _weights_bytes(model, params)

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w") as archive:
            archive.writestr("metadata.json", metadata)
            archive.writestr("config.json", config)
            archive.writestr("model.weights.h5", weights)

    atomic_write(path, write)
    if manifest:
        write_manifest(path)
