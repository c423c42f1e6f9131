"""Atomic file writes: a temporary file beside the target, fsynced, then renamed over it.

The temporary file is created with mode ``0o666`` less the umask, so the file the user gets
has the permissions any other program's new file would have.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write through ``write(binary file)``; a crash leaves the old file or none, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write`` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def hash_array(sha: Any, array: Any, label: str = "") -> None:
    """Feed ``label``, the array's dtype and shape, and its bytes into ``sha`` (a
    ``hashlib`` hash): the checksum of one array in a checkpoint or a weights manifest."""
    array = np.ascontiguousarray(array)
    sha.update(f"{label}{array.dtype.str}|{array.shape}|".encode())
    sha.update(array.tobytes())


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is the temporary file of an ``atomic_write`` (left behind by a kill)."""
    return path.name.startswith(".") and path.name.endswith(_SUFFIX) and path.name.count(".") >= 3
