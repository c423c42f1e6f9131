"""Bad input gets one clear error of the family (a ValueError) naming what was given and wanted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru.errors import ConfigError, DataError

LAYER = jaxgru.GRU(5)
PARAMS = LAYER.init(jax.random.key(0), 3)
X = jnp.zeros((2, 7, 3))

CASES = [
    ("units zero", lambda: jaxgru.GRU(0), ValueError, r"units must be a positive int, got 0"),
    ("units negative", lambda: jaxgru.GRU(-3), ValueError, r"got -3"),
    ("units float", lambda: jaxgru.GRU(2.5), ValueError, r"got 2\.5"),
    ("unknown activation", lambda: jaxgru.GRU(5, activation="tanhh"), ValueError,
     r"unknown activation 'tanhh'; expected one of: .*tanh"),
    ("glu activation", lambda: jaxgru.GRU(5, recurrent_activation="glu"), ValueError,
     r"'glu' cannot be used in a GRU"),
    ("activation type", lambda: jaxgru.GRU(5, activation=3), ConfigError, r"got 3 of type int"),
    ("unknown initializer", lambda: jaxgru.GRU(5, kernel_initializer="glorot"), ValueError,
     r"unknown initializer 'glorot'; expected one of: .*glorot_uniform"),
    ("dropout >= 1", lambda: jaxgru.GRU(5, dropout=1.0), ValueError,
     r"dropout must be a float in \[0, 1\), got 1\.0"),
    ("unroll zero", lambda: jaxgru.GRU(5, unroll=0), ValueError, r"unroll .* got 0"),
    ("input rank 2", lambda: LAYER.apply(PARAMS, jnp.zeros((7, 3))), ValueError,
     r"expects x \(batch, time, features\), got an array of shape \(7, 3\)"),
    ("features mismatch", lambda: LAYER.apply(PARAMS, jnp.zeros((2, 7, 4))), ValueError,
     r"'kernel' expected shape \(4, 15\), got \(3, 15\)"),
    ("mask shape", lambda: LAYER.apply(PARAMS, X, mask=jnp.ones((2, 6), bool)), ValueError,
     r"mask must have shape \(batch, time\) = \(2, 7\) \(or \(batch, time, 1\)\), got \(2, 6\)"),
    ("initial state shape", lambda: LAYER.apply(PARAMS, X, initial_state=jnp.zeros((2, 4))),
     ValueError, r"initial_state must have shape \(batch, units\) = \(2, 5\), got \(2, 4\)"),
    ("missing param", lambda: LAYER.apply({"kernel": PARAMS["kernel"]}, X), ValueError,
     r"missing \['recurrent_kernel', 'bias'\]"),
    ("params not a dict", lambda: LAYER.apply([1, 2, 3], X), DataError, r"params must be a dict"),
    ("step x rank", lambda: LAYER.step(PARAMS, jnp.zeros((2, 5)), jnp.zeros((2, 7, 3))),
     ValueError, r"x_t \(batch, features\)"),
    ("step h shape", lambda: LAYER.step(PARAMS, jnp.zeros((2, 3)), jnp.zeros((2, 3))),
     ValueError, r"h_prev must have shape \(batch, units\) = \(2, 5\), got \(2, 3\)"),
    ("init input_dim", lambda: LAYER.init(jax.random.key(0), 0), ValueError,
     r"input_dim must be a positive int, got 0"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(what, call, error, message):
    with pytest.raises(error, match=message) as raised:
        call()
    if error is ValueError:  # a user error: one of jaxgru's family, which the CLI prints as a line
        assert isinstance(raised.value, jaxgru.JaxgruError), type(raised.value)


def test_errors_happen_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"mask must have shape"):
        jax.jit(LAYER.apply)(PARAMS, X, mask=np.ones((3, 7), bool))
