"""docs/keras-coverage.md is what the installed Keras and jaxgru's registry say now, and the
loader's refusals give the reasons the table gives."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import jaxgru

pytest.importorskip("keras")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import keras_coverage_doc


def test_the_coverage_doc_is_up_to_date():
    expected = keras_coverage_doc.generated_doc()
    assert keras_coverage_doc.DOC.read_text() == expected, (
        "docs/keras-coverage.md is stale: run python experiments/keras_coverage_doc.py"
    )


def test_every_registered_keras_name_is_a_keras_class_or_a_legacy_one():
    classes = keras_coverage_doc.keras_layer_classes()
    legacy = {"CuDNNGRU"}  # tf_keras 1.x files
    for name in jaxgru.layer.registered_names():
        assert name in classes or name in legacy or ">" in name, name


def test_the_table_states_the_loaders_reasons():
    text = keras_coverage_doc.generated_doc()
    assert "| `GRU` | read: `jaxgru.gru.GRU` |" in text
    assert "| `LSTM` | refused: jaxgru implements GRUs, not LSTMs |" in text
    assert "| `Conv1D` (also Convolution1D) | read: `jaxgru.convolution.Conv1D` |" in text
