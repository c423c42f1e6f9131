"""One clear line for every bad input: no traceback, no made-up answer, no file written.

Each case was a traceback or a silent wrong answer before; the fuzz tests (hypothesis) feed
the config loader, the CSV and npz loaders, ``predict``'s input and ``explain --input`` with
generated junk and fail on anything but a result or one ``jaxgru: error:`` line.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import jax
import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxgru
from jaxgru import config as jaxgru_config
from jaxgru import data, experiment
from jaxgru.cli import BUG_EXIT_STATUS, main
from jaxgru.errors import ConfigError, DataError, JaxgruError
from jaxgru.keras_io.manifest import manifest_path
from tests.helpers import edit_keras_weights, replace_dataset

# JAXGRU_FUZZ_EXAMPLES=3000 fuzzes deeper than the suite's default.
FUZZ = settings(
    max_examples=int(os.environ.get("JAXGRU_FUZZ_EXAMPLES", 40)), deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip

RUN_CONFIG = """
name = "bad-input"
[data]
kind = "sine"
samples = 64
val_samples = 16
test_samples = 16
window = 6
[model]
layers = [{ type = "GRU", units = 3 }, { type = "Dense", units = 1 }]
[train]
epochs = 1
batch_size = 16
[run]
plot = false
progress_bar = false
"""


def _run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code: int, err: str, message: str = "") -> bool:
    lines = err.strip().splitlines()
    return (
        code == 2
        and len(lines) == 1
        and lines[0].startswith("jaxgru: error: ")
        and (message in err)
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "c.toml").write_text(RUN_CONFIG)
    experiment.train_run(jaxgru_config.load(tmp / "c.toml", [f"run.dir='{tmp / 'run'}'"]),
                         log=lambda text: None)  # fmt: skip
    return tmp / "run"


@pytest.fixture(scope="module")
def embedding_file(tmp_path_factory) -> Path:
    model = jaxgru.Sequential([jaxgru.Embedding(10, 4), jaxgru.GRU(3)], input_shape=(None,))
    path = tmp_path_factory.mktemp("embedding") / "ids.keras"
    jaxgru.save_keras(model, model.init(jax.random.key(0)), path)
    return path


# -- predict: no prediction from nothing -----------------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "is empty; a CSV needs a header row"),
        ("header.csv", "value\n", "has a header row but no data rows"),
        ("noheader.csv", "0.5\n0.25\n0.1\n", "holds numbers, not column names; add a header"),
        ("text.csv", "value\n0.5\nabc\n", "line 3, column 'value': 'abc' is not a number"),
        ("ragged.csv", "a,b\n1,2\n3\n", "line 3 has 1 cells; the header has 2"),
    ],
)
def test_predict_refuses_a_csv_it_would_have_to_guess_at(trained_run, tmp_path, capsys, name,
                                                         content, message):  # fmt: skip
    (tmp_path / name).write_text(content)
    code, out, err = _run(["predict", trained_run, tmp_path / name], capsys)
    assert _refused(code, err, message), err
    assert out == ""


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 0, 1), np.float32), "sequences of length 0"),
        (np.zeros((0, 6, 1), np.float32), "holds no samples"),
        (np.full((1, 6, 1), np.inf, np.float32), "NaN or infinite"),
        (np.zeros((1, 6, 1), np.complex64), "holds complex numbers"),
        (np.zeros((1, 6, 3), np.float32), "reads (samples, time, 1)"),
    ],
)
def test_predict_refuses_npy_input_that_does_not_fit(trained_run, tmp_path, capsys, array,
                                                     message):  # fmt: skip
    np.save(tmp_path / "x.npy", array)
    code, out, err = _run(["predict", trained_run, tmp_path / "x.npy"], capsys)
    assert _refused(code, err, message), err
    assert out == ""


def test_predict_refuses_a_run_whose_data_json_is_not_a_scale(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for item in trained_run.iterdir():
        if item.is_file():
            (run / item.name).write_bytes(item.read_bytes())
    (run / "data.json").write_text("[1, 2, 3]")
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 1), np.float32))
    code, _, err = _run(["predict", run, tmp_path / "x.npy"], capsys)
    assert _refused(code, err, "is not a run's data.json"), err


# -- explain and evaluate: ids outside the vocabulary ---------------------------------------------


@pytest.mark.parametrize(
    "ids, message",
    [
        ("[1, 2, 10]", "must lie in [0, 10) (the vocabulary's input_dim), got 10"),
        ("[1, -1, 2]", "must lie in [0, 10) (the vocabulary's input_dim), got -1"),
        ("[1, 2.5, 3]", "must be whole numbers, got 2.5"),
        ("[]", "--input has shape (0,)"),
    ],
)
def test_explain_refuses_ids_outside_the_vocabulary(embedding_file, capsys, ids, message):
    code, out, err = _run(["explain", embedding_file, "--input", ids], capsys)
    assert _refused(code, err, message), err
    code, out, err = _run(["explain", embedding_file, "--input", "[1, 2, 9]"], capsys)
    assert code == 0 and "gru" in out


def test_predict_and_evaluate_check_ids_where_they_enter():
    model = jaxgru.Sequential([jaxgru.Embedding(10, 4), jaxgru.GRU(3)], input_shape=(5,))
    params = model.init(jax.random.key(0))
    ids = np.array([[1, 2, 3, 4, 12]])
    with pytest.raises(DataError, match=r"must lie in \[0, 10\)"):
        jaxgru.predict(model, params, ids)
    with pytest.raises(DataError, match=r"must lie in \[0, 10\)"):
        jaxgru.evaluate(model, params, ids, np.zeros((1, 3), np.float32))
    assert np.isfinite(jaxgru.predict(model, params, ids % 10)).all()


# -- Keras files: weights jaxgru cannot use, damaged headers, checksums -------------------------


def _small_model():
    model = jaxgru.Sequential([jaxgru.GRU(3), jaxgru.Dense(1)], input_shape=(None, 2))
    return model, model.init(jax.random.key(1))


@pytest.mark.parametrize("dtype", [np.int32, np.complex64])
def test_weights_that_are_not_floating_point_are_refused(tmp_path, capsys, dtype):
    model, params = _small_model()
    jaxgru.save_keras(model, params, tmp_path / "good.keras")
    path = tmp_path / "odd.keras"
    edit_keras_weights(
        tmp_path / "good.keras",
        path,
        replace_dataset("layers/gru/cell/vars/0", lambda v: v.astype(dtype)),
    )
    message = f"weights must be floating point, got arrays ['#0 {np.dtype(dtype).name}']"
    for command in (["inspect", path], ["explain", path, "--input", "[[1, 2]]"]):
        code, out, err = _run(command, capsys)
        assert _refused(code, err, message), err
        assert out == ""


def test_a_damaged_h5_header_is_one_line(tmp_path, capsys):
    model, params = _small_model()
    path = tmp_path / "w.weights.h5"
    jaxgru.save_keras_weights(model, params, path)
    raw = bytearray(path.read_bytes())
    raw[8:48] = bytes(40)  # the superblock after the signature
    path.write_bytes(bytes(raw))
    with pytest.raises(jaxgru.KerasFileError, match="the file is damaged or truncated"):
        jaxgru.load_keras_weights(model, path)
    code, _, err = _run(["inspect", path], capsys)
    assert _refused(code, err, "damaged or truncated"), err


def test_inspect_reports_non_finite_weights_block_by_block(tmp_path, capsys):
    model, params = _small_model()
    kernel = np.asarray(params["gru"]["kernel"]).copy()
    kernel[0, :2] = np.nan
    kernel[1, 0] = np.inf
    params = {**params, "gru": {**params["gru"], "kernel": kernel}}
    jaxgru.save_keras(model, params, tmp_path / "m.keras")
    code, out, err = _run(["inspect", tmp_path / "m.keras"], capsys)
    assert code == 0, err
    assert "weights: NON-FINITE values" in out and "gru/kernel: 2 NaN, 1 inf of 18" in out
    assert "dense/" not in out.split("weights:")[1].split("\n\n")[0]
    good_model, good_params = _small_model()
    jaxgru.save_keras(good_model, good_params, tmp_path / "good.keras")
    assert (
        "weights: every value is finite" in _run(["inspect", tmp_path / "good.keras"], capsys)[1]
    )


def _flip_a_weight(path: Path, values: np.ndarray) -> None:
    raw = bytearray(path.read_bytes())
    at = raw.find(np.asarray(values, np.float32).tobytes())
    assert at > 0, "the array's bytes are stored as they are"
    raw[at + 1] ^= 0x01
    path.write_bytes(bytes(raw))


def test_inspect_verify_tells_a_damaged_file_from_a_good_one(tmp_path, capsys):
    model, params = _small_model()
    weights = tmp_path / "m.weights.h5"
    jaxgru.save_keras_weights(model, params, weights, manifest=True)
    keras_file = tmp_path / "m.keras"
    jaxgru.save_keras(model, params, keras_file, manifest=True)
    for path in (weights, keras_file):
        code, out, err = _run(["inspect", path, "--verify"], capsys)
        assert code == 0 and "matches its manifest" in out, err
    # One flipped bit in a weight of the .h5 loads silently, but the manifest names the array.
    _flip_a_weight(weights, params["gru"]["recurrent_kernel"])
    loaded = jaxgru.load_keras_weights(model, weights)
    assert not np.array_equal(loaded["gru"]["recurrent_kernel"], params["gru"]["recurrent_kernel"])
    code, _, err = _run(["inspect", weights, "--verify"], capsys)
    assert _refused(code, err, "the weight arrays ['layers/gru/cell/vars/1'] changed"), err
    _flip_a_weight(keras_file, params["gru"]["recurrent_kernel"])  # inside the zip entry
    code, _, err = _run(["inspect", keras_file, "--verify"], capsys)
    assert _refused(code, err, "differs from its manifest"), err
    manifest_path(keras_file).unlink()
    code, _, err = _run(["inspect", keras_file, "--verify"], capsys)
    assert _refused(code, err, "has no manifest m.keras.sha256.json"), err


def test_a_run_writes_the_manifest_of_its_model(trained_run, capsys):
    code, out, err = _run(["inspect", trained_run / "model.keras", "--verify"], capsys)
    assert code == 0 and "matches its manifest" in out, err


# -- arguments of the wrong kind ------------------------------------------------------------


def test_a_complex_array_is_refused_not_cast():
    gru = jaxgru.GRU(3)
    params = gru.init(jax.random.key(0), 2)
    x = np.ones((2, 4, 2), np.complex64)
    with pytest.raises(DataError, match="GRU expects real numbers, got complex64"):
        gru.apply(params, x)
    with pytest.raises(DataError, match="initial_state must be real numbers"):
        gru.apply(params, x.real, initial_state=np.zeros((2, 3), np.complex64))


@pytest.mark.parametrize(
    "build",
    [
        lambda: jaxgru.Bidirectional(np.zeros(3)),
        lambda: jaxgru.Sequential([object()], input_shape=(4, 2)),
        lambda: jaxgru.to_keras_weights("gru", {}),
        lambda: jaxgru.to_keras_weights(jaxgru.GRU(2), [1, 2]),
        lambda: jaxgru.GRU(2, activation=3),
        lambda: jaxgru.GRU(2, kernel_initializer=3.0).init(jax.random.key(0), 2),
    ],
    ids=[
        "bidirectional-array",
        "sequential-object",
        "weights-target",
        "weights-params",
        "activation",
        "initializer",
    ],
)
def test_a_wrong_argument_is_a_value_error_of_the_family(build):
    with pytest.raises(JaxgruError) as caught:
        build()
    assert isinstance(caught.value, ValueError) and not isinstance(caught.value, TypeError)


# -- fuzz: junk in, one line out ------------------------------------------------------------

_SCALARS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.booleans(),
    st.text(max_size=8), st.none(),
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = st.sampled_from([
    "name", "seed", "data.kind", "data.window", "data.samples", "train.epochs", "train.loss",
    "train.metrics", "train.batch_size", "train.schedule", "train.early_stopping",
    "model.layers", "model.layers.0.units", "model.layers.0.type", "run.keep_checkpoints",
    "mesh.data", "extra",
])  # fmt: skip


@FUZZ
@given(changes=st.dictionaries(_KEYS, _VALUES, max_size=3))
def test_fuzz_the_config_loader(tmp_path, capsys, changes):
    raw = jaxgru_config.tomllib.loads(RUN_CONFIG)
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            if isinstance(node, list):
                node = node[int(part)] if int(part) < len(node) else None
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                break
        else:
            if isinstance(node, dict):
                node[last] = value
    try:
        cfg = jaxgru_config.resolve(raw)
    except ConfigError as error:
        assert "\n" not in str(error)
    else:  # a config that resolves would train: the loader's part is done
        assert set(cfg) >= {"name", "data", "model", "train", "run"}
        return
    # Refused in Python, so refused by the command: one line, exit 2, no run directory.
    try:
        text = tomli_w.dumps(raw)
    except (TypeError, ValueError):
        return  # not writable as TOML (None, 2**70): only Python callers can pass it
    (tmp_path / "fuzz.toml").write_text(text)
    run = tmp_path / "fuzz-run"
    code, _, err = _run(["train", tmp_path / "fuzz.toml", "--set", f"run.dir='{run}'"], capsys)
    assert _refused(code, err), err
    assert not run.exists()


_CSV = st.text(alphabet=string.digits + string.ascii_letters + ",.-+e \n\"'nNaI", max_size=80)


@FUZZ
@given(text=_CSV)
def test_fuzz_the_csv_reader(tmp_path, text):
    path = tmp_path / "f.csv"
    path.write_text(text)
    try:
        names, values = data.read_csv_table(path)
    except DataError as error:
        assert "\n" not in str(error)
    else:
        assert len(values) >= 1 and values.shape[1] == len(names) and np.isfinite(values).all()


_DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex64, "U2"])
_SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


@FUZZ
@given(x_dtype=_DTYPES, x_shape=_SHAPES, y_dtype=_DTYPES, y_shape=_SHAPES,
       nan=st.booleans())  # fmt: skip
def test_fuzz_the_npz_loader(tmp_path, x_dtype, x_shape, y_dtype, y_shape, nan):
    x = np.ones(x_shape).astype(x_dtype)
    if nan and x.dtype.kind == "f" and x.size:
        x.flat[0] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(y_shape).astype(y_dtype))
    try:
        dataset = data.load_dataset("npz", path=str(tmp_path / "d.npz"))
    except DataError as error:
        assert "\n" not in str(error)
    else:
        assert dataset.train.x.ndim == 3 and np.isfinite(dataset.train.x).all()


@FUZZ
@given(text=st.one_of(_CSV, st.text(max_size=40)), suffix=st.sampled_from([".csv", ".npy"]))
def test_fuzz_predict_input(trained_run, tmp_path, capsys, text, suffix):
    source, output = tmp_path / f"in{suffix}", tmp_path / "out.csv"
    output.unlink(missing_ok=True)
    source.write_text(text)
    code, out, err = _run(["predict", trained_run, source, "--output", output], capsys)
    assert code != BUG_EXIT_STATUS, err
    if code == 0:
        assert output.is_file() and np.isfinite(np.loadtxt(output, delimiter=",", ndmin=1)).all()
    else:
        assert _refused(code, err), err
        assert not output.exists() and out == ""


_JSON = st.recursive(st.one_of(st.integers(-3, 12), st.floats(-20, 20), st.text(max_size=2),
                               st.none(), st.booleans()),
                     lambda inner: st.lists(inner, max_size=4), max_leaves=10)  # fmt: skip


@FUZZ
@given(value=_JSON)
def test_fuzz_explain_input(embedding_file, capsys, value):
    code, _, err = _run(["explain", embedding_file, f"--input={json.dumps(value)}"], capsys)
    assert code != BUG_EXIT_STATUS, err
    assert code == 0 or _refused(code, err), err


def test_an_image_shaped_input_that_does_not_fit_is_named_not_failed_inside_jax():
    """A Conv2D front-end reads (samples, time, 4, 1): every fixed size after time is checked."""
    model = jaxgru.Sequential(
        [jaxgru.Conv2D(2, 2, padding="same"), jaxgru.Reshape((-1, 8)), jaxgru.GRU(3)],
        input_shape=(None, 4, 1),
    )
    params = model.init(jax.random.key(0))
    assert jaxgru.predict(model, params, np.ones((2, 7, 4, 1), np.float32)).shape == (2, 3)
    with pytest.raises(jaxgru.errors.DataError, match=r"reads \(samples, time, 4, 1\)"):
        jaxgru.predict(model, params, np.ones((2, 7, 5, 1), np.float32))
