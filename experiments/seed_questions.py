"""The two questions jaxgru was born from, answered with numbers.

Run: ``make demo`` (or ``python experiments/seed_questions.py``). Compares with real Keras
when it is installed (``make test`` installs it); the hand computation needs only NumPy.

1. "My hand calculation of a 1-unit Keras GRU gives -0.7069, Keras predicts 0.9680."
   The printed 0.9680 does not follow from the printed weights under any GRU setting (the
   question's code omits its layers); live Keras on those weights gives -0.4628, as does the
   hand computation below once two mistakes are fixed. The input ``[[1, 2], [9, 8]]``
   reshaped to ``(1, 4, 1)`` is a sequence of four time steps, not one vector; and Keras
   updates ``h = z*h_prev + (1-z)*h~``, not Wikipedia's ``(1-z)*h_prev + z*h~``.
2. "What are the shapes (1, 6), (2, 6), (2, 6) of GRU(2, activation='linear').get_weights()?"
   Three gate blocks side by side, ``[z | r | h]``, and two bias rows, ``b_x`` and ``b_h``.
"""

from __future__ import annotations

import os

import numpy as np

import jaxgru

# Seed 1: the weights printed by the user's get_weights(), and the Keras prediction they saw.
SEED1_WEIGHTS = [
    np.array([[-0.90954137, 1.0425225, -0.04404902]], np.float32),
    np.array([[0.24168766, 0.8981342, 0.36734456]], np.float32),
    np.zeros((2, 3), np.float32),
]
SEED1_INPUT = np.array([[1, 2], [9, 8]]).reshape((1, 4, 1))
SEED1_KERAS_PRINTED = 0.9680257

# Seed 2: GRU(units=2, input_shape=(3, 1), activation="linear"), weights as the user printed.
SEED2_WEIGHTS = [
    np.array(
        [[-0.64266175, -0.0870676, -0.25356603, -0.03685969, 0.22260845, -0.04923642]],
        np.float32,
    ),
    np.array(
        [
            [0.01929092, -0.4932567, 0.3723044, -0.6559699, -0.33790302, 0.27062896],
            [-0.4214194, 0.46456426, 0.27233726, -0.00461334, -0.6533575, -0.32483965],
        ],
        np.float32,
    ),
    np.zeros((2, 6), np.float32),
]
SEED2_INPUT = np.array([[[0.1], [0.5], [-0.3]]])


def named_blocks(weights: list[np.ndarray], units: int) -> dict[str, np.ndarray]:
    """Keras's [kernel, recurrent_kernel, bias (2, 3u)] as the named gate blocks W_z ... b_h,h."""
    layer = jaxgru.GRU(units)
    params = jaxgru.from_keras_weights(layer, weights)
    return {name: block.value for name, block in jaxgru.explain.blocks(layer, params).items()}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def hand_computation(weights, x, units, activation=np.tanh, show=True) -> np.ndarray:
    """The reset_after=True equations, one time step at a time, printed as they go."""
    b = {k: np.asarray(v, np.float64) for k, v in named_blocks(weights, units).items()}
    h = np.zeros((x.shape[0], units))
    for t in range(x.shape[1]):
        x_t = x[:, t, :].astype(np.float64)
        z = sigmoid(x_t @ b["W_z"] + b["b_x,z"] + h @ b["U_z"] + b["b_h,z"])
        r = sigmoid(x_t @ b["W_r"] + b["b_x,r"] + h @ b["U_r"] + b["b_h,r"])
        h_tilde = activation(x_t @ b["W_h"] + b["b_x,h"] + r * (h @ b["U_h"] + b["b_h,h"]))
        h_new = z * h + (1 - z) * h_tilde
        if show:
            print(
                f"  t={t}  x_t={_fmt(x_t)}  z={_fmt(z)}  r={_fmt(r)}  h~={_fmt(h_tilde)}\n"
                f"        h = z*h_prev + (1-z)*h~ = {_fmt(z)}*{_fmt(h)} + "
                f"{_fmt(1 - z)}*{_fmt(h_tilde)} = {_fmt(h_new)}"
            )
        h = h_new
    return h


def _fmt(a) -> str:
    a = np.asarray(a).ravel()
    return f"{a[0]:.7g}" if a.size == 1 else "[" + ", ".join(f"{v:.5g}" for v in a) + "]"


