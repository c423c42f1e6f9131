"""Input checks shared by the layers and the Keras I/O: one clear error per problem."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgru.errors import ConfigError, DataError


def check_param_shapes(
    owner: str, expected: Mapping[str, tuple[int, ...]], params: Mapping[str, Any]
) -> None:
    """Raise one ``ValueError`` naming every missing, extra or mis-shaped array.

    Args:
        owner: how to name the layer in the message, e.g. ``"GRU 'gru'"``.
        expected: array name -> expected shape.
        params: array name -> array (anything with ``.shape``).
    """
    if not isinstance(params, Mapping):
        raise DataError(
            f"{owner}: params must be a dict of arrays {sorted(expected)}, "
            f"got {type(params).__name__}"
        )
    problems = []
    missing = [name for name in expected if name not in params]
    extra = [name for name in params if name not in expected]
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra}")
    for name, shape in expected.items():
        if name in params:
            actual = tuple(getattr(params[name], "shape", ()))
            if actual != tuple(shape):
                problems.append(f"'{name}' expected shape {tuple(shape)}, got {actual}")
    if problems:
        raise DataError(f"{owner}: " + "; ".join(problems))


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """Raise ``ConfigError`` unless ``value`` is an int ``>= minimum`` (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ConfigError(f"{name} must be {wanted}, got {value!r}")


def check_rate(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``0 <= value < 1``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a float in [0, 1), got {value!r}")
