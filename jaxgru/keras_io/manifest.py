"""Checksum manifests of Keras files, so a damaged ``.keras`` or ``.h5`` can be told apart.

HDF5 stores weights without a checksum: a flipped bit in a weight loads silently.
``save_keras(..., manifest=True)`` (and ``save_keras_weights``) write ``<file>.sha256.json``
beside the file: the SHA-256 of the whole file and of every HDF5 dataset (each weight array).
``jaxgru inspect --verify FILE`` (``verify``) recomputes them and names what differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import h5py

from jaxgru._files import atomic_write_text, hash_array
from jaxgru.keras_io.errors import KerasFileError

SUFFIX = ".sha256.json"


def manifest_path(path: str | os.PathLike) -> Path:
    """Where the manifest of ``path`` lies: ``model.keras`` -> ``model.keras.sha256.json``."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def write_manifest(path: str | os.PathLike) -> Path:
    """Write the manifest of the Keras file ``path`` beside it; returns the manifest's path."""
    path = Path(path)
    manifest = {"file": path.name, "sha256": _file_digest(path), "weights": _weights(path)}
    target = manifest_path(path)
    atomic_write_text(target, json.dumps(manifest, indent=1) + "\n")
    return target


def verify(path: str | os.PathLike) -> str:
    """One line saying that ``path`` matches its manifest.

    Raises:
        KerasFileError: no readable manifest, or a file that differs from it (naming every
            weight array that changed, or saying the file no longer reads).
    """
    path = Path(path)
    where = manifest_path(path)
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
        expected, blocks = manifest["sha256"], manifest["weights"]
    except FileNotFoundError:
        raise KerasFileError(
            f"{path} has no manifest {where.name} beside it; save_keras(..., manifest=True) "
            "writes one"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KerasFileError(f"{where} is not a jaxgru checksum manifest: {error}") from None
    if _file_digest(path) == expected:
        return f"{path}: matches its manifest {where.name} (sha256 {expected[:16]}...)"
    try:
        found = _weights(path)
    except Exception as error:  # a damaged zip or HDF5 fails in its own way
        raise KerasFileError(
            f"{path} differs from its manifest {where.name} and its weights no longer read "
            f"({type(error).__name__}: {error}); the file is damaged"
        ) from None
    names = set(blocks) | set(found)
    changed = sorted(name for name in names if blocks.get(name) != found.get(name))
    if changed:
        raise KerasFileError(
            f"{path} differs from its manifest {where.name}: the weight arrays {changed} "
            "changed; the file is damaged or was rewritten"
        )
    raise KerasFileError(
        f"{path} differs from its manifest {where.name}, though every weight array is intact "
        "(its config or metadata changed)"
    )


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _weights(path: Path) -> dict[str, str]:
    """``{HDF5 dataset path: SHA-256 of its dtype, shape and bytes}`` of the file's weights
    (a ``.keras`` file's ``model.weights.h5`` entry, or the ``.h5`` itself)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            source = io.BytesIO(archive.read("model.weights.h5"))
    else:
        source = path
    digests = {}

    def visit(name: str, node) -> None:
        if isinstance(node, h5py.Dataset):
            sha = hashlib.sha256()
            hash_array(sha, node[()])
            digests[name] = sha.hexdigest()

    with h5py.File(source, "r") as f:
        f.visititems(visit)
    return digests
