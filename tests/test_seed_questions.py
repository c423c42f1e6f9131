"""The two user questions jaxgru was born from, reproduced against live Keras."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgru
from tests.reference import gru_reference

pytestmark = pytest.mark.oracle

keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[1]
KERNEL = np.array([[-0.90954137, 1.0425225, -0.04404902]], np.float32)
RECURRENT = np.array([[0.24168766, 0.8981342, 0.36734456]], np.float32)
BIAS = np.zeros((2, 3), np.float32)
X1 = np.array([[1, 2], [9, 8]]).reshape((1, 4, 1))


def _keras_gru(units, input_shape, weights=None, **kw):
    layer = keras.layers.GRU(units, **kw)
    layer.build((None, *input_shape))
    if weights is not None:
        layer.set_weights(weights)
    return layer


def test_seed_one_reads_four_time_steps_and_matches_keras():
    layer = jaxgru.GRU(1)
    params = jaxgru.from_keras_weights(layer, [KERNEL, RECURRENT, BIAS])
    ours = np.asarray(layer.apply(params, X1))
    theirs = np.asarray(_keras_gru(1, (4, 1), [KERNEL, RECURRENT, BIAS])(X1.astype(np.float32)))
    reference = gru_reference(X1, KERNEL, RECURRENT, BIAS)[1]
    assert ours.shape == theirs.shape == (1, 1)
    assert np.max(np.abs(ours - theirs)) <= 1e-5
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    # The two classic mistakes give other numbers: one vector instead of four steps ...
    one_vector = np.tanh(KERNEL[0, 2] * X1.sum())
    assert abs(one_vector - ours[0, 0]) > 0.1
    # ... and Wikipedia's update, (1 - z) * h_prev + z * h~, instead of Keras's.
    z_inverted = gru_reference(X1, KERNEL * [[-1, 1, 1]], RECURRENT * [[-1, 1, 1]], BIAS)[1]
    assert abs(z_inverted[0, 0] - ours[0, 0]) > 0.1


def test_seed_two_shapes_are_three_gate_blocks_and_two_bias_rows():
    k = _keras_gru(2, (3, 1), activation="linear")
    keras_shapes = [w.shape for w in k.get_weights()]
    assert keras_shapes == [(1, 6), (2, 6), (2, 6)]
    layer = jaxgru.GRU(2, activation="linear")
    assert list(layer.param_shapes(1).values()) == keras_shapes
    params = layer.init(jax.random.key(0), 1)
    assert [tuple(p.shape) for p in params.values()] == keras_shapes


def test_seed_two_matches_keras_with_keras_initialized_weights():
    k = _keras_gru(2, (3, 1), activation="linear", bias_initializer="random_normal")
    layer = jaxgru.GRU(2, activation="linear")
    params = jaxgru.from_keras_weights(layer, k.get_weights())
    x = np.random.default_rng(0).normal(size=(4, 3, 1)).astype(np.float32)
    assert np.max(np.abs(np.asarray(layer.apply(params, x)) - np.asarray(k(x)))) <= 1e-5


def test_seed_questions_experiment_prints_matching_answers():
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "seed_questions.py")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seeds = result.stdout.split("Seed ")[1:]
    assert len(seeds) == 2
    for text in seeds:
        answers = {
            key.strip(): np.array([float(v) for v in value.strip(" []\n").split(",")])
            for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)
            if key.strip() in ("hand computation", "jaxgru", "Keras (live)")
        }
        assert len(answers) == 3, text
        np.testing.assert_allclose(answers["jaxgru"], answers["Keras (live)"], atol=2e-6)
        np.testing.assert_allclose(answers["hand computation"], answers["Keras (live)"], atol=2e-6)
    assert "h = z*h_prev + (1-z)*h~" in result.stdout
