"""Training on optax: one jitted train step and a ``fit`` loop named after Keras's.

The step is a pure function ``train_step(state, batch) -> (state, measures)`` compiled once:
every batch has the same shape, because the last partial batch is padded to ``batch_size``
with rows of weight 0. The padded rows add nothing to the loss, the gradient, the metrics, the
activity penalties or BatchNormalization's statistics, which count the real rows only, as
Keras counts a partial batch; so no batch is dropped and nothing recompiles.

The loss is Keras's ``compute_loss``: the compiled loss (weighted by ``sample_weight`` and by
the output's Keras mask) plus every regularizer's penalty (``jaxgru.weight_rules``); after the
optimizer step each constrained weight is projected and the moving statistics move.

>>> import jax, jax.numpy as jnp, numpy as np, jaxgru
>>> model = jaxgru.Sequential([jaxgru.GRU(4), jaxgru.Dense(1)], input_shape=(5, 2))
>>> x, y = np.ones((10, 5, 2), np.float32), np.zeros((10, 1), np.float32)
>>> params, history = jaxgru.fit(model, model.init(jax.random.key(0)), x, y, epochs=2,
...                              batch_size=4, verbose=0)
>>> sorted(history), len(history["loss"])
(['batch_loss', 'loss'], 2)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgru import layer as protocol
from jaxgru import weight_rules
from jaxgru._checks import check_count
from jaxgru.data_checks import check_model_input, check_samples, check_targets
from jaxgru.distributed import DataParallel, make_mesh, to_host
from jaxgru.errors import ConfigError, DataError
from jaxgru.losses import broadcast_weights, get_loss, get_metric
from jaxgru.model import Sequential
from jaxgru.optimizers import (
    Schedule,
    ScheduleConfig,
    learning_rate_of,
    learning_rate_schedule,
    make_optimizer,
    steps_of,
    with_learning_rate,
)
from jaxgru.tensorboard import TensorBoardLogger


class TrainState(NamedTuple):
    """Everything a step changes or needs: a pytree of arrays, checkpointed as is.

    ``rng`` is raw key data ``(2,)`` uint32; step ``t`` draws dropout from ``fold_in(rng, t)``.
    ``states`` holds the carried ``(batch, units)`` state of each ``stateful`` GRU.
    """

    params: dict
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array
    states: dict


class Batch(NamedTuple):
    """``x (batch, ...)``, ``y (batch, ...)``, ``weight (batch,)`` or ``(batch, time)`` (0 on
    padding rows), ``valid (batch,)``: 1.0 for real rows, 0.0 for padding."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` stops improving, as Keras's ``EarlyStopping`` callback.

    ``mode="auto"`` maximises names containing ``acc`` and minimises the rest. With
    ``restore_best_weights`` the best epoch's params are returned at the end.
    """

    monitor: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best_weights: bool = False
    start_from_epoch: int = 0

    def improved(self, current: float, best: float | None) -> bool:
        return _improved(self.monitor, self.mode, self.min_delta, current, best)


def _improved(monitor: str, mode: str, min_delta: float, current: float, best: float | None):
    """Keras's ``MonitorCallback`` rule: better than ``best`` by more than ``min_delta``, up
    for ``mode="max"`` (``"auto"``: names with ``acc``), down otherwise."""
    if best is None:
        return True
    maximise = mode == "max" or (mode == "auto" and "acc" in monitor)
    delta = abs(min_delta)
    return current - delta > best if maximise else current + delta < best


@dataclass(frozen=True)
class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved (by more
    than ``min_delta``) for ``patience`` epochs, then wait ``cooldown`` epochs, never below
    ``min_lr``: Keras 3's ``ReduceLROnPlateau`` callback, rule for rule. The rate lives in the
    optimizer state, so changing it recompiles nothing; ``history["learning_rate"]`` logs the
    rate of each epoch, as Keras's does. Needs a constant ``learning_rate`` (as Keras)."""

    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 10
    mode: str = "auto"
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not 0 <= self.factor < 1:
            raise ConfigError(
                f"ReduceLROnPlateau factor must be in [0, 1) (as Keras's), got {self.factor!r}"
            )
        check_count("ReduceLROnPlateau patience", self.patience, minimum=0)
        check_count("ReduceLROnPlateau cooldown", self.cooldown, minimum=0)
        if self.mode not in ("auto", "min", "max"):
            raise ConfigError(f"ReduceLROnPlateau mode must be auto, min or max: {self.mode!r}")

    def step(self, progress: Progress, current: float, rate: float) -> float:
        """The rate for the next epoch after one whose monitored value is ``current`` and rate
        ``rate``; updates the plateau bookkeeping in ``progress``."""
        if progress.plateau_cooldown > 0:
            progress.plateau_cooldown -= 1
            progress.plateau_wait = 0
        if _improved(self.monitor, self.mode, self.min_delta, current, progress.plateau_best):
            progress.plateau_best, progress.plateau_wait = current, 0
            return rate
        if progress.plateau_cooldown > 0:
            return rate
        progress.plateau_wait += 1
        if progress.plateau_wait < self.patience or not rate > np.float32(self.min_lr):
            return rate
        progress.plateau_cooldown, progress.plateau_wait = self.cooldown, 0
        return max(rate * self.factor, self.min_lr)


@dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run, typed: ``[train]`` of a TOML config resolves to it, and
    ``fit(..., config=TrainConfig(...))`` takes it as it is. Each field is the ``fit`` keyword
    of the same name; ``compute_dtype = "float32"`` keeps the params' dtype."""

    loss: str = "mse"
    metrics: list[str] = field(default_factory=list)
    from_logits: bool = False
    optimizer: str = "adam"
    learning_rate: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None
    batch_size: int = 32
    epochs: int = 10
    shuffle: bool = True
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStopping | None = None
    compute_dtype: str = "float32"
    remat_chunk: int | None = None
    gru_kernel: str | None = None
    tbptt_steps: int | None = None
    class_weight: dict[int, float] | None = None
    reset_states: str = "never"
    reduce_lr_on_plateau: ReduceLROnPlateau | None = None

    def fit_kwargs(self, optimizer: optax.GradientTransformation | None = None) -> dict:
        """These settings as ``fit``'s keyword arguments; with ``optimizer`` (the one
        ``make_optimizer`` built), that in place of the settings it was built from."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kwargs["compute_dtype"] = None if self.compute_dtype == "float32" else self.compute_dtype
        if optimizer is not None:
            kwargs = {k: v for k, v in kwargs.items() if k not in _OPTIMIZER_SETTINGS}
            kwargs["optimizer"] = optimizer
        return kwargs

    def make_optimizer(self, samples: int) -> optax.GradientTransformation:
        """The optax optimizer these settings name, for a run over ``samples`` samples (the
        schedule's default decay length is every step of the run after its warmup); an optax
        transformation given as ``optimizer`` is used as it is."""
        if not isinstance(self.optimizer, str):
            return self.optimizer
        return make_optimizer(
            self.optimizer, self.learning_rate, momentum=self.momentum, nesterov=self.nesterov,
            weight_decay=self.weight_decay, clipnorm=self.clipnorm,
            global_clipnorm=self.global_clipnorm, schedule=self.schedule,
            total_steps=steps_of(samples, self.batch_size, self.epochs),
            adjustable_learning_rate=self.reduce_lr_on_plateau is not None,
        )  # fmt: skip


@dataclass
class Progress:
    """The host side of a run: epochs done, history, early-stopping bookkeeping."""

    epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    best_params: Any = None
    stopped: bool = False
    plateau_best: float | None = None  # ReduceLROnPlateau's bookkeeping
    plateau_wait: int = 0
    plateau_cooldown: int = 0


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; training stopped before the params were kept."""


Callback = Callable[[TrainState, Progress], None]


def make_train_step(
    model: Sequential,
    optimizer: optax.GradientTransformation,
    loss: str | Callable = "mse",
    metrics: Sequence[str] = (),
    from_logits: bool = False,
    state_shardings: TrainState | None = None,
    parallel: DataParallel | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The jitted ``train_step(state, batch) -> (state, measures)``.

    ``measures`` holds the batch's ``loss`` and the sums an epoch mean needs (see
    ``epoch_means``). With ``parallel`` (and ``state_shardings``, from
    ``parallel.state_shardings``) the step is one SPMD program over the mesh: the batch
    split over ``data``, the state kept where ``state_shardings`` says, and the gradient
    reduced across devices by XLA.
    """
    measure = _make_measure(model, loss, metrics, from_logits)
    names = frozen_names(model)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        trainable, frozen = split_trainable(state.params, names)

        def objective(trainable):
            return measure(_merge(trainable, frozen), state.states, batch, True, rng)

        (_, (states, measures, moved)), grads = jax.value_and_grad(objective, has_aux=True)(
            trainable
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        frozen = {layer: {**held, **moved.get(layer, {})} for layer, held in frozen.items()}
        params = weight_rules.constrain(model, _merge(trainable, frozen))
        return TrainState(params, opt_state, state.step + 1, state.rng, states), measures

    if parallel is None:
        return jax.jit(train_step)
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, parallel.split),
        out_shardings=(state_shardings, parallel.replicated),
    )


def make_eval_step(
    model: Sequential, loss: str | Callable = "mse", metrics: Sequence[str] = (), from_logits=False
) -> Callable[[dict, dict, Batch], tuple[dict, dict]]:
    """The jitted ``eval_step(params, states, batch) -> (states, measures)``, no dropout.

    It follows its inputs' shardings: a batch split over a mesh is evaluated in parallel.
    Built once per (model, loss, metrics, from_logits), so ``evaluate`` and validation
    compile once per model and batch shape, however often they are called.
    """
    return _eval_step(model, loss, tuple(metrics), from_logits)


@functools.lru_cache(maxsize=64)
def _eval_step(model, loss, metrics: tuple, from_logits):
    measure = _make_measure(model, loss, metrics, from_logits)

    def eval_step(params, states, batch):
        _, (states, measures, _) = measure(params, states, batch, False, None)
        return states, measures

    return jax.jit(eval_step)


def _make_measure(model, loss, metrics, from_logits):
    loss_fn = get_loss(loss, from_logits)
    metric_fns = {name: get_metric(name, from_logits) for name in metrics}

    def measure(params, states, batch: Batch, training: bool, rng):
        """Keras's ``compute_loss`` on one batch: the loss of the real values, masked by the
        output's Keras mask as Keras masks it, plus every regularizer's penalty. The metrics,
        Keras's ``compile(metrics=...)``, see the mask but not the sample weights."""
        x, y, valid = jnp.asarray(batch.x), jnp.asarray(batch.y), jnp.asarray(batch.valid)
        run = model.forward(params, x, training, rng, states=states or None, rows=valid)
        values = loss_fn(y, run.outputs)  # (batch,) or (batch, time)
        weights = broadcast_weights(jnp.asarray(batch.weight), values)
        real = broadcast_weights(valid, values)
        if run.mask is not None:  # Keras: sum(loss * weight * mask) / sum(mask)
            real = real * _loss_mask(run.mask, values).astype(values.dtype)
            weights = weights * real
        loss_value = jnp.sum(weights * values) / jnp.maximum(jnp.sum(real), 1)
        penalties = (weight_rules.weight_penalty(model, params), run.activity)
        loss_value = loss_value + sum(p.astype(loss_value.dtype) for p in penalties)
        rows = jnp.sum(valid)
        measures = {"loss": loss_value, "loss_rows": loss_value * rows, "rows": rows,
                    "weight_sum": jnp.sum(real)}  # fmt: skip
        for name, fn in metric_fns.items():
            measures[f"{name}_sum"] = jnp.sum(real * fn(y, run.outputs))
        return loss_value, (run.states, measures, run.updates)

    return measure


def _loss_mask(mask: jax.Array, values: jax.Array) -> jax.Array:
    """The model output's Keras mask, shaped as the loss values it weights."""
    if mask.shape != values.shape:
        raise ConfigError(
            f"the model's output carries a Keras mask of shape {mask.shape}, which Keras "
            f"applies to the loss, but the loss gives values of shape {values.shape}; give the "
            "model per-step targets (a loss per time step), or drop the mask before the output"
        )
    return mask


def epoch_means(totals: dict, metrics: Sequence[str], prefix: str = "") -> dict[str, float]:
    """Keras's epoch values from summed measures: the batch losses averaged with the batch
    sizes as weights (Keras's loss tracker), the metrics over every real, unmasked value."""
    logs = {f"{prefix}loss": float(totals["loss_rows"] / max(float(totals["rows"]), 1.0))}
    for name in metrics:
        weight = max(float(totals["weight_sum"]), 1e-12)
        logs[f"{prefix}{name}"] = float(totals[f"{name}_sum"] / weight)
    return logs


def batches(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray | None, batch_size: int, order: np.ndarray
) -> Iterator[Batch]:
    """Batches in ``order``; the last one is padded to ``batch_size`` with weight-0 rows."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        real = len(idx)
        pad = batch_size - real
        w = np.ones(real, np.float32) if weight is None else weight[idx].astype(np.float32)
        parts = [x[idx], y[idx], w, np.ones(real, np.float32)]
        if pad:
            parts = [np.concatenate([p, np.zeros((pad, *p.shape[1:]), p.dtype)]) for p in parts]
        yield Batch(*parts)


def init_train_state(
    model: Sequential,
    params: dict,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    seed: int = 0,
) -> TrainState:
    """Step 0: the optimizer's slots for the trainable ``params`` (``split_trainable``), the
    seed's key and zero stateful states."""
    params = jax.tree.map(jnp.asarray, params)
    rng = jax.random.key_data(jax.random.key(seed))
    states = model.initial_states(batch_size, jax.tree.leaves(params)[0].dtype)
    trainable, _ = split_trainable(params, frozen_names(model))
    return TrainState(params, optimizer.init(trainable), jnp.zeros([], jnp.int32), rng, states)


def frozen_names(model: Any) -> dict[str, tuple[str, ...]]:
    """``{layer name: its params no gradient trains}``: Keras's non-trainable weights
    (BatchNormalization's moving statistics), and every weight of a layer built with
    ``trainable=False``."""
    shapes, names = model.param_shapes(), {}
    for layer in model.layers:
        held = protocol.non_trainable(layer)
        if not _trainable(layer):
            held = tuple(shapes.get(layer.name, {}))
        if held:
            names[layer.name] = tuple(held)
    return names


def _trainable(layer: Any) -> bool:
    """Whether the layer (or the layer a wrapper holds) trains: Keras's ``trainable``."""
    return getattr(protocol.wrapped(layer) or layer, "trainable", True) is not False


def split_trainable(params: dict, names: dict[str, tuple[str, ...]]) -> tuple[dict, dict]:
    """``(trainable, frozen)``: ``params`` without the ``names`` (``frozen_names``), and
    those alone; the optimizer only ever sees the first."""
    trainable = {layer: {k: v for k, v in p.items() if k not in names[layer]}
                 if layer in names else p for layer, p in params.items()}  # fmt: skip
    frozen = {layer: {k: params[layer][k] for k in held if k in params[layer]}
              for layer, held in names.items() if layer in params}  # fmt: skip
    return trainable, frozen


def _merge(trainable: dict, frozen: dict) -> dict:
    """The params ``split_trainable`` split, whole again."""
    return {layer: {**p, **frozen[layer]} if layer in frozen else p
            for layer, p in trainable.items()}  # fmt: skip


def fit(
    model: Sequential,
    params: dict,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: str | Callable = "mse",
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: float | Schedule | None = None,
    metrics: Sequence[str] = (),
    from_logits: bool = False,
    batch_size: int = 32,
    epochs: int = 1,
    validation_data: tuple | None = None,
    validation_split: float = 0.0,
    sample_weight: np.ndarray | None = None,
    shuffle: bool = True,
    seed: int = 0,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    schedule: ScheduleConfig | None = None,
    early_stopping: EarlyStopping | None = None,
    callbacks: Sequence[Callback] = (),
    resume: tuple[TrainState, Progress] | None = None,
    devices: int | Sequence | jax.sharding.Mesh | None = None,
    shard_params: bool = False,
    compute_dtype: str | None = None,
    remat_chunk: int | None = None,
    gru_kernel: str | None = None,
    tbptt_steps: int | None = None,
    class_weight: dict[int, float] | None = None,
    reset_states: str = "never",
    reduce_lr_on_plateau: ReduceLROnPlateau | None = None,
    tensorboard: str | os.PathLike | None = None,
    verbose: int = 1,
    config: TrainConfig | None = None,
) -> tuple[dict, dict[str, list[float]]]:
    """Train ``model`` from ``params`` on ``(x, y)``, as Keras's ``compile`` + ``fit``.

    The settings come as Keras-named keywords, or all at once as a ``TrainConfig`` (what a
    TOML config's ``[train]`` resolves to): ``fit(model, params, x, y, config=cfg)``.

    Args:
        x: ``(samples, time, features)`` (or ids ``(samples, time)`` before an Embedding).
        y: targets, e.g. ``(samples, outputs)`` or ``(samples, time)`` of class ids.
        loss, metrics, from_logits: Keras names (see ``jaxgru.losses``).
        optimizer: ``adam``, ``adamw``, ``sgd``, ``rmsprop`` or any optax transformation.
        learning_rate: a float or a schedule (``jaxgru.optimizers.make_schedule``).
        validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, weight_val)``.
        validation_split: the last fraction of ``x`` (before shuffling) held out instead.
        sample_weight: ``(samples,)`` or ``(samples, time)``.
        shuffle, seed: each epoch's order is a permutation seeded by ``(seed, epoch)``; the
            seed also draws dropout. Stateful models need ``shuffle=False``.
        momentum, nesterov, weight_decay, clipnorm, global_clipnorm: optimizer settings, as
            Keras's.
        schedule: a ``ScheduleConfig`` (e.g. ``ScheduleConfig("cosine_decay",
            warmup_steps=100)``) that peaks at ``learning_rate``; without ``decay_steps`` it
            decays over every step of the run after the warmup.
        early_stopping: an ``EarlyStopping``.
        callbacks: called as ``callback(state, progress)`` after every epoch.
        resume: ``(state, progress)`` from a checkpoint; training continues after it.
        devices: data parallelism (``jaxgru.distributed``): ``-1`` for every device of every
            process, ``n`` for the first ``n``, a list of devices or a ``Mesh``. Each batch of
            ``batch_size`` (the global batch) is split over them; the result equals a
            single-device run up to float round-off. ``None`` runs on the default device.
        shard_params: with ``devices``, split params and optimizer state over the devices
            too, instead of replicating them.
        compute_dtype: ``"bfloat16"`` runs the GRUs' matmuls in bfloat16 with a float32 carry
            and float32 master params (``Sequential.with_execution``).
        remat_chunk: rematerialise each GRU's pass over time in chunks of this many steps,
            so memory grows with ``time / remat_chunk`` instead of ``time``.
        gru_kernel: ``"onednn"`` or ``"xla"`` sets every GRU's ``ExecutionOptions.kernel``
            (``jaxgru.execution``; ``None`` keeps each GRU's own).
        tbptt_steps: truncated backpropagation through time: each batch of sequences is cut
            into windows of this many steps, one train step each, and every GRU's state is
            carried from one window into the next (without gradient). Needs per-step targets
            ``y (samples, time, ...)``; the states restart from zeros at each batch.
        class_weight: ``{class id: weight}``, as Keras's: each training sample's loss is
            weighted by its class's weight (1 for a class not named), the class being ``y``
            rounded for ids ``(samples,)`` or ``(samples, 1)`` and its argmax for one-hot
            ``(samples, classes)``. Validation data stays unweighted; not with
            ``sample_weight``.
        reset_states: for stateful GRUs. ``"never"`` (Keras 3's ``fit``): one state runs
            through every batch, the validation batches after each epoch and the next epoch,
            from zeros at the start of the run (a resumed run continues the checkpoint's);
            the samples must then fill whole batches, as Keras's fixed batch size needs.
            ``"epoch"``: every epoch and every validation pass starts from zeros (Keras's
            ``reset_states()`` in an ``on_epoch_begin`` callback).
        reduce_lr_on_plateau: a ``ReduceLROnPlateau``; the learning rate then lives in the
            optimizer state (an optax optimizer given as ``optimizer`` must be an
            ``optax.inject_hyperparams(...)(learning_rate=...)``), and ``history`` logs
            ``learning_rate`` per epoch.
        tensorboard: a folder to write TensorBoard scalars to (loss, metrics and learning
            rate per epoch and per step, ``jaxgru.tensorboard``); ``None`` writes none.
        verbose: 1 shows a progress bar per epoch, 0 is silent.
        config: a ``TrainConfig`` holding every setting above that it has a field for
            (``loss`` ... ``reduce_lr_on_plateau``); those keywords must then be left out.

    Returns:
        ``(params, history)``: history maps ``loss``, ``val_loss`` and metric names to one
        value per epoch, and ``batch_loss`` to every step's training loss.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
    """
    if config is None:
        settings = {name: value for name, value in locals().items() if name in _SETTINGS}
        config = TrainConfig(**{**settings, "compute_dtype": compute_dtype or "float32"})
    else:  # the TrainConfig path meets the keyword path here
        _check_not_given_twice(config, {n: v for n, v in locals().items() if n in _SETTINGS})
    prepared = prepare_fit(
        model, params, x, y, config, validation_data=validation_data,
        validation_split=validation_split, sample_weight=sample_weight, seed=seed,
        devices=devices, shard_params=shard_params,
    )  # fmt: skip
    return prepared.run(callbacks, resume, verbose, tensorboard)


@dataclass(frozen=True)
class PreparedFit:
    """A ``fit`` whose every check has passed (``prepare_fit``); ``run`` trains it.

    ``jaxgru train`` prepares its run before it writes anything, so a run that would fail
    leaves nothing behind, then takes its initial state from ``initial_state`` to restore a
    checkpoint into.
    """

    model: Sequential  # with the execution options (compute dtype, remat) applied
    params: dict
    x: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray | None
    validation_data: tuple | None
    config: TrainConfig
    optimizer: optax.GradientTransformation
    seed: int
    parallel: DataParallel | None

    @property
    def train_model(self) -> Sequential:
        """The model the train step runs: with TBPTT every GRU is stateful (a step takes its
        state and returns the next)."""
        if self.config.tbptt_steps is None:
            return self.model
        return self.model.with_gru_fields(stateful=True)

    def initial_state(self) -> TrainState:
        """Step 0 of this run (``init_train_state``)."""
        return init_train_state(
            self.train_model, self.params, self.optimizer, self.config.batch_size, self.seed
        )

    def learning_rate_at(self, step: int) -> float | None:
        """The learning rate of optimizer step ``step`` (0-based) where the settings say it
        (``None`` for an optax optimizer given as it is; ``ReduceLROnPlateau`` changes it)."""
        c = self.config
        if not isinstance(c.optimizer, str):
            return None
        rate = learning_rate_schedule(c.optimizer, c.learning_rate, c.schedule,
                                      steps_of(len(self.x), c.batch_size, c.epochs))  # fmt: skip
        return float(rate(step)) if callable(rate) else float(rate)

    def run(
        self,
        callbacks: Sequence[Callback] = (),
        resume: tuple[TrainState, Progress] | None = None,
        verbose: int = 1,
        tensorboard: str | os.PathLike | None = None,
    ) -> tuple[dict, dict[str, list[float]]]:
        """Train; ``fit``'s result. ``resume`` is ``(state, progress)`` from a checkpoint;
        ``tensorboard``: a folder for TensorBoard scalars (``jaxgru.tensorboard``)."""
        if tensorboard is None:
            return self._run(callbacks, resume, verbose)
        logger = TensorBoardLogger(tensorboard, self.learning_rate_at)
        try:
            return self._run([*callbacks, logger], resume, verbose)
        finally:
            logger.close()

    def _run(self, callbacks, resume, verbose) -> tuple[dict, dict[str, list[float]]]:
        c, x, y = self.config, self.x, self.y
        train_model = self.train_model
        state, progress = resume or (self.initial_state(), None)
        dtype = jax.tree.leaves(self.params)[0].dtype
        carry = c.reset_states == "never" and c.tbptt_steps is None
        if not (carry and resume):  # a resumed carried state continues from the checkpoint
            state = state._replace(states=train_model.initial_states(c.batch_size, dtype))
        placement = _Placement(self.parallel, state)
        state = placement.state(state)
        zero_states = state.states  # where a reset starts (every epoch, or TBPTT's batches)
        train_step = make_train_step(
            train_model, self.optimizer, c.loss, c.metrics, c.from_logits, placement.shardings,
            self.parallel,
        )  # fmt: skip
        eval_step = make_eval_step(self.model, c.loss, c.metrics, c.from_logits)
        progress = progress or Progress()
        windows = 1 if c.tbptt_steps is None else math.ceil(x.shape[1] / c.tbptt_steps)
        steps = math.ceil(len(x) / c.batch_size) * windows
        while progress.epoch < c.epochs and not progress.stopped:
            order = np.random.default_rng([self.seed, progress.epoch]).permutation(len(x))
            if not carry:
                state = state._replace(states=zero_states)
            bar = tqdm(total=steps, desc=f"epoch {progress.epoch + 1}/{c.epochs}", unit="step",
                       disable=not verbose, file=sys.stderr, leave=True)  # fmt: skip
            epoch_batches = batches(x, y, self.sample_weight, c.batch_size,
                                    order if c.shuffle else np.arange(len(x)))  # fmt: skip
            if c.tbptt_steps is None:
                epoch_batches = ((batch, None) for batch in epoch_batches)
            else:
                epoch_batches = _windows(epoch_batches, c.tbptt_steps, zero_states)
            state, totals, step_losses = _train_epoch(
                train_step, state, epoch_batches, placement, bar, c.batch_size
            )
            logs = epoch_means(totals, c.metrics)
            _check_finite(logs["loss"], step_losses, progress.epoch, steps)
            if self.validation_data is not None:
                val, states = _evaluate(eval_step, self.model, state.params,
                                        self.validation_data, c.batch_size, placement,
                                        state.states if carry else None)  # fmt: skip
                if carry:  # Keras 3's validation runs on, and moves, the same state
                    state = state._replace(states=states)
                logs.update(epoch_means(val, c.metrics, prefix="val_"))
            plateau = c.reduce_lr_on_plateau
            if plateau is not None:  # Keras logs the epoch's rate, then may lower the next
                logs["learning_rate"] = learning_rate_of(state.opt_state)
                rate = plateau.step(progress, logs[plateau.monitor], logs["learning_rate"])
                if rate != logs["learning_rate"]:
                    opt_state = with_learning_rate(to_host(state.opt_state), rate)
                    state = placement.state(state._replace(opt_state=opt_state))
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
            bar.close()
            _record(progress, logs, step_losses, c.early_stopping, state.params)
            for callback in callbacks:
                callback(state, progress)
        params = state.params
        if c.early_stopping and c.early_stopping.restore_best_weights and progress.best_params:
            params = progress.best_params
        return jax.tree.map(jnp.asarray, to_host(params)), progress.history


def _check_moving_statistics(model: Any) -> None:
    """Refuse a layer whose training statistics fit cannot move as Keras moves them: one
    inside a wrapper (Keras 3's ``TimeDistributed`` calls it once per step), or one a graph
    calls more than once (each call moves the statistics again)."""
    calls = [call.layer for call in getattr(model, "calls", ())]
    refused = []
    for layer in model.layers:
        if not protocol.non_trainable(layer) or not _trainable(layer):
            continue
        inner, count = protocol.wrapped(layer), calls.count(layer.name)
        if inner is not None:
            refused.append(f"{layer.name} ({type(layer).__name__}({type(inner).__name__}))")
        elif count > 1:
            refused.append(f"{layer.name} ({type(layer).__name__}, called {count} times)")
    if refused:
        raise ConfigError(
            f"model {model.name!r} has layers whose moving statistics Keras's fit moves once "
            f"per call or per step, which jaxgru.fit does not reproduce: {'; '.join(refused)}. "
            "Build the layer with trainable=False (inference statistics), or train it in Keras"
        )


def prepare_fit(
    model: Sequential,
    params: dict,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    validation_data: tuple | None = None,
    validation_split: float = 0.0,
    sample_weight: np.ndarray | None = None,
    seed: int = 0,
    devices: int | Sequence | jax.sharding.Mesh | None = None,
    shard_params: bool = False,
) -> PreparedFit:
    """Every check of a ``fit`` (same arguments), run once, before anything trains: the
    settings, the data (numbers, finite, the model's input shape, lengths of every split),
    the model against the data and the loss and metrics against the targets (at
    ``jax.eval_shape`` cost), the devices; the optimizer is built here, once.

    Raises:
        ConfigError: a setting that cannot work (the message names it and what is allowed).
        DataError: data that does not fit the model, the loss or itself.
    """
    c = config
    check_count("batch_size", c.batch_size)
    check_count("epochs", c.epochs, minimum=0)
    if isinstance(validation_split, bool) or not 0 <= validation_split < 1:
        raise ConfigError(f"validation_split must be in [0, 1), got {validation_split!r}")
    _check_moving_statistics(model)
    stateful = bool(model.initial_states(1))
    if stateful and c.shuffle:
        raise ConfigError(
            "the model has stateful GRUs, whose state runs from one batch into the next; "
            "pass shuffle=False"
        )
    if c.reset_states not in ("never", "epoch"):
        raise ConfigError(f"reset_states must be 'never' or 'epoch', got {c.reset_states!r}")
    x, y, sample_weight = _check_split(model, params, "the training data",
                                       (x, y, sample_weight), c)  # fmt: skip
    if validation_split and validation_data is None:  # a part of the data checked above
        cut = len(x) - int(len(x) * validation_split)
        if cut == len(x) or cut == 0:
            raise DataError(
                f"validation_split={validation_split} of {len(x)} samples leaves "
                f"{'no validation' if cut == len(x) else 'no training'} samples"
            )
        w_val = None if sample_weight is None else sample_weight[cut:]
        validation_data = (x[cut:], y[cut:], w_val)
        x, y = x[:cut], y[:cut]
        sample_weight = None if sample_weight is None else sample_weight[:cut]
    if c.class_weight is not None:
        if sample_weight is not None:
            raise ConfigError("pass class_weight or sample_weight, not both (as Keras)")
        sample_weight = class_weight_to_sample_weight(y, c.class_weight)
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise DataError("validation_data must be (x_val, y_val) or (x_val, y_val, weight_val)")
        validation_data = _check_split(model, params, "the validation data",
                                       (*validation_data, None)[:3], c)  # fmt: skip
    _check_monitors(c, validation_data is not None)
    if stateful and c.reset_states == "never" and c.tbptt_steps is None:
        check_whole_batches(c.batch_size, ("training", x), ("validation", validation_data))
    if c.compute_dtype != "float32" or c.remat_chunk is not None or c.gru_kernel is not None:
        model = model.with_execution(c.compute_dtype, c.remat_chunk, c.gru_kernel)
    parallel = check_scale_options(model, x, y, c.batch_size, devices, shard_params,
                                   c.tbptt_steps)  # fmt: skip
    optimizer = c.make_optimizer(len(x))
    if c.reduce_lr_on_plateau is not None:
        _check_adjustable(optimizer, params)
    return PreparedFit(model, params, x, y, sample_weight, validation_data, c, optimizer, seed,
                       parallel)  # fmt: skip


def class_weight_to_sample_weight(y: np.ndarray, class_weight: dict) -> np.ndarray:
    """``(samples,)`` weights from ``{class id: weight}``, as Keras's: the class of a sample is
    ``y`` rounded (ids ``(samples,)`` or ``(samples, 1)``) or its argmax (one-hot)."""
    try:
        weights = {int(k): float(v) for k, v in class_weight.items()}
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(
            f"class_weight must map class ids to weights, e.g. {{0: 1.0, 1: 3.0}}; got "
            f"{class_weight!r}"
        ) from None
    y = np.asarray(y)
    if y.ndim == 2:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"class_weight needs one class per sample (y of shape (samples,), (samples, 1) or "
            f"one-hot (samples, classes)); got y of shape {np.shape(y)}: pass sample_weight"
        )
    ids = np.round(y).astype(np.int64)
    return np.array([weights.get(int(i), 1.0) for i in ids], np.float32)


