"""TensorBoard scalars from ``fit``, laid out as Keras's ``TensorBoard`` callback lays them out.

``fit(..., tensorboard="logs/run1")`` (or ``[run] tensorboard = true`` in a config, which logs
to ``<run dir>/tensorboard``) writes event files with tensorboardX, no TensorFlow:

- ``<dir>/train``: ``epoch_loss``, ``epoch_<metric>`` and ``epoch_learning_rate`` at step
  ``epoch`` (0-based, as Keras), ``batch_loss`` and ``batch_learning_rate`` at every
  optimizer step (each step's own loss, where Keras's ``update_freq="batch"`` logs the
  epoch's running mean);
- ``<dir>/validation``: ``epoch_loss`` and ``epoch_<metric>`` of the validation data.

Open them with ``tensorboard --logdir logs/run1``. A resumed run appends to the same folders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TensorBoardLogger:
    """A ``fit`` callback ``(state, progress)`` writing the epoch just finished.

    ``learning_rate_at(step) -> float | None`` gives the rate of optimizer step ``step``
    (``None``: not known, e.g. for an optax optimizer given as it is); a run that logs
    ``learning_rate`` per epoch (``ReduceLROnPlateau``) takes each epoch's from its history.
    """

    def __init__(self, log_dir: str | os.PathLike, learning_rate_at: Callable | None = None):
        from tensorboardX import SummaryWriter  # imported here: ``import jaxgru`` stays light

        self.log_dir = Path(log_dir)
        self._writers = {part: SummaryWriter(str(self.log_dir / part))
                         for part in ("train", "validation")}  # fmt: skip
        self._learning_rate_at = learning_rate_at or (lambda step: None)

    def __call__(self, state: Any, progress: Any) -> None:
        history, epoch = progress.history, progress.epoch - 1
        train, validation = self._writers["train"], self._writers["validation"]
        for name, values in history.items():
            if name == "batch_loss":
                continue
            if name.startswith("val_"):
                validation.add_scalar(f"epoch_{name[4:]}", values[epoch], epoch)
            else:
                train.add_scalar(f"epoch_{name}", values[epoch], epoch)
        steps = history["batch_loss"]
        per_epoch = len(steps) // progress.epoch
        first = epoch * per_epoch
        logged = history.get("learning_rate")
        for step in range(first, first + per_epoch):
            train.add_scalar("batch_loss", steps[step], step)
            rate = logged[epoch] if logged else self._learning_rate_at(step)
            if rate is not None:
                train.add_scalar("batch_learning_rate", rate, step)
        if not logged and (rate := self._learning_rate_at(first)) is not None:
            train.add_scalar("epoch_learning_rate", rate, epoch)
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
