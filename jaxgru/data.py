"""Datasets for experiments: synthetic tasks, a real series shipped by a package, user files.

Every loader returns a ``Dataset`` of train / validation / test ``Split``s plus the test score
of a trivial baseline, so a result can be judged at a glance. Loaders are plain functions whose
keyword arguments are exactly the keys of a config's ``[data]`` table.

>>> data = load_dataset("adding", samples=8, val_samples=4, test_samples=4, length=10)
>>> data.train.x.shape, data.train.y.shape
((8, 10, 2), (8, 1))
"""

from __future__ import annotations

import csv as csv_module
import importlib.util
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxgru.data_checks import check_numbers
from jaxgru.errors import DataError


@dataclass(frozen=True)
class Split:
    """``x (n, time, features)``, ``y (n, outputs)`` or ``(n, time)``, optional ``sample_weight``
    ``(n,)`` or ``(n, time)``."""

    x: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Dataset:
    """Three splits, test scores of trivial predictors, and the scaling applied to series data.

    ``scale`` is ``{"x_mean", "x_std", "y_mean", "y_std"}`` (lists) when the loader standardised
    the data with the training split's statistics, so that ``predict`` can do the same.
    """

    train: Split
    val: Split
    test: Split
    baselines: dict[str, float] = field(default_factory=dict)
    scale: dict[str, list[float]] | None = None


