"""One typed config: a TOML [train] table, a TrainConfig and fit's keywords train the same run."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import jaxgru
from jaxgru import config as experiment_config
from jaxgru.errors import ConfigError
from jaxgru.experiment import Experiment
from jaxgru.optimizers import ScheduleConfig, make_optimizer, make_schedule
from jaxgru.train import TrainConfig

RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 6, 3)).astype(np.float32)
Y = np.tanh(X.sum(axis=(1, 2)))[:, None].astype(np.float32)
MODEL = jaxgru.Sequential([jaxgru.GRU(4), jaxgru.Dense(1)], input_shape=(6, 3))
PARAMS = MODEL.init(jax.random.key(0))
SETTINGS = TrainConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True,
                       batch_size=8, epochs=3, shuffle=False, metrics=["mae"],
                       schedule=ScheduleConfig("cosine_decay", warmup_steps=2))  # fmt: skip


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fit_takes_a_train_config_as_it_is_and_its_keywords_train_the_same_run():
    by_config = jaxgru.fit(MODEL, PARAMS, X, Y, config=SETTINGS, verbose=0)
    by_keywords = jaxgru.fit(MODEL, PARAMS, X, Y, **SETTINGS.fit_kwargs(), verbose=0)
    _equal(by_config, by_keywords)
    other = dataclasses.replace(SETTINGS, nesterov=False)
    _, history = jaxgru.fit(MODEL, PARAMS, X, Y, config=other, verbose=0)
    assert history["loss"] != by_config[1]["loss"]  # nesterov reaches the optimizer


def test_the_schedule_decays_over_every_step_after_the_warmup_by_default():
    steps = 3 * 3  # 20 samples in batches of 8, three epochs
    by_hand = make_optimizer(
        "sgd", make_schedule(0.05, "cosine_decay", decay_steps=steps - 2, warmup_steps=2),
        momentum=0.9, nesterov=True,
    )  # fmt: skip
    want = jaxgru.fit(MODEL, PARAMS, X, Y, **SETTINGS.fit_kwargs(by_hand), verbose=0)
    got = jaxgru.fit(MODEL, PARAMS, X, Y, config=SETTINGS, verbose=0)
    _equal(got, want)
    shorter = make_optimizer(
        "sgd", make_schedule(0.05, "cosine_decay", decay_steps=steps - 4, warmup_steps=2),
        momentum=0.9, nesterov=True,
    )  # fmt: skip
    other = jaxgru.fit(MODEL, PARAMS, X, Y, **SETTINGS.fit_kwargs(shorter), verbose=0)
    assert other[1]["loss"] != got[1]["loss"]  # the decay length is visible in the run


def test_a_setting_given_twice_is_refused():
    with pytest.raises(ConfigError, match=r"the settings \['epochs', 'loss'\] as keywords"):
        jaxgru.fit(MODEL, PARAMS, X, Y, config=SETTINGS, epochs=5, loss="mae", verbose=0)
    with pytest.raises(ConfigError, match=r"config must be a TrainConfig, got dict"):
        jaxgru.fit(MODEL, PARAMS, X, Y, config={"epochs": 2}, verbose=0)


def test_every_fit_setting_is_a_train_config_field_and_a_toml_key():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"nesterov", "schedule", "momentum", "tbptt_steps"} <= fields
    raw = {
        "name": "t",
        "data": {"kind": "sine", "samples": 20, "val_samples": 8, "test_samples": 8, "window": 6},
        "model": {"layers": [{"type": "GRU", "units": 4}, {"type": "Dense", "units": 1}]},
    }
    overrides = [
        "train.optimizer='sgd'",
        "train.learning_rate=0.05",
        "train.momentum=0.9",
        "train.nesterov=true",
        "train.batch_size=8",
        "train.epochs=3",
        "train.shuffle=false",
        "train.metrics=['mae']",
        "train.schedule.name='cosine_decay'",
        "train.schedule.warmup_steps=2",
    ]
    cfg = experiment_config.resolve(raw, overrides)
    exp = Experiment.from_config(cfg)
    assert exp.train == SETTINGS  # the TOML resolves to the very value fit takes
    # ... and the optimizer it builds is the one fit builds from the same settings
    grads = jax.tree.map(np.ones_like, PARAMS)
    ours, theirs = exp.optimizer(), SETTINGS.make_optimizer(len(exp.data.train))
    _equal(ours.update(grads, ours.init(PARAMS), PARAMS)[0],
           theirs.update(grads, theirs.init(PARAMS), PARAMS)[0])  # fmt: skip
    text = experiment_config.to_toml(cfg)
    assert "nesterov = true" in text
    assert experiment_config.resolve(experiment_config.tomllib.loads(text)) == cfg


def test_class_weight_is_a_toml_table_of_class_ids():
    """``[train.class_weight]`` (TOML keys are strings) resolves, round-trips and weights the
    run as the same ``{id: weight}`` given to ``fit``."""
    raw = {
        "name": "t",
        "data": {"kind": "sine", "samples": 20, "val_samples": 8, "test_samples": 8, "window": 6},
        "model": {"layers": [{"type": "GRU", "units": 4}, {"type": "Dense", "units": 1}]},
        "train": {"class_weight": {"0": 2.0, "1": 0.5}},
    }
    cfg = experiment_config.resolve(raw)
    text = experiment_config.to_toml(cfg)
    assert experiment_config.resolve(experiment_config.tomllib.loads(text)) == cfg
    train = Experiment.from_config(cfg).train
    labels = np.round(np.clip(Y, 0, 1))  # two classes, as ids (samples, 1)
    settings = {"epochs": 2, "batch_size": 8, "shuffle": False}
    from_toml = jaxgru.fit(MODEL, PARAMS, X, labels, verbose=0, config=TrainConfig(
        class_weight=train.class_weight, **settings))  # fmt: skip
    given = jaxgru.fit(MODEL, PARAMS, X, labels, class_weight={0: 2.0, 1: 0.5}, verbose=0,
                       **settings)  # fmt: skip
    assert from_toml[1]["loss"] == given[1]["loss"]
    unweighted = jaxgru.fit(MODEL, PARAMS, X, labels, verbose=0, **settings)
    assert unweighted[1]["loss"] != given[1]["loss"]
    with pytest.raises(ConfigError, match="class ids"):
        jaxgru.fit(MODEL, PARAMS, X, labels, class_weight={"zero": 2.0}, verbose=0, **settings)


def test_reduce_lr_on_plateau_is_a_toml_table():
    raw = {
        "name": "t",
        "data": {"kind": "sine", "samples": 20, "val_samples": 8, "test_samples": 8, "window": 6},
        "model": {"layers": [{"type": "GRU", "units": 4}, {"type": "Dense", "units": 1}]},
        "train": {"reduce_lr_on_plateau": {"monitor": "loss", "factor": 0.5, "patience": 1}},
    }
    cfg = experiment_config.resolve(raw)
    text = experiment_config.to_toml(cfg)
    assert "[train.reduce_lr_on_plateau]" in text
    assert experiment_config.resolve(experiment_config.tomllib.loads(text)) == cfg
    plateau = Experiment.from_config(cfg).train.reduce_lr_on_plateau
    assert plateau == jaxgru.train.ReduceLROnPlateau("loss", factor=0.5, patience=1)
    raw["train"]["reduce_lr_on_plateau"]["factor"] = 1.5
    with pytest.raises(ConfigError, match=r"factor must be in \[0, 1\)"):
        experiment_config.resolve(raw)
    raw["train"]["reduce_lr_on_plateau"] = {"monitor": "loss", "patient": 2}
    with pytest.raises(ConfigError, match="unknown key 'patient'"):
        experiment_config.resolve(raw)


def test_gru_kernel_is_a_train_key_that_sets_every_grus_kernel():
    raw = {
        "name": "t",
        "data": {"kind": "sine", "samples": 20, "val_samples": 8, "test_samples": 8, "window": 6},
        "model": {
            "layers": [
                {
                    "type": "Bidirectional",
                    "layer": {"type": "GRU", "units": 4, "return_sequences": True},
                },
                {"type": "GRU", "units": 3},
                {"type": "Dense", "units": 1},
            ]
        },
        "train": {"gru_kernel": "onednn"},
    }
    cfg = experiment_config.resolve(raw)
    assert experiment_config.resolve(experiment_config.tomllib.loads(
        experiment_config.to_toml(cfg))) == cfg  # fmt: skip
    experiment = Experiment.from_config(cfg)
    assert experiment.train.gru_kernel == "onednn"
    model = experiment.model.with_execution(gru_kernel=experiment.train.gru_kernel)
    pair, gru, dense = model.layers
    for each in (*pair.directions, gru):
        assert each.options.kernel == "onednn"
    assert dense == experiment.model.layers[2]
    raw["train"]["gru_kernel"] = "cuda"
    with pytest.raises(ConfigError, match=r"train\.gru_kernel must be one of xla, onednn; got"):
        experiment_config.resolve(raw)