def _check_split(model, params, what: str, data: tuple, config: TrainConfig) -> tuple:
    """``(x, y, weight or None)`` of one split, checked against the model, the loss and the
    metrics (``data_checks``)."""
    x = check_model_input(model, f"{what} x", data[0])
    y, weight = check_samples(what, x, ("y", data[1]), ("sample_weight", data[2]))
    check_targets(model, params, what, x, y, config.loss, config.metrics, config.from_logits)
    return x, y, weight


def check_whole_batches(batch_size: int, *splits: tuple) -> None:
    """A carried state needs every batch full: a padded row's state would run on."""
    for what, data in splits:
        if data is None:
            continue
        samples = len(data[0] if isinstance(data, (tuple, list)) else data)
        if samples % batch_size:
            other = ", or pass reset_states='epoch'" if what in ("training", "validation") else ""
            raise DataError(
                f"the model has stateful GRUs whose state runs on from batch to batch (Keras "
                f"3's fit, evaluate and predict), so the {what} samples must fill whole "
                f"batches: {samples} is not a multiple of batch_size={batch_size}. Trim the "
                f"data{other}"
            )


def _check_monitors(config: TrainConfig, validation: bool) -> None:
    """Early stopping and ReduceLROnPlateau watch values this run logs."""
    logged = ["loss", *config.metrics]
    logged += [f"val_{name}" for name in logged] if validation else []
    for what in ("early_stopping", "reduce_lr_on_plateau"):
        watcher = getattr(config, what)
        if watcher is not None and watcher.monitor not in logged:
            raise ConfigError(
                f"{what} monitors {watcher.monitor!r}, but this run logs {logged}"
                + ("" if validation else " (val_ names need validation data)")
            )


