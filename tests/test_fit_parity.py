"""``jaxgru.fit`` against Keras ``fit``: same weights, same batches, every step's loss."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
from keras_fit_parity import CASES, relative_difference, run_both

pytestmark = pytest.mark.oracle

# The bounds: SGD within 1e-5 relative, the adaptive optimizers within 1e-4.
STEP_TOLERANCE = {"sgd": 1e-5, "adam": 1e-4, "adamw": 1e-4, "rmsprop": 1e-4}


@pytest.mark.parametrize("name", CASES)
def test_per_step_losses_and_weights_match_keras_fit(name):
    case = CASES[name]
    r = run_both(case)
    assert len(r["jaxgru_step_loss"]) == len(r["keras_step_loss"]) == 50
    tolerance = STEP_TOLERANCE[case.optimizer]
    assert relative_difference(r["jaxgru_step_loss"], r["keras_step_loss"]) < tolerance
    assert relative_difference(r["jaxgru_epoch_loss"], r["keras_epoch_loss"]) < tolerance
    # Training moved the weights, and both frameworks moved them to the same place.
    assert r["keras_epoch_loss"][-1] < 0.9 * r["keras_epoch_loss"][0]
    for ours, theirs in zip(r["jaxgru_weights"], r["keras_weights"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=10 * tolerance)
