"""The oracle: a float64 NumPy GRU written straight from the equations, one time step at a time.

Deliberately naive: named blocks W_z, W_r, W_h, U_z, U_r, U_h, b_x, b_h, a Python loop over
time, and activations written out by hand. It shares no code with jaxgru.
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),  # Keras 3: relu6(x + 3) / 6
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
}


def gru_reference(
    x,
    kernel,
    recurrent_kernel,
    bias=None,
    *,
    reset_after=True,
    activation="tanh",
    recurrent_activation="sigmoid",
    go_backwards=False,
    mask=None,
    initial_state=None,
    zero_output_for_mask=False,
    input_dropout_mask=None,
    recurrent_dropout_mask=None,
    record=None,
):
    """Run a Keras-semantics GRU in float64.

    Args:
        x: (batch, time, features).
        kernel: (features, 3u), blocks [z | r | h]. recurrent_kernel: (u, 3u).
        bias: (2, 3u) when reset_after, (3u,) otherwise, or None.
        mask: (batch, time) bool or None.
        initial_state: (batch, u) or None for zeros.
        input_dropout_mask: (batch, features), multiplies every x_t.
        recurrent_dropout_mask: (batch, u), multiplies h_prev inside the gate terms only.
        record: a list; when given, each step appends {"z", "r", "hh", "h"} (batch, u), h
            being the state after the step.

    Returns:
        outputs (batch, time, u) in consumption order, last_output (batch, u), state (batch, u).
    """
    x = np.asarray(x, np.float64)
    batch, time, _ = x.shape
    W = np.asarray(kernel, np.float64)
    U = np.asarray(recurrent_kernel, np.float64)
    u = U.shape[0]
    W_z, W_r, W_h = W[:, :u], W[:, u : 2 * u], W[:, 2 * u :]
    U_z, U_r, U_h = U[:, :u], U[:, u : 2 * u], U[:, 2 * u :]
    zeros = np.zeros(3 * u)
    if bias is None:
        b_x, b_h = zeros, zeros
    elif reset_after:
        b_x, b_h = np.asarray(bias, np.float64)[0], np.asarray(bias, np.float64)[1]
    else:
        b_x, b_h = np.asarray(bias, np.float64), zeros
    bx_z, bx_r, bx_h = b_x[:u], b_x[u : 2 * u], b_x[2 * u :]
    bh_z, bh_r, bh_h = b_h[:u], b_h[u : 2 * u], b_h[2 * u :]
    sigma = ACTIVATIONS[recurrent_activation]
    phi = ACTIVATIONS[activation]

    h = np.zeros((batch, u)) if initial_state is None else np.array(initial_state, np.float64)
    y_prev = np.zeros((batch, u))
    mask = np.ones((batch, time), bool) if mask is None else np.asarray(mask, bool)
    in_mask = 1.0 if input_dropout_mask is None else np.asarray(input_dropout_mask, np.float64)
    rec_mask = (
        1.0 if recurrent_dropout_mask is None else np.asarray(recurrent_dropout_mask, np.float64)
    )
    order = range(time - 1, -1, -1) if go_backwards else range(time)
    outputs = []
    for t in order:
        x_t = x[:, t, :] * in_mask
        h_in = h * rec_mask
        z = sigma(x_t @ W_z + bx_z + h_in @ U_z + bh_z)
        r = sigma(x_t @ W_r + bx_r + h_in @ U_r + bh_r)
        if reset_after:
            h_tilde = phi(x_t @ W_h + bx_h + r * (h_in @ U_h + bh_h))
        else:
            h_tilde = phi(x_t @ W_h + bx_h + (r * h_in) @ U_h)
        h_new = z * h + (1.0 - z) * h_tilde
        keep = mask[:, t][:, None]
        skipped = np.zeros((batch, u)) if zero_output_for_mask else y_prev
        y = np.where(keep, h_new, skipped)
        h = np.where(keep, h_new, h)
        if record is not None:
            record.append({"z": z, "r": r, "hh": h_tilde, "h": h})
        outputs.append(y)
        y_prev = y
    return np.stack(outputs, axis=1), y_prev, h
