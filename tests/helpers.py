"""Shared test data: distinct sizes, random asymmetric weights, the mask cases, Keras twins."""

from __future__ import annotations

import dataclasses
import io
import platform
import sys
import zipfile

import h5py
import numpy as np

import jaxgru
from jaxgru.gru import EXECUTION_FIELDS

BATCH, TIME, FEATURES, UNITS = 2, 7, 3, 5


def onednn_supported() -> bool:
    """Whether this platform has PyPI's oneDNN wheels, so the oneDNN kernel must be built."""
    return sys.platform == "linux" and platform.machine() == "x86_64"


MASKS = {
    "nomask": None,
    "right_padded": np.array([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], bool),
    "left_padded": np.array([[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]], bool),
    "row_fully_masked": np.array([[0, 0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1, 1]], bool),
}


def random_weights(layer: jaxgru.GRU, input_dim: int, seed: int = 0) -> list[np.ndarray]:
    """Random asymmetric float32 weights in Keras get_weights() order, biases non-zero."""
    rng = np.random.default_rng(seed)
    shapes = layer.param_shapes(input_dim)
    return [rng.uniform(-0.7, 0.7, shape).astype(np.float32) for shape in shapes.values()]


def random_inputs(seed: int = 1, batch=BATCH, time=TIME, features=FEATURES, units=UNITS):
    """x (batch, time, features) and an initial state (batch, units), float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, time, features)).astype(np.float32)
    h0 = rng.uniform(-0.9, 0.9, size=(batch, units)).astype(np.float32)
    return x, h0


def keras_gru(layer: jaxgru.GRU, input_dim: int, weights: list[np.ndarray]):
    """A real keras.layers.GRU with the same configuration and weights."""
    import keras

    config = {
        f.name: getattr(layer, f.name)
        for f in dataclasses.fields(layer)
        if f.name not in ("name", "unroll", *EXECUTION_FIELDS)
    }
    k = keras.layers.GRU(**config)
    k.build((None, None, input_dim))
    k.set_weights(weights)
    return k


def assert_gradients_match(ours, theirs, rtol: float = 1e-4) -> None:
    """Each weight's gradient within ``rtol`` of its scale, or of a thousandth of the largest
    gradient where a weight's is float32 noise on both sides (an attention key's bias: it
    shifts a query's scores alike, so its true gradient is zero)."""
    theirs = [np.asarray(t) for t in theirs]
    assert len(ours) == len(theirs)
    scale = max((np.abs(t).max() for t in theirs), default=0.0)
    for g, t in zip(ours, theirs):
        assert np.asarray(g).shape == t.shape
        assert np.abs(np.asarray(g) - t).max() <= rtol * max(np.abs(t).max(), 1e-3 * scale)


def max_rel_error(actual, expected) -> float:
    """max |actual - expected| / max |expected| (the error relative to the array's scale)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.max(np.abs(expected)), 1e-12)
    return float(np.max(np.abs(actual - expected)) / scale)


@dataclasses.dataclass(frozen=True)
class Case:
    """One point of the parity grid."""

    reset_after: bool
    use_bias: bool
    activations: tuple[str, str]  # (activation, recurrent_activation)
    go_backwards: bool
    return_sequences: bool
    return_state: bool
    mask: str
    initial_state: bool

    def layer(self) -> jaxgru.GRU:
        return jaxgru.GRU(
            UNITS,
            activation=self.activations[0],
            recurrent_activation=self.activations[1],
            use_bias=self.use_bias,
            reset_after=self.reset_after,
            go_backwards=self.go_backwards,
            return_sequences=self.return_sequences,
            return_state=self.return_state,
        )

    def __str__(self) -> str:
        flags = [
            "after" if self.reset_after else "before",
            "bias" if self.use_bias else "nobias",
            "-".join(self.activations),
            "back" if self.go_backwards else "fwd",
            "seq" if self.return_sequences else "last",
            "state" if self.return_state else "nostate",
            self.mask,
            "h0" if self.initial_state else "zeros",
        ]
        return ",".join(flags)


ACTIVATION_PAIRS = [("tanh", "sigmoid"), ("linear", "hard_sigmoid"), ("relu", "sigmoid")]

GRID = [
    Case(*values)
    for values in __import__("itertools").product(
        [True, False],
        [True, False],
        ACTIVATION_PAIRS,
        [False, True],
        [True, False],
        [False, True],
        list(MASKS),
        [False, True],
    )
]


def rewrite_zip(source, target, drop=(), replace=None) -> None:
    """Copy the zip ``source`` (a .keras) to ``target`` without the entries in ``drop`` and
    with ``replace[name](bytes) -> bytes`` applied to those it names."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            if name in drop:
                continue
            data = src.read(name)
            if replace and name in replace:
                data = replace[name](data)
            dst.writestr(name, data)


def edit_keras_weights(source, target, edit) -> None:
    """Copy a .keras, changing its model.weights.h5 with ``edit(h5py.File)``."""

    def change(data: bytes) -> bytes:
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as f:
            edit(f)
        return buffer.getvalue()

    rewrite_zip(source, target, replace={"model.weights.h5": change})


def replace_dataset(path: str, values_of):
    """An ``edit`` for ``edit_keras_weights``: the dataset at ``path`` becomes
    ``values_of(old values)``."""

    def edit(f) -> None:
        values = f[path][()]
        del f[path]
        f[path] = values_of(values)

    return edit
