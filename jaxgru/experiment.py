"""Runs of experiment configs: train into a run directory, resume, evaluate, predict.

A run directory holds::

    config.toml       the resolved config (every default filled in)
    metrics.jsonl     one JSON line per epoch: loss, val_loss, metrics
    checkpoints/      ckpt-<epoch>.npz: params, optimizer state, step, rng (last N + best)
    loss_curve.png    training loss per step, and loss / val_loss per epoch
    model.keras       the final model, readable by keras.models.load_model
    model.keras.sha256.json  its checksums (``jaxgru inspect --verify``)
    jaxgru-run.json   the marker of a jaxgru run; .lock, the lock of the process writing it
    results.json      test metrics next to the trivial baselines
    data.json         the scaling of series data, which ``predict`` applies to new input
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from jaxgru import checkpoint, config
from jaxgru._files import atomic_write, atomic_write_text
from jaxgru.data import Dataset, load_dataset, read_csv_columns, read_csv_table
from jaxgru.data_checks import check_model_input
from jaxgru.distributed import is_primary, same_on_every_process, to_host
from jaxgru.errors import InputError, RunError
from jaxgru.keras_io import load_keras, save_keras
from jaxgru.model import Sequential
from jaxgru.run_dir import open_run_dir
from jaxgru.train import (
    PreparedFit,
    Progress,
    TrainConfig,
    TrainingDiverged,
    TrainState,
    check_whole_batches,
    evaluate,
    predict,
    prepare_fit,
)


@dataclass(frozen=True)
class Experiment:
    """A resolved config turned into objects: data, model, optimizer and fit settings."""

    cfg: dict
    data: Dataset
    model: Sequential
    train: TrainConfig

    @classmethod
    def from_config(cls, cfg: dict) -> Experiment:
        data = load_dataset(**cfg["data"])
        layers = [config.build_layer(spec) for spec in cfg["model"]["layers"]]
        name = cfg["model"].get("name", cfg["name"])
        try:
            model = Sequential(layers, input_shape=data.train.x.shape[1:], name=name)
        except (TypeError, ValueError) as error:
            raise config.ConfigError(f"model: {error}") from None
        return cls(cfg, data, model, config.dataclass_from(TrainConfig, cfg["train"]))

    def prepare(self, devices: int | None = None, shard_params: bool = False) -> PreparedFit:
        """The run's ``fit``, every check done and the optimizer built (``prepare_fit``):
        params drawn from the seed, the train and validation splits, ``[train]``."""
        data, seed = self.data, self.cfg["seed"]
        val = data.val
        if self.model.initial_states(1):  # evaluate carries the state: whole batches there too
            check_whole_batches(self.train.batch_size, ("validation", data.val.x),
                                ("test", data.test.x))  # fmt: skip
        return prepare_fit(
            self.model, self.model.init(jax.random.key(seed)), data.train.x, data.train.y,
            self.train, sample_weight=data.train.sample_weight, seed=seed,
            validation_data=(val.x, val.y, val.sample_weight) if len(val) else None,
            devices=devices, shard_params=shard_params,
        )  # fmt: skip

    def optimizer(self):
        """The optax optimizer of ``[train]``, as the run builds it (``TrainConfig``)."""
        return self.train.make_optimizer(len(self.data.train))

    def evaluate(self, params, split) -> dict[str, float]:
        """``split``'s loss and metrics (a stateful model's state from zeros)."""
        t = self.train
        logs = evaluate(
            self.model, params, split.x, split.y, loss=t.loss, metrics=t.metrics,
            from_logits=t.from_logits, sample_weight=split.sample_weight, batch_size=t.batch_size,
        )  # fmt: skip
        return logs[0] if isinstance(logs, tuple) else logs


def run_dir_of(cfg: dict) -> Path:
    return Path(cfg["run"]["dir"] or Path("runs") / cfg["name"])


def train_run(cfg: dict, resume: bool = False, log=print) -> dict:
    """Train the resolved config ``cfg`` into its run directory; returns the results.

    Everything is checked before anything is written (the config, the data, the model
    against the data: ``Experiment.prepare``), so a refused run leaves nothing behind. The
    run directory is then held by this process alone (``jaxgru.run_dir``) until it returns.

    In a multi-process run (``jaxgru.distributed``) every process calls this with the same
    config and trains its share of each batch; only process 0 holds and writes the run
    directory and logs. Resuming reads the checkpoints in every process, so the run directory
    must be on a file system they share.

    Raises:
        RunError: the directory is another's, held by another process, holds another run,
            or a resume does not match it.
        TrainingDiverged: the loss became NaN or inf (the last good checkpoint is kept).
    """
    run_dir = run_dir_of(cfg)
    primary = is_primary()
    log = log if primary else _silent
    devices = _mesh_devices(cfg["mesh"])
    exp = Experiment.from_config(cfg)
    prepared = exp.prepare(devices, cfg["mesh"]["shard_params"])
    claim = lambda folder: _claim(folder, cfg, resume)  # noqa: E731
    held = open_run_dir(run_dir, claim) if primary else contextlib.nullcontext()
    with held:
        return _train_held_run(exp, prepared, run_dir, resume, log, devices)


def _train_held_run(exp: Experiment, prepared: PreparedFit, run_dir: Path, resume: bool, log,
                    devices) -> dict:  # fmt: skip
    cfg, primary = exp.cfg, is_primary()
    template = prepared.initial_state()
    restored = None
    if resume:
        restored = checkpoint.restore_latest(run_dir / "checkpoints", template, warn=log)
        same_on_every_process(
            restored[1].epoch if restored else -1,
            f"the processes found different checkpoints in {run_dir / 'checkpoints'}; "
            "resuming a multi-process run needs its run directory on a file system that "
            "every process sees",
        )
    if restored:
        log(f"resuming from {restored[2]} (epoch {restored[1].epoch})")
    if primary:
        atomic_write_text(run_dir / "config.toml", config.to_toml(cfg))
        atomic_write_text(run_dir / "data.json", json.dumps({"scale": exp.data.scale}, indent=1))
    log(exp.model.summary())
    if devices is not None:
        log(f"data parallel over {devices if devices != -1 else jax.device_count()} devices "
            f"in {jax.process_count()} process(es)")  # fmt: skip

    def on_epoch_end(state: TrainState, progress: Progress) -> None:
        host_state = to_host(state)  # every process: gathering may need all of them
        if primary:
            checkpoint.write_checkpoint(
                run_dir / "checkpoints", host_state, progress, cfg["run"]["keep_checkpoints"]
            )
            _write_metrics(run_dir, progress.history)

    try:
        params, history = prepared.run(
            callbacks=[on_epoch_end], resume=restored and restored[:2],
            verbose=int(cfg["run"]["progress_bar"] and primary),
            tensorboard=run_dir / "tensorboard" if cfg["run"]["tensorboard"] and primary
            else None,
        )  # fmt: skip
    except TrainingDiverged as error:
        kept = checkpoint.checkpoint_paths(run_dir / "checkpoints")
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no epoch finished"
        raise TrainingDiverged(f"{error}; {where}") from None
    results = {"epochs": len(history["loss"]), "final": {k: v[-1] for k, v in history.items()
                                                         if k != "batch_loss"}}  # fmt: skip
    results["test"] = exp.evaluate(params, exp.data.test) if len(exp.data.test) else {}
    results["baselines"] = exp.data.baselines
    if primary:
        save_keras(exp.model, params, run_dir / "model.keras", manifest=True)
        if cfg["run"]["plot"]:
            plot_history(history, run_dir / "loss_curve.png", title=cfg["name"])
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))
    return results


def _silent(_text: str) -> None:
    """The log of a process other than 0."""


def _mesh_devices(mesh: dict) -> int | None:
    """``fit``'s ``devices`` for ``[mesh]``: ``None`` for a single device."""
    if mesh["data"] == 1:
        if jax.process_count() > 1:
            raise RunError(
                f"this is process {jax.process_index()} of {jax.process_count()}, but "
                "mesh.data = 1 would train each process alone; set mesh.data = -1 "
                "(--set mesh.data=-1) to split each batch over every process's devices"
            )
        return None
    return mesh["data"]


