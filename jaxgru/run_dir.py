"""A run directory owned by one process: an OS lock, a marker, and nothing else's files.

``jaxgru train`` opens its run directory with ``open_run_dir`` before it writes anything:

- A folder that is neither empty nor a jaxgru run is refused, untouched: the run would replace
  its ``model.keras`` and prune its ``checkpoints/``.
- The folder's ``.lock`` file is locked (``fcntl.flock``, exclusive) for as long as the run
  lives. The OS releases the lock when the process ends, however it ends (SIGKILL included),
  so a lock is never stale; a second ``train`` or ``--resume`` on a locked run is refused
  with the holder's pid.
- Under the lock: the run's claim is checked (a new run into a folder that holds one, or a
  resume whose config differs, is refused), temporary files a killed writer left are removed,
  and ``jaxgru-run.json`` marks the folder as a jaxgru run. Runs written before the marker
  existed are recognised by their ``config.toml`` and ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from jaxgru._files import atomic_write_text, is_temporary
from jaxgru._version import __version__
from jaxgru.errors import RunError

MARKER = "jaxgru-run.json"
LOCK = ".lock"


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a jaxgru run directory (its marker, or a run from before it)."""
    path = Path(path)
    return (path / MARKER).is_file() or (
        (path / "config.toml").is_file() and (path / "checkpoints").is_dir()
    )


def run_dir_holding(path: str | os.PathLike) -> Path | None:
    """The run directory ``path`` lies in (``path`` itself or a parent), or ``None``."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if folder.is_dir() and is_run_dir(folder):
            return folder
    return None


@contextlib.contextmanager
def open_run_dir(run_dir: Path, claim: Callable[[Path], None]) -> Iterator[Path]:
    """Hold ``run_dir`` for one run: refuse another's folder, lock, ``claim(run_dir)``, clean.

    ``claim`` raises ``RunError`` when the folder's run is not this one to write (it runs
    under the lock, so it sees what the last holder left). The lock is released on exit.

    Raises:
        RunError: a folder that is not a run, a run held by another process, or the claim's.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory; set run.dir to a folder")
    if run_dir.is_dir() and not is_run_dir(run_dir) and _own_entries(run_dir):
        raise RunError(
            f"{run_dir} is not empty and is not a jaxgru run, so training there could "
            "replace its files; set run.dir (or name) to a new or empty folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            _lock(fd)
        except OSError:
            holder = (run_dir / LOCK).read_text(errors="replace").strip() or "unknown"
            raise RunError(
                f"{run_dir} is in use by another jaxgru process (pid {holder}); wait for it "
                "to finish or stop it, or train into another run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        claim(run_dir)
        _remove_temporary_files(run_dir)
        if not (run_dir / MARKER).is_file():
            atomic_write_text(run_dir / MARKER, json.dumps({"jaxgru": __version__}) + "\n")
        yield run_dir
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int) -> None:
    """Lock ``fd`` exclusively without waiting (``OSError`` when another process holds it)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _own_entries(run_dir: Path) -> list[Path]:
    """What the folder holds besides a lock file and temporary files of a killed writer."""
    return [p for p in run_dir.iterdir() if p.name != LOCK and not is_temporary(p)]


def _remove_temporary_files(run_dir: Path) -> None:
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for path in folder.iterdir():
                if is_temporary(path) and path.is_file():
                    path.unlink(missing_ok=True)
