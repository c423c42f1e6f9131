"""Checkpoints of a run: params, optimizer state, step, rng and the loop's progress.

One checkpoint is one ``.npz`` file, ``ckpt-<epoch>.npz``, written to a temporary name and
renamed (see ``jaxgru._files``): a crash, even SIGKILL, leaves the previous checkpoints whole.
Arrays are stored bit for bit under their pytree paths (``state/params/gru/kernel``...); the
host-side ``Progress`` (history, early-stopping bookkeeping) is stored as JSON beside them,
with a SHA-256 of every array (name, dtype, shape and bytes), so a flipped bit is caught.
Restoring needs a template ``TrainState`` of the same structure, built from the run's config;
every name, shape and dtype is checked before anything is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgru._files import atomic_write, hash_array
from jaxgru.errors import CheckpointError, UnreadableCheckpoint
from jaxgru.train import Progress, TrainState

_NAME = re.compile(r"ckpt-(\d+)\.npz")


def _flat(prefix: str, tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save(path: str | os.PathLike, state: TrainState, progress: Progress) -> None:
    """Write ``state`` and ``progress`` (with its best params) atomically to ``path``."""
    arrays = _flat("state", jax.device_get(state))
    if progress.best_params is not None:
        arrays.update(_flat("best", progress.best_params))
    meta = {k: v for k, v in asdict(progress).items() if k != "best_params"}
    meta["sha256"] = _digest(arrays, meta)
    arrays["progress.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    def write(f):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        f.write(buffer.getvalue())

    atomic_write(path, write)


def load(path: str | os.PathLike, template: TrainState) -> tuple[TrainState, Progress]:
    """Read a checkpoint into the structure of ``template``.

    Raises:
        CheckpointError: unreadable file, or names/shapes/dtypes that differ from the template.
    """
    try:
        with open(path, "rb") as handle, np.load(handle) as f:  # closed even when np.load fails
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("progress.json").tobytes())
        digest = meta.pop("sha256", None)  # absent in checkpoints from before the checksum
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, AttributeError) as error:
        raise UnreadableCheckpoint(f"cannot read checkpoint {path}: {error}") from None
    if digest is not None and digest != _digest(arrays, meta):
        raise UnreadableCheckpoint(f"checkpoint {path} is damaged: its arrays fail their checksum")
    try:
        progress = Progress(**meta)
    except TypeError as error:
        raise UnreadableCheckpoint(f"checkpoint {path} has no valid progress: {error}") from None
    state = _restore(path, "state", template, arrays)
    if any(k.startswith("best") for k in arrays):
        progress.best_params = jax.device_get(_restore(path, "best", template.params, arrays))
    return state, progress


def _digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    """SHA-256 over the progress and every array's name, dtype, shape and bytes."""
    sha = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        hash_array(sha, arrays[name], label=f"{name}|")
    return sha.hexdigest()


def _restore(path, prefix: str, template, arrays: dict):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    restored, problems = [], []
    for key_path, leaf in leaves:
        name = prefix + jax.tree_util.keystr(key_path)
        array = arrays.get(name)
        expected = (np.shape(leaf), np.asarray(leaf).dtype)
        if array is None or (array.shape, array.dtype) != expected:
            found = "missing" if array is None else f"{array.shape} {array.dtype}"
            problems.append(f"{name}: expected {expected[0]} {expected[1]}, found {found}")
        else:
            restored.append(jnp.asarray(array))
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run's model and optimizer: "
            + "; ".join(problems[:5])
        )
    return jax.tree_util.tree_unflatten(treedef, restored)


def checkpoint_paths(directory: str | os.PathLike) -> list[Path]:
    """The complete checkpoints in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def write_checkpoint(
    directory: str | os.PathLike, state: TrainState, progress: Progress, keep: int = 3
) -> Path:
    """Save ``ckpt-<epoch>.npz``, then delete all but the newest ``keep`` and the best epoch's."""
    path = Path(directory) / f"ckpt-{progress.epoch:06d}.npz"
    save(path, state, progress)
    best = None if progress.best_epoch is None else f"ckpt-{progress.best_epoch + 1:06d}.npz"
    for old in checkpoint_paths(directory)[:-keep]:
        if old.name != best:
            old.unlink()
    return path


def restore_latest(
    directory: str | os.PathLike,
    template: TrainState,
    warn: Callable[[str], None] | None = None,
) -> tuple[TrainState, Progress, Path] | None:
    """The newest checkpoint that reads cleanly, or ``None`` when there is none.

    A checkpoint that cannot be read (truncated, empty, not an .npz, failing its checksum) is
    skipped with one warning line through ``warn`` (default ``warnings.warn``), and the next
    older one is tried. A checkpoint that reads but does not fit ``template`` raises
    ``CheckpointError``.
    """
    for path in reversed(checkpoint_paths(directory)):
        try:
            state, progress = load(path, template)
        except UnreadableCheckpoint as error:
            message = f"warning: skipping unreadable checkpoint: {error}"
            if warn is None:
                warnings.warn(message, stacklevel=2)
            else:
                warn(message)
            continue
        return state, progress, path
    return None
