"""Keras's names: class names in snake case, and auto-names with a counter."""

import re


def snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: ``GRU`` -> ``gru``, ``GlorotUniform`` -> ``glorot_uniform``,
    ``Conv1D`` -> ``conv1d``, ``PReLU`` -> ``p_re_lu``.

    >>> [snake_case(n) for n in ("GlobalMaxPooling1D", "PReLU", "Conv1D", "GRU")]
    ['global_max_pooling1d', 'p_re_lu', 'conv1d', 'gru']
    """
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def auto_name(base: str, taken: set[str]) -> str:
    """Keras's naming: ``gru``, then ``gru_1``, ``gru_2``, ... skipping names in use."""
    name, count = base, 0
    while name in taken:
        count += 1
        name = f"{base}_{count}"
    return name