def adding(
    samples: int = 10000,
    val_samples: int = 1000,
    test_samples: int = 1000,
    length: int = 100,
    seed: int = 0,
) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked numbers.

    ``x (n, length, 2)``: channel 0 uniform in [0, 1); channel 1 marks one step in each half of
    the sequence. ``y (n, 1)``: the sum of the two marked values. Predicting the mean, 1.0,
    scores MSE 1/6 ≈ 0.167, the baseline to beat.
    """
    _check_sizes("adding", samples=samples)
    if length < 2:
        raise DataError(f"data.length is too small for adding: got {length}, needs >= 2")

    def make(n: int, rng: np.random.Generator) -> Split:
        values = rng.random((n, length), dtype=np.float32)
        half = length // 2
        first = rng.integers(0, half, n)
        second = rng.integers(half, length, n)
        markers = np.zeros((n, length), np.float32)
        markers[np.arange(n), first] = 1.0
        markers[np.arange(n), second] = 1.0
        y = (values * markers).sum(axis=1, keepdims=True)
        return Split(np.stack([values, markers], axis=-1), y)

    train, val, test = _synthetic(make, seed, samples, val_samples, test_samples)
    baseline = float(np.mean((test.y - 1.0) ** 2))
    return Dataset(train, val, test, {"predict_1.0_mse": baseline})


def copy_memory(
    samples: int = 10000,
    val_samples: int = 1000,
    test_samples: int = 1000,
    delay: int = 20,
    copy_length: int = 5,
    symbols: int = 8,
    seed: int = 0,
) -> Dataset:
    """Copy memory (Arjovsky et al. 2016): recall ``copy_length`` symbols after ``delay`` blanks.

    Input one-hot ``(n, T, symbols + 2)`` with ``T = 2·copy_length + delay``: the symbols
    (ids 1..symbols), blanks (id 0), a cue (id symbols + 1) one step before recall, blanks.
    ``y (n, T)`` holds the id to output at each step; ``sample_weight (n, T)`` is 1 on the
    ``copy_length`` recall steps only, so loss and accuracy score the recall. Chance accuracy
    is ``1/symbols``.
    """
    _check_sizes("copy_memory", samples=samples, delay=delay, copy_length=copy_length,
                 symbols=symbols)  # fmt: skip
    total = 2 * copy_length + delay
    classes = symbols + 2

    def make(n: int, rng: np.random.Generator) -> Split:
        ids = np.zeros((n, total), np.int32)
        payload = rng.integers(1, symbols + 1, (n, copy_length))
        ids[:, :copy_length] = payload
        ids[:, copy_length + delay - 1] = symbols + 1
        y = np.zeros((n, total), np.int32)
        y[:, -copy_length:] = payload
        weight = np.zeros((n, total), np.float32)
        weight[:, -copy_length:] = 1.0
        return Split(np.eye(classes, dtype=np.float32)[ids], y, weight)

    train, val, test = _synthetic(make, seed, samples, val_samples, test_samples)
    return Dataset(train, val, test, {"chance_accuracy": 1.0 / symbols})


def sine(
    samples: int = 2000,
    val_samples: int = 500,
    test_samples: int = 500,
    window: int = 40,
    horizon: int = 1,
    noise: float = 0.05,
    seed: int = 0,
) -> Dataset:
    """Forecast a noisy sine ``horizon`` steps past a ``window`` of it.

    Each sample has its own period (8 to 32 steps), phase and amplitude (0.5 to 1.5).
    ``x (n, window, 1)``, ``y (n, 1)``. The baseline repeats the last observed value.
    """
    _check_sizes("sine", samples=samples, window=window, horizon=horizon)

    def make(n: int, rng: np.random.Generator) -> Split:
        period = rng.uniform(8, 32, (n, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        amplitude = rng.uniform(0.5, 1.5, (n, 1))
        t = np.arange(window + horizon)[None, :]
        clean = amplitude * np.sin(2 * np.pi * t / period + phase)
        series = (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)
        return Split(series[:, :window, None], series[:, -1:])

    train, val, test = _synthetic(make, seed, samples, val_samples, test_samples)
    return Dataset(train, val, test, {"last_value_mse": _last_value_mse(test)})


def sunspots(
    window: int = 20, horizon: int = 1, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> Dataset:
    """Yearly sunspot numbers 1700-2008 (309 values), as shipped by ``statsmodels``.

    Read from the package's CSV without importing it (and without network). The series is
    split in time order, standardised with the training part's mean and deviation, and cut
    into ``window``-year inputs ``(n, window, 1)`` with the value ``horizon`` years later as
    ``y (n, 1)``. The baseline repeats the last observed year.
    """
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or spec.origin is None:
        raise DataError(
            "the sunspots data ships with statsmodels, which is not installed; "
            "run: pip install statsmodels"
        )
    path = Path(spec.origin).parent / "datasets" / "sunspots" / "sunspots.csv"
    values = read_csv_columns(path, ["SUNACTIVITY"])
    return _series_dataset(values, values, window, horizon, val_fraction, test_fraction)


def csv(
    path: str,
    x_columns: list[str],
    y_columns: list[str],
    window: int = 20,
    horizon: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Dataset:
    """Forecast ``y_columns`` from ``window`` rows of ``x_columns`` of a CSV file with a header.

    Rows are time steps. Split in time order and standardised like ``sunspots``.
    """
    x = read_csv_columns(Path(path), x_columns)
    y = read_csv_columns(Path(path), y_columns)
    return _series_dataset(x, y, window, horizon, val_fraction, test_fraction)


def npz(
    path: str,
    x_key: str = "x",
    y_key: str = "y",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Dataset:
    """Arrays from a ``.npz`` file: ``x (n, time, features)`` and ``y``, split in file order.

    Keys ``x_val``/``y_val`` and ``x_test``/``y_test`` (named after ``x_key``/``y_key``), when
    present, are used as the validation and test splits instead of fractions.
    """
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as .npz: {error}") from None
    for key in (x_key, y_key):
        if key not in arrays:
            raise DataError(f"{path} has no array {key!r}; it holds {sorted(arrays)}")
    for key, values in arrays.items():
        check_numbers(f"{path} array {key!r}", values, allow_empty=True)
    x, y = arrays[x_key], arrays[y_key]
    if x.ndim != 3 or len(x) != len(y):
        raise DataError(
            f"{path}: {x_key} must be (samples, time, features) and {y_key} must have as many "
            f"samples; got {x.shape} and {y.shape}"
        )
    extra = {s: (arrays.get(f"{x_key}_{s}"), arrays.get(f"{y_key}_{s}")) for s in ("val", "test")}
    if all(a is not None for pair in extra.values() for a in pair):
        splits = [Split(x, y)] + [Split(*extra[s]) for s in ("val", "test")]
    else:
        splits = _split_in_order(x, y, val_fraction, test_fraction)
    return Dataset(*splits)


LOADERS = {
    "adding": adding,
    "copy_memory": copy_memory,
    "sine": sine,
    "sunspots": sunspots,
    "csv": csv,
    "npz": npz,
}


def load_dataset(kind: str, **kwargs) -> Dataset:
    """Build the dataset ``kind`` (a key of ``LOADERS``) with the loader's keyword arguments."""
    if kind not in LOADERS:
        raise DataError(f"unknown data kind {kind!r}; choose one of {', '.join(LOADERS)}")
    return LOADERS[kind](**kwargs)


