"""Checks of the arrays a model is given, before anything runs: one clear error per problem.

``fit`` (and so ``jaxgru train``, before it writes anything), ``evaluate``, ``predict`` and
``jaxgru explain`` read their inputs through these, so a NaN, a string column, an empty split,
an id outside an Embedding's vocabulary or a target of the wrong shape is refused with a
``DataError`` naming the array and the fix, instead of training on it or answering from it.

>>> import numpy as np
>>> check_numbers("x", np.array([[1.0, np.nan]]))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
jaxgru.errors.DataError: x holds 1 NaN or infinite value (first at index (0, 1)); clean ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxgru import layer as protocol
from jaxgru.errors import DataError
from jaxgru.losses import get_loss, get_metric

# Losses whose targets have the model output's shape, and those that take class ids.
SAME_SHAPE_LOSSES = ("mse", "mae", "mean_squared_error", "mean_absolute_error",
                     "binary_crossentropy", "categorical_crossentropy")  # fmt: skip
CLASS_ID_LOSSES = ("sparse_categorical_crossentropy",)


def check_numbers(what: str, values: Any, *, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a NumPy array of real numbers, every float finite.

    Raises:
        DataError: strings, objects, complex numbers, dates, no samples, NaN or inf.
    """
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise DataError(f"{what} is not a rectangular array of numbers: {error}") from None
    if array.dtype.kind not in "biuf":
        kind = "complex numbers" if array.dtype.kind == "c" else f"dtype {array.dtype}"
        raise DataError(f"{what} holds {kind}; jaxgru takes real numbers (int or float)")
    if array.ndim == 0 or (len(array) == 0 and not allow_empty):
        raise DataError(f"{what} holds no samples (shape {array.shape})")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            count = int(bad.sum())
            raise DataError(
                f"{what} holds {count} NaN or infinite value{'s' if count > 1 else ''} (first "
                f"at index {first}); clean or drop those samples"
            )
    return array


def check_model_input(model: Any, what: str, x: Any) -> np.ndarray:
    """``x (samples, time, features)`` (or ids ``(samples, time)``) checked for ``model``:
    numbers, its rank and number of features (any length of time, as a GRU takes), and what
    its first layer reads (an Embedding's ids: whole numbers within its vocabulary).
    """
    inputs, outputs = getattr(model, "inputs", (None,)), getattr(model, "output_refs", (None,))
    if len(inputs) != 1 or len(outputs) != 1:
        raise DataError(
            f"model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; fit, "
            "evaluate and predict take models with one of each (yet). Predict with "
            "jax.jit(model.apply)(params, [x1, x2, ...])"
        )
    x = check_numbers(what, x)
    fixed = tuple(model.input_shape[1:])  # the sizes after time: features, or an image's axes
    fits = x.ndim == len(model.input_shape) + 1 and all(
        d is None or d == n for d, n in zip(fixed, x.shape[2:])
    )
    if not fits:
        shown = ", ".join(["time", *map(str, fixed)])
        raise DataError(
            f"{what} has shape {x.shape}, but model {model.name!r} reads (samples, {shown})"
        )
    if x.shape[1:2] == (0,):
        raise DataError(f"{what} holds sequences of length 0 (shape {x.shape}); give >= 1 step")
    for first in _input_readers(model):
        if protocol.input_dtype(first) == "int32":
            check_ids(f"{what} (ids for {type(first).__name__} {first.name!r})", x,
                      first.input_dim)  # fmt: skip
    return x


def _input_readers(model: Any) -> list:
    """The layers that read the model's input directly."""
    calls = getattr(model, "calls", None)
    if calls is None:
        return [model.layers[0]]
    source = (model.inputs[0].name, 0, 0)
    return [model.layer(c.layer) for c in calls if tuple(c.inputs) == source]


def check_ids(what: str, ids: np.ndarray, vocabulary: int) -> None:
    """Every id a whole number in ``[0, vocabulary)``, as Keras's Embedding requires."""
    if ids.dtype.kind == "f" and not np.array_equal(ids, np.round(ids)):
        raise DataError(f"{what} must be whole numbers, got {ids[ids != np.round(ids)][0]}")
    low, high = ids.min(), ids.max()
    if low < 0 or high >= vocabulary:
        bad = low if low < 0 else high
        raise DataError(
            f"{what} must lie in [0, {vocabulary}) (the vocabulary's input_dim), got {bad:g}"
        )


def check_samples(what: str, x: np.ndarray, *others: tuple[str, Any]) -> list[np.ndarray]:
    """The arrays of ``others`` (``(name, array or None)``) checked as numbers with as many
    samples as ``x``; ``None`` stays ``None``."""
    checked = []
    for name, values in others:
        if values is None:
            checked.append(None)
            continue
        array = check_numbers(f"{what} {name}", values)
        if len(array) != len(x):
            raise DataError(
                f"{what} x and {name} hold different numbers of samples: {len(x)} and {len(array)}"
            )
        checked.append(array)
    return checked


def check_targets(
    model: Any,
    params: dict,
    what: str,
    x: np.ndarray,
    y: np.ndarray,
    loss: str | Callable,
    metrics: Sequence[str | Callable] = (),
    from_logits: bool = False,
) -> None:
    """The model's output for ``x`` against the targets ``y``, the loss and the metrics, at
    the cost of ``jax.eval_shape`` (nothing is computed): shapes the loss would broadcast into
    something else, class ids outside the output's classes, and any error the model, the loss
    or a metric raises on these shapes.
    """
    loss_fn = get_loss(loss, from_logits)
    metric_fns = [get_metric(name, from_logits) for name in metrics]
    batch = jax.ShapeDtypeStruct((min(len(x), 2), *x.shape[1:]), x.dtype)
    try:
        out = jax.eval_shape(lambda p, xb: model.apply(p, xb), params, batch)
    except (TypeError, ValueError) as error:
        raise DataError(f"model {model.name!r} cannot take {what} x {x.shape}: {error}") from None
    outputs = tuple(out.shape[1:])
    if loss in SAME_SHAPE_LOSSES and tuple(y.shape[1:]) != outputs:
        hint = "; reshape y with y[..., None]" if (*y.shape[1:], 1) == outputs else ""
        raise DataError(
            f"{what} y has shape {y.shape}, but model {model.name!r} outputs (samples, "
            f"{', '.join(map(str, outputs))}) and loss {loss!r} needs targets of that shape{hint}"
        )
    if loss in CLASS_ID_LOSSES:
        if tuple(y.shape[1:]) not in (outputs[:-1], (*outputs[:-1], 1)):
            raise DataError(
                f"{what} y has shape {y.shape}, but loss {loss!r} needs one class id per output "
                f"(samples, {', '.join(map(str, outputs[:-1]))}) for model {model.name!r}"
            )
        check_ids(f"{what} y (class ids)", y, outputs[-1])
    target = jax.ShapeDtypeStruct((batch.shape[0], *y.shape[1:]), y.dtype)
    try:
        for fn in (loss_fn, *metric_fns):
            jax.eval_shape(fn, target, out)
    except (TypeError, ValueError) as error:
        names = [loss if isinstance(loss, str) else "the loss", *metrics]
        raise DataError(
            f"{names} cannot compare {what} y {y.shape} with model {model.name!r}'s output "
            f"{out.shape}: {error}"
        ) from None
