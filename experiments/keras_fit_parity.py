"""Train the same GRU with Keras ``fit`` and with ``jaxgru.fit``; compare every step's loss.

Both start from the same random weights and see the same batches in the same order (no
shuffling, a last partial batch of 5 of 37 samples), 50 steps in all. Keras's per-step loss is
the loss of the batch under the weights it trains from, recorded by a callback at
``on_train_batch_begin``; jaxgru's is ``history["batch_loss"]``.

Run:  python experiments/keras_fit_parity.py   (writes docs/keras_fit_parity.png and prints
the largest relative difference per optimizer)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jaxgru

SAMPLES, TIME, FEATURES, UNITS, BATCH, EPOCHS = 37, 7, 3, 5, 8, 10  # 5 steps x 10 epochs


@dataclass(frozen=True)
class ParityCase:
    """One training setup run in both frameworks."""

    optimizer: str
    learning_rate: float
    loss: str = "mse"
    momentum: float = 0.0
    classes: int = 0  # > 0: a softmax-free head of this many logits and class-id targets
    class_weight: tuple = ()  # (class id, weight) pairs: fit's class_weight
    regularized: bool = False  # L1, L2 and L1L2 on every weight, L2 on the GRU's output
    constrained: bool = False  # MaxNorm, MinMaxNorm and NonNeg on the weights
    masked: bool = False  # padded sequences, Masking, a target per step (return_sequences)


CASES = {
    "sgd": ParityCase("sgd", 0.1),
    "sgd_momentum": ParityCase("sgd", 0.05, momentum=0.9),
    "adam": ParityCase("adam", 0.01),
    "adamw": ParityCase("adamw", 0.01),
    "rmsprop": ParityCase("rmsprop", 0.005),
    "adam_sparse_ce": ParityCase("adam", 0.01, "sparse_categorical_crossentropy", classes=4),
    "sgd_class_weight": ParityCase(
        "sgd",
        0.1,
        "sparse_categorical_crossentropy",
        classes=4,
        class_weight=((0, 0.5), (2, 3.0), (3, 1.5)),
    ),
    "sgd_regularized": ParityCase("sgd", 0.1, regularized=True),
    "adam_regularized": ParityCase("adam", 0.01, regularized=True),
    "sgd_constrained": ParityCase("sgd", 0.1, constrained=True),
    "adam_masked_sequences": ParityCase("adam", 0.01, masked=True),
}


def _options(case: ParityCase) -> tuple[dict, dict]:
    """The GRU's and the Dense head's regularizers and constraints for ``case``."""
    import keras

    r, c = keras.regularizers, keras.constraints
    gru, head = {}, {}
    if case.regularized:
        gru = {
            "kernel_regularizer": r.L2(0.01),
            "recurrent_regularizer": r.L1(0.005),
            "bias_regularizer": r.L1L2(0.001, 0.002),
            "activity_regularizer": r.L2(0.01),
        }
        head = {"kernel_regularizer": r.L1(0.01), "bias_regularizer": r.L2(0.02)}
    if case.constrained:
        gru = {
            "kernel_constraint": c.MaxNorm(0.5),
            "bias_constraint": c.NonNeg(),
            "recurrent_constraint": c.MinMaxNorm(0.2, 0.7, rate=0.5, axis=0),
        }
        head = {"kernel_constraint": c.UnitNorm(axis=0)}
    return gru, head


def _keras_model(case: ParityCase, seed: int):
    import keras

    gru_options, head_options = _options(case)
    head = keras.layers.Dense(case.classes or 1, **head_options)
    front = [keras.layers.Masking()] if case.masked else []
    gru = keras.layers.GRU(UNITS, return_sequences=case.masked, **gru_options)
    model = keras.Sequential([keras.Input((TIME, FEATURES)), *front, gru, head])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in model.weights])
    return model


def _keras_optimizer(case: ParityCase):
    import keras

    if case.optimizer == "sgd":
        return keras.optimizers.SGD(case.learning_rate, momentum=case.momentum)
    if case.optimizer == "adam":
        return keras.optimizers.Adam(case.learning_rate)
    if case.optimizer == "adamw":
        return keras.optimizers.AdamW(case.learning_rate)
    return keras.optimizers.RMSprop(case.learning_rate)


def data(case: ParityCase, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``x (37, 7, 3)`` and targets: ``(37, 1)`` floats, or ``(37,)`` class ids; for a masked
    case, sequences of 2 to 7 steps padded with zeros after them, and targets per step
    ``(37, 7, 1)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, TIME, FEATURES)).astype(np.float32)
    if case.masked:
        lengths = rng.integers(2, TIME + 1, SAMPLES)
        x[np.arange(TIME)[None, :] >= lengths[:, None]] = 0.0
        return x, np.tanh(np.cumsum(x.sum(axis=2), axis=1))[..., None].astype(np.float32)
    if case.classes:
        return x, rng.integers(0, case.classes, SAMPLES).astype(np.int32)
    return x, np.tanh(x.sum(axis=(1, 2)))[:, None].astype(np.float32)


def run_both(case: ParityCase, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-step losses, epoch histories and final weights from Keras and from jaxgru."""
    import keras

    x, y = data(case)
    model = _keras_model(case, seed)
    jax_model, params = jaxgru.load_keras(model)
    loss = keras.losses.MeanSquaredError()  # a Loss object applies the output's mask
    if case.classes:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    step_losses = []
    class_weight = dict(case.class_weight) or None
    # Each sample's class weight, as Keras applies it (1 for a class not named).
    weight = np.array([class_weight.get(int(c), 1.0) for c in y]) if class_weight else None

    class RecordLoss(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            part = slice(batch * BATCH, (batch + 1) * BATCH)
            pred = self.model(x[part], training=False)  # it carries the Keras mask
            by_class = {} if weight is None else {"sample_weight": weight[part]}
            penalty = sum(float(p) for p in self.model.losses)  # weights' and activity's
            step_losses.append(float(np.mean(loss(y[part], pred, **by_class))) + penalty)

    model.compile(optimizer=_keras_optimizer(case), loss=loss)
    keras_history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[RecordLoss()],
        class_weight=class_weight,
    )
    params, history = jaxgru.fit(
        jax_model, params, x, y, loss=case.loss, from_logits=bool(case.classes),
        optimizer=case.optimizer, learning_rate=case.learning_rate, momentum=case.momentum,
        batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, class_weight=class_weight,
    )  # fmt: skip
    return {
        "keras_step_loss": np.array(step_losses),
        "jaxgru_step_loss": np.array(history["batch_loss"]),
        "keras_epoch_loss": np.array(keras_history.history["loss"]),
        "jaxgru_epoch_loss": np.array(history["loss"]),
        "keras_weights": model.get_weights(),
        "jaxgru_weights": jaxgru.to_keras_weights(jax_model, params),
    }


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max over entries of |actual - expected| / |expected|."""
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def main(out: Path = Path("docs/keras_fit_parity.png")) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(CASES) // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(13, 3.5 * rows), sharex=True)
    print(f"{'case':<16} {'max rel. diff, per-step loss':>30} {'max abs. diff, weights':>24}")
    for ax, (name, case) in zip(axes.flat, CASES.items()):
        r = run_both(case)
        rel = relative_difference(r["jaxgru_step_loss"], r["keras_step_loss"])
        weights = max(
            float(np.max(np.abs(a - b))) for a, b in zip(r["jaxgru_weights"], r["keras_weights"])
        )
        print(f"{name:<16} {rel:>30.2e} {weights:>24.2e}")
        ax.plot(r["keras_step_loss"], lw=3, alpha=0.5, label="Keras fit")
        ax.plot(r["jaxgru_step_loss"], "k--", lw=1, label="jaxgru.fit")
        ax.set_title(f"{name} (max rel. diff {rel:.1e})")
        ax.set_xlabel("step")
        ax.set_ylabel(case.loss)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