def _check_sizes(kind: str, **sizes: int) -> None:
    for name, value in sizes.items():
        if value < 1:
            raise DataError(f"data.{name} is too small for {kind}: got {sizes[name]}")


def _synthetic(make, seed: int, *sizes: int) -> list[Split]:
    """One independent stream per split, so the test set never changes with ``samples``."""
    return [make(n, np.random.default_rng([seed, i])) for i, n in enumerate(sizes)]


def _last_value_mse(split: Split) -> float:
    return float(np.mean((split.x[:, -1, :1] - split.y) ** 2))


def read_csv_table(path: Path) -> tuple[list[str], np.ndarray]:
    """A CSV file with a header row: ``(column names, values (rows, columns) float64)``.

    Raises:
        DataError: no header, no data rows, ragged rows, or a cell that is not a number.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv_module.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv_module.Error) as error:
        raise DataError(f"cannot read {path} as CSV: {error}") from None
    if not rows:
        raise DataError(f"{path} is empty; a CSV needs a header row and data rows")
    names = [name.strip() for name in rows[0]]
    if all(_is_number(name) for name in names):
        raise DataError(
            f"{path}'s first row {rows[0]} holds numbers, not column names; add a header row"
        )
    if len(rows) == 1:
        raise DataError(f"{path} has a header row but no data rows")
    values = np.empty((len(rows) - 1, len(names)))
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(names):
            raise DataError(f"{path} line {i} has {len(row)} cells; the header has {len(names)}")
        for j, cell in enumerate(row):
            if not _is_number(cell):
                raise DataError(f"{path} line {i}, column {names[j]!r}: {cell!r} is not a number")
            values[i - 2, j] = float(cell)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{path} holds NaN or infinite cells")
    return names, values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv_columns(path: Path, columns: list[str]) -> np.ndarray:
    """``(rows, len(columns))`` float32 from a CSV file with a header row."""
    names, values = read_csv_table(path)
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path} has no column(s) {missing}; its columns are {names}")
    return values[:, [names.index(c) for c in columns]].astype(np.float32)


def _series_dataset(x, y, window, horizon, val_fraction, test_fraction) -> Dataset:
    """Windows over a time series, split in time order, standardised by the training part."""
    starts = len(x) - window - horizon + 1
    if window < 1 or horizon < 1 or starts < 3:
        raise DataError(
            f"a series of {len(x)} rows is too short for window={window}, horizon={horizon}"
        )
    n_train_rows = round(len(x) * (1 - val_fraction - test_fraction))
    stats = {
        "x_mean": x[:n_train_rows].mean(0),
        "x_std": x[:n_train_rows].std(0) + 1e-8,
        "y_mean": y[:n_train_rows].mean(0),
        "y_std": y[:n_train_rows].std(0) + 1e-8,
    }
    xs = (x - stats["x_mean"]) / stats["x_std"]
    ys = (y - stats["y_mean"]) / stats["y_std"]
    index = np.arange(starts)[:, None] + np.arange(window)[None, :]
    windows = xs[index]  # (samples, window, features)
    targets = ys[np.arange(starts) + window - 1 + horizon]  # (samples, outputs)
    last_seen = ys[np.arange(starts) + window - 1]
    splits = _split_in_order(windows, targets, val_fraction, test_fraction)
    n_test = len(splits[2])
    baseline = float(np.mean((last_seen[-n_test:] - targets[-n_test:]) ** 2))
    scale = {k: v.astype(float).tolist() for k, v in stats.items()}
    return Dataset(*splits, baselines={"last_value_mse": baseline}, scale=scale)


def _split_in_order(x, y, val_fraction: float, test_fraction: float) -> list[Split]:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction and test_fraction must be in [0, 1) and sum below 1; "
            f"got {val_fraction} and {test_fraction}"
        )
    n = len(x)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DataError(f"{n} samples leave none for training after the validation/test split")
    cuts = [0, n_train, n_train + n_val, n]
    return [Split(x[a:b], y[a:b]) for a, b in itertools.pairwise(cuts)]
