"""Keras's names: class names in snake case, and auto-names with a counter."""

import re


def snake_case(name: str) -> str:
    """``GRU`` -> ``gru``, ``GlorotUniform`` -> ``glorot_uniform``, ``Conv1D`` -> ``conv1d``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def auto_name(base: str, taken: set[str]) -> str:
    """Keras's naming: ``gru``, then ``gru_1``, ``gru_2``, ... skipping names in use."""
    name, count = base, 0
    while name in taken:
        count += 1
        name = f"{base}_{count}"
    return name