def _check_adjustable(optimizer: optax.GradientTransformation, params: dict) -> None:
    """ReduceLROnPlateau needs the learning rate in the optimizer state."""
    state = jax.eval_shape(optimizer.init, params)
    if "learning_rate" not in getattr(state, "hyperparams", {}):
        raise ConfigError(
            "reduce_lr_on_plateau changes the learning rate in the optimizer state, which this "
            "optax optimizer does not hold; pass the optimizer by name, or build it as "
            "optax.inject_hyperparams(optax.adam)(learning_rate=...)"
        )


class _Placement:
    """Where ``fit`` puts a run's arrays: the default device, or a ``DataParallel`` mesh."""

    def __init__(self, parallel: DataParallel | None, state: TrainState):
        self.parallel = parallel
        self.shardings = None if parallel is None else parallel.state_shardings(state)

    def state(self, state: TrainState) -> TrainState:
        if self.parallel is None:
            return jax.tree.map(jnp.asarray, state)
        return self.parallel.place(to_host(state), self.shardings)

    def batch(self, batch: Batch) -> Batch:
        return batch if self.parallel is None else self.parallel.place_batch(batch)

    def states(self, states: dict) -> dict:
        return states if self.parallel is None else self.parallel.place_batch(states)


_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_OPTIMIZER_SETTINGS = ("learning_rate", "momentum", "nesterov", "weight_decay", "clipnorm",
                       "global_clipnorm", "schedule")  # fmt: skip