def keras_prediction(weights, x, units, activation="tanh"):
    """Real Keras's output, or None when Keras is not installed."""
    try:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
    except ImportError:
        print("  (Keras is not installed here: `make test` installs it and checks these numbers)")
        return None
    layer = keras.layers.GRU(units, activation=activation)
    layer.build((None, x.shape[1], x.shape[2]))
    layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return np.asarray(layer(x.astype(np.float32)))


def seed_one() -> dict[str, float]:
    print("Seed 1: a 1-unit GRU reads [[1, 2], [9, 8]] reshaped to (1, 4, 1)")
    print("  kernel (1, 3) = [W_z | W_r | W_h]; recurrent_kernel (1, 3) = [U_z | U_r | U_h];")
    print("  bias (2, 3) = [b_x; b_h] (reset_after=True). Four time steps, x_t = 1, 2, 9, 8:")
    hand = hand_computation(SEED1_WEIGHTS, SEED1_INPUT, units=1)
    layer = jaxgru.GRU(1)
    ours = layer.apply(jaxgru.from_keras_weights(layer, SEED1_WEIGHTS), SEED1_INPUT)
    keras_out = keras_prediction(SEED1_WEIGHTS, SEED1_INPUT, units=1)
    b = named_blocks(SEED1_WEIGHTS, 1)
    as_one_vector = np.tanh(b["W_h"][0, 0] * SEED1_INPUT.sum())
    print(f"  hand computation  : {_fmt(hand)}")
    print(f"  jaxgru            : {_fmt(ours)}")
    if keras_out is not None:
        print(f"  Keras (live)      : {_fmt(keras_out)}")
    print(f"  (the question's {SEED1_KERAS_PRINTED} came from a model its code does not show)")
    print(f"  the question's one-vector reading gave {_fmt(as_one_vector)}: wrong twice over.")
    wiki = hand_computation_wikipedia(SEED1_WEIGHTS, SEED1_INPUT)
    print(f"  step-by-step but with Wikipedia's update (1-z)*h_prev + z*h~: {_fmt(wiki)}\n")
    return {"hand": float(hand.ravel()[0]), "jaxgru": float(np.ravel(ours)[0]),
            "keras": None if keras_out is None else float(keras_out.ravel()[0])}  # fmt: skip


def hand_computation_wikipedia(weights, x) -> np.ndarray:
    """The same steps with z inverted, to show that the update convention matters."""
    b = {k: np.asarray(v, np.float64) for k, v in named_blocks(weights, 1).items()}
    h = np.zeros((1, 1))
    for t in range(x.shape[1]):
        x_t = x[:, t, :].astype(np.float64)
        z = sigmoid(x_t @ b["W_z"] + h @ b["U_z"])
        r = sigmoid(x_t @ b["W_r"] + h @ b["U_r"])
        h = (1 - z) * h + z * np.tanh(x_t @ b["W_h"] + r * (h @ b["U_h"]))
    return h


def seed_two() -> dict[str, float]:
    print("Seed 2: GRU(2, activation='linear') on input shape (3, 1)")
    kernel, recurrent, bias = SEED2_WEIGHTS
    print(
        f"  kernel {kernel.shape}: input_dim=1 rows, 3 gates x 2 units = 6 columns [z|z|r|r|h|h]"
    )
    print(f"  recurrent_kernel {recurrent.shape}: one row per unit of h_prev, same 6 columns")
    print(f"  bias {bias.shape}: row 0 input bias b_x, row 1 recurrent bias b_h (reset_after)")
    for name, block in named_blocks(SEED2_WEIGHTS, 2).items():
        values = np.array2string(block, precision=5, separator=", ").replace("\n", "")
        print(f"    {name:6s} {block.shape!s:7s} {values}")
    print("  Three time steps, x_t = 0.1, 0.5, -0.3:")
    hand = hand_computation(SEED2_WEIGHTS, SEED2_INPUT, units=2, activation=lambda v: v)
    layer = jaxgru.GRU(2, activation="linear")
    ours = layer.apply(jaxgru.from_keras_weights(layer, SEED2_WEIGHTS), SEED2_INPUT)
    keras_out = keras_prediction(SEED2_WEIGHTS, SEED2_INPUT, units=2, activation="linear")
    print(f"  hand computation  : {_fmt(hand)}")
    print(f"  jaxgru            : {_fmt(ours)}")
    if keras_out is not None:
        print(f"  Keras (live)      : {_fmt(keras_out)}")
    return {"hand": hand.ravel().tolist(), "jaxgru": np.ravel(ours).tolist(),
            "keras": None if keras_out is None else keras_out.ravel().tolist()}  # fmt: skip


if __name__ == "__main__":
    seed_one()
    seed_two()