def _claim(run_dir: Path, cfg: dict, resume: bool) -> None:
    saved = run_dir / "config.toml"
    if not saved.exists():
        return
    if not resume:
        raise RunError(
            f"{run_dir} already holds a run; pass --resume to continue it, or "
            f"--set run.dir=... to start another"
        )
    before = config.load(saved)
    differs = [
        f"{part}.{key}"
        for part in ("data", "model", "train")
        for key in set(before[part]) | set(cfg[part])
        if before[part].get(key) != cfg[part].get(key) and (part, key) != ("train", "epochs")
    ] + [key for key in ("seed", "name") if before[key] != cfg[key]]
    if differs:
        raise RunError(
            f"cannot resume {run_dir}: the config differs from the run's in {sorted(differs)} "
            "(only train.epochs may change on resume)"
        )


def _write_metrics(run_dir: Path, history: dict) -> None:
    names = [k for k in history if k != "batch_loss"]
    lines = [
        json.dumps({"epoch": i + 1, **{k: history[k][i] for k in names}})
        for i in range(len(history["loss"]))
    ]
    atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")


def plot_history(history: dict, path: Path, title: str = "") -> None:
    """Training loss per step and loss / val_loss per epoch, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    steps = np.arange(1, len(history["batch_loss"]) + 1)
    ax.plot(steps, history["batch_loss"], color="0.75", lw=0.8, label="loss per step")
    per_epoch = len(steps) / max(len(history["loss"]), 1)
    epoch_end = per_epoch * np.arange(1, len(history["loss"]) + 1)
    ax.plot(epoch_end, history["loss"], "o-", label="loss (epoch mean)")
    if "val_loss" in history:
        ax.plot(epoch_end, history["val_loss"], "s-", label="val_loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def open_run(run_dir: str | Path) -> tuple[Experiment, dict]:
    """The experiment and final params of a finished run (from its ``model.keras``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise RunError(f"{run_dir} is not a run directory (it has no config.toml)")
    if not (run_dir / "model.keras").is_file():
        raise RunError(f"{run_dir} has no model.keras yet; finish training it with --resume")
    exp = Experiment.from_config(config.load(run_dir / "config.toml"))
    _, params = load_keras(run_dir / "model.keras")
    return exp, params


def read_input(path: str | Path, exp: Experiment) -> np.ndarray:
    """``(batch, *input_shape)`` from a ``.npy`` or a ``.csv`` with a header (rows are time
    steps; the config's ``x_columns``, or every column), checked for the run's model."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise InputError(f"cannot read {path} as .npy: {error}") from None
    elif path.suffix == ".csv":
        columns = exp.cfg["data"].get("x_columns")
        x = read_csv_table(path)[1] if columns is None else read_csv_columns(path, columns)
    else:
        raise InputError(f"{path}: predict reads .npy or .csv files")
    x = np.asarray(x)
    x = x[None] if x.ndim == len(exp.model.input_shape) else x  # one sequence
    return check_model_input(exp.model, str(path), x).astype(np.float32)


def _scale_of(run_dir: Path) -> dict | None:
    """The standardisation ``data.json`` records (``None``: the data was not scaled)."""
    path = run_dir / "data.json"
    try:
        scale = json.loads(path.read_text(encoding="utf-8"))["scale"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"{path} is not a run's data.json ({error}); retrain the run") from None
    if scale is not None and not (
        isinstance(scale, dict) and {"x_mean", "x_std", "y_mean", "y_std"} <= set(scale)
    ):
        raise RunError(f"{path} does not hold the data's scale; retrain the run")
    return scale or None


def predict_run(run_dir: str | Path, input_path: str | Path) -> np.ndarray:
    """The run's model on new input, scaled as its training data was: ``(batch, outputs)``."""
    exp, params = open_run(run_dir)
    x = read_input(input_path, exp)
    scale = _scale_of(Path(run_dir))
    if scale:
        x = (x - np.float32(scale["x_mean"])) / np.float32(scale["x_std"])
    y = predict(exp.model, params, x, exp.train.batch_size)
    if exp.model.initial_states(1):  # stateful GRUs: from zeros, carried batch to batch
        y, _ = y
    if scale:
        y = y * np.float32(scale["y_std"]) + np.float32(scale["y_mean"])
    return y
