"""Shared fixtures, and the test tiers.

Markers (pyproject.toml): ``oracle`` tests need TensorFlow/Keras, torch, ONNX, Flax, Equinox
or statsmodels; ``multiprocess`` tests start processes; ``benchmark`` tests run the
experiment scripts. ``make check`` deselects all three and needs only JAX; a module marked
``oracle`` as a whole is then not even imported, since its imports need the oracles.
"""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

ORACLE_MODULE = "pytestmark = pytest.mark.oracle"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    excluded = "not oracle" in (config.option.markexpr or "")
    is_test = collection_path.suffix == ".py" and collection_path.name.startswith("test_")
    if excluded and is_test and ORACLE_MODULE in collection_path.read_text():
        return True
    return None


@pytest.fixture
def float64():
    """Run the test body with 64-bit JAX arrays (the float64 reference comparisons)."""
    with jax.enable_x64(True):
        yield