def _check_not_given_twice(config: TrainConfig, given: dict[str, Any]) -> None:
    """A setting given both in ``config`` and as a ``fit`` keyword is an error."""
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"fit's config must be a TrainConfig, got {type(config).__name__}")
    defaults = inspect.signature(fit).parameters
    twice = sorted(name for name, value in given.items()
                   if name in defaults and value != defaults[name].default)  # fmt: skip
    if twice:
        raise ConfigError(
            f"fit got config=TrainConfig(...) and the settings {twice} as keywords; give "
            "each setting once (dataclasses.replace(config, ...) changes one)"
        )


def check_scale_options(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    devices=None,
    shard_params: bool = False,
    tbptt_steps: int | None = None,
) -> DataParallel | None:
    """Check ``fit``'s ``devices`` and ``tbptt_steps`` against the model and data, before
    anything runs or is written; returns the ``DataParallel`` for ``devices`` (or ``None``).

    Raises:
        ValueError: too few devices, a batch that does not split over them, or a model or
            targets that truncated BPTT cannot train; the message names the fix.
    """
    if tbptt_steps is not None:
        _check_tbptt(model, np.asarray(x), np.asarray(y), tbptt_steps)
    if devices is None:
        return None
    parallel = DataParallel(make_mesh(devices), shard_params)
    parallel.check_batch_size(batch_size)
    return parallel


def _check_tbptt(model: Sequential, x: np.ndarray, y: np.ndarray, window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"tbptt_steps must be a number of steps >= 1, got {window!r}")
    # TBPTT makes every GRU stateful, carrying its state from window to window; a layer whose
    # output at a step reads later steps (a Bidirectional) would carry the future along.
    future = [layer.name for layer in model.layers if getattr(layer, "reads_future", False)]
    if future:
        raise ConfigError(
            f"tbptt_steps cannot train {future}: a backward direction reads the future of each "
            "window and would carry it into the next; use plain GRUs there, or no tbptt_steps"
        )
    carried = model.with_gru_fields(stateful=True).initial_states(1)
    if not carried:
        raise ConfigError("tbptt_steps needs a model with a GRU whose state it can carry")
    if x.ndim < 2 or y.ndim < 2 or y.shape[1] != x.shape[1]:
        raise DataError(
            f"tbptt_steps needs a target per time step, y (samples, time, ...) with the time "
            f"of x; got x {x.shape} and y {y.shape}. Use return_sequences=True on the last GRU"
        )


def _windows(batch_iter: Iterator[Batch], window: int, zero_states: dict):
    """Each batch cut along time into windows of ``window`` steps (the last may be shorter):
    ``(window batch, states to start from)``; ``None`` carries the previous window's."""
    for batch in batch_iter:
        time = batch.x.shape[1]
        for start in range(0, time, window):
            part = slice(start, start + window)
            weight = batch.weight[:, part] if batch.weight.ndim == 2 else batch.weight
            piece = Batch(batch.x[:, part], batch.y[:, part], weight, batch.valid)
            yield piece, zero_states if start == 0 else None


def _train_epoch(train_step, state, batch_iter, placement, bar, batch_size):
    """Run one epoch's steps; sums stay on the device until the end of the epoch.

    ``batch_iter`` yields ``(batch, states)`` pairs; ``states``, unless ``None``, replace the
    carried GRU states before the step."""
    totals, step_losses, start = None, [], time.perf_counter()
    for i, (batch, states) in enumerate(batch_iter):
        if states is not None:
            state = state._replace(states=states)
        state, measures = train_step(state, placement.batch(batch))
        step_losses.append(measures["loss"])
        totals = measures if totals is None else jax.tree.map(jnp.add, totals, measures)
        bar.update(1)
        if not bar.disable and (i + 1) % 20 == 0:
            rate = (i + 1) * batch_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{float(measures['loss']):.4g}", samples_s=f"{rate:.0f}")
    return state, to_host(totals), np.asarray(to_host(step_losses), np.float64)


def _check_finite(epoch_loss: float, step_losses: np.ndarray, epoch: int, steps: int) -> None:
    if np.isfinite(epoch_loss):
        return
    bad = int(np.flatnonzero(~np.isfinite(step_losses))[0])
    raise TrainingDiverged(
        f"the loss became {step_losses[bad]} at step {epoch * steps + bad + 1} (epoch "
        f"{epoch + 1}); training stopped and this epoch's params were discarded. Lower the "
        "learning rate, set clipnorm, or check the data for NaN or inf"
    )


def _record(progress, logs, step_losses, early_stopping, params) -> None:
    """Append the epoch's logs and apply Keras's early-stopping rule."""
    for name, value in logs.items():
        progress.history.setdefault(name, []).append(value)
    progress.history.setdefault("batch_loss", []).extend(step_losses.tolist())
    epoch, progress.epoch = progress.epoch, progress.epoch + 1
    if early_stopping is None:
        return
    monitor = early_stopping.monitor  # prepare_fit checked that the logs hold it
    if epoch < early_stopping.start_from_epoch:
        return
    progress.wait += 1
    if early_stopping.improved(logs[monitor], progress.best):
        progress.best, progress.best_epoch, progress.wait = logs[monitor], epoch, 0
        if early_stopping.restore_best_weights:
            progress.best_params = to_host(params)
    elif progress.wait >= early_stopping.patience and epoch > 0:
        progress.stopped = True


def _evaluate(eval_step, model, params, data, batch_size, placement=None, states=None):
    """``(summed measures, the stateful GRUs' states after the last batch)``, from
    ``states`` (zeros by default)."""
    x, y, weight = (*data, None)[:3]
    x, y = np.asarray(x), np.asarray(y)
    placement = placement or _Placement(None, None)
    if states is None:
        states = model.initial_states(batch_size, jax.tree.leaves(params)[0].dtype)
        states = placement.states(states)
    totals = None
    for batch in batches(x, y, weight, batch_size, np.arange(len(x))):
        states, measures = eval_step(params, states, placement.batch(batch))
        totals = measures if totals is None else jax.tree.map(jnp.add, totals, measures)
    return to_host(totals), states


def evaluate(
    model: Sequential,
    params: dict,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: str | Callable = "mse",
    metrics: Sequence[str] = (),
    from_logits: bool = False,
    sample_weight: np.ndarray | None = None,
    batch_size: int = 32,
    states: Any = None,
) -> dict[str, float] | tuple[dict[str, float], dict]:
    """Keras's ``evaluate``: the loss and metrics over ``(x, y)``, e.g. ``{"loss": 0.01}``.

    A model with stateful GRUs carries their state from batch to batch, from ``states``
    (default zeros), and returns ``(logs, states)``, as ``predict`` does: Keras's
    ``evaluate`` also runs on, and moves, the state the model holds. The samples must then
    fill whole batches.
    """
    x = check_model_input(model, "x", x)
    y, sample_weight = check_samples("evaluate's data", x, ("y", y),
                                     ("sample_weight", sample_weight))  # fmt: skip
    stateful = _check_states(model, len(x), batch_size, states)
    eval_step = make_eval_step(model, loss, metrics, from_logits)
    totals, states = _evaluate(eval_step, model, params, (x, y, sample_weight), batch_size,
                               states=states)  # fmt: skip
    logs = epoch_means(totals, metrics)
    return (logs, states) if stateful else logs


def _check_states(model: Any, samples: int, batch_size: int, states: Any) -> bool:
    """Whether ``model`` carries GRU states from batch to batch (then the samples must fill
    whole batches); ``states`` given to a model without any is an error."""
    if not model.initial_states(1):
        if states is not None:
            raise ConfigError("states= is for a model with stateful GRUs; this one has none")
        return False
    if samples % batch_size:
        raise DataError(
            f"the model has stateful GRUs whose state runs from batch to batch, so the samples "
            f"must fill whole batches: {samples} is not a multiple of batch_size={batch_size}"
        )
    return True


@functools.lru_cache(maxsize=64)
def _predict_step(model: Sequential) -> Callable:
    """The jitted inference ``apply(params, x)``, built once per model (``predict``)."""
    return jax.jit(model.apply)


@functools.lru_cache(maxsize=64)
def _stateful_predict_step(model: Sequential) -> Callable:
    """The jitted ``(params, x, states) -> (y, states)`` of a model with stateful GRUs."""
    return jax.jit(lambda params, x, states: model.apply(params, x, False, None, states=states))


def predict(
    model: Sequential, params: dict, x: np.ndarray, batch_size: int = 32, states: Any = None
) -> Any:
    """Keras's ``predict``: the model's output for ``x (samples, ...)``, in batches.

    A model with stateful GRUs carries their state from batch to batch, as Keras's does, from
    ``states`` (default: zeros, ``model.initial_states(batch_size)``), and then returns
    ``(y, states)`` so the next call continues where this one stopped: Keras's state kept
    across ``predict`` calls until ``reset_states()``, held here by the caller (pass
    ``model.initial_states(batch_size)`` again for Keras's ``reset_states()``). The samples
    must then fill whole batches, as Keras's fixed batch size needs.
    """
    x = check_model_input(model, "x", x)
    dummy_y = np.zeros((len(x), 1), np.float32)
    if not _check_states(model, len(x), batch_size, states):
        apply = _predict_step(model)
        outputs = [
            np.asarray(apply(params, b.x))[: int(b.valid.sum())]
            for b in batches(x, dummy_y, None, batch_size, np.arange(len(x)))
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)
    if states is None:
        states = model.initial_states(batch_size, jax.tree.leaves(params)[0].dtype)
    apply, outputs = _stateful_predict_step(model), []
    for b in batches(x, dummy_y, None, batch_size, np.arange(len(x))):
        y, states = apply(params, b.x, states)
        outputs.append(np.asarray(y))
    return (np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)), states
