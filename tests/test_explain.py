"""explain.blocks / explain.trace, the inspect and explain commands, and docs/gru-math.md."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import jax
import keras
import numpy as np
import pytest

import jaxgru
from jaxgru import explain
from jaxgru.cli import main
from tests.helpers import BATCH, FEATURES, MASKS, TIME, UNITS, random_inputs, random_weights
from tests.reference import gru_reference

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import gru_math_doc  # noqa: E402
from seed_questions import SEED1_WEIGHTS  # noqa: E402

pytestmark = pytest.mark.oracle

LAYERS = {
    f"reset_after={ra},use_bias={ub},go_backwards={gb}": jaxgru.GRU(
        UNITS, reset_after=ra, use_bias=ub, go_backwards=gb, return_sequences=True
    )
    for ra in (True, False)
    for ub in (True, False)
    for gb in (False, True)
}


def _params(layer, seed=0):
    return jaxgru.from_keras_weights(layer, random_weights(layer, FEATURES, seed))


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("name", LAYERS)
def test_trace_is_apply_and_the_float64_reference(name, mask):
    layer, mask = LAYERS[name], MASKS[mask]
    params = _params(layer)
    x, h0 = random_inputs()
    t = explain.trace(layer, params, x, initial_state=h0, mask=mask)
    outputs, state = dataclasses.replace(layer, return_state=True).apply(params, x, h0, mask)
    np.testing.assert_array_equal(t.final_state, state)  # the same code path: exactly equal
    np.testing.assert_array_equal(np.swapaxes(t.output, 0, 1), outputs)
    order = list(range(TIME))[::-1] if layer.go_backwards else list(range(TIME))
    assert t.order.tolist() == order
    np.testing.assert_array_equal(t.x, np.swapaxes(x, 0, 1)[order])
    keep = np.ones((BATCH, TIME), bool) if mask is None else mask
    np.testing.assert_array_equal(t.skipped, ~keep.T[order])
    record = []
    weights = jaxgru.to_keras_weights(layer, params)
    gru_reference(x, *weights[:2], weights[2] if layer.use_bias else None, mask=mask,
                  reset_after=layer.reset_after, go_backwards=layer.go_backwards,
                  initial_state=h0, record=record)  # fmt: skip
    for field in ("z", "r", "hh", "h"):
        expected = np.stack([step[field] for step in record])
        np.testing.assert_allclose(getattr(t, field), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(jax.nn.sigmoid(t.z_pre), t.z, atol=1e-6)
    np.testing.assert_allclose(np.tanh(t.hh_pre), t.hh, atol=1e-6)


@pytest.mark.parametrize("name", LAYERS)
def test_blocks_reassemble_exactly_and_name_their_source(name):
    layer = LAYERS[name]
    params = {k: np.asarray(v) for k, v in _params(layer, seed=3).items()}
    named = explain.blocks(layer, params)
    expected_names = [f"{m}_{g}" for m in "WU" for g in "zrh"]
    if layer.use_bias:
        rows = ("b_x,", "b_h,") if layer.reset_after else ("b_",)
        expected_names += [f"{row}{g}" for row in rows for g in "zrh"]
    assert list(named) == expected_names
    for block in named.values():
        np.testing.assert_array_equal(block.value, eval(block.source, {}, dict(params)))
    reassembled = explain.assemble(layer, named)
    assert sorted(reassembled) == sorted(params)
    for key, value in params.items():
        np.testing.assert_array_equal(reassembled[key], value)
    assert named["W_h"].value.shape == (FEATURES, UNITS) and named["U_r"].value.shape == (5, 5)


def _cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _numbers_and_words(text: str) -> tuple[list[float], str]:
    pattern = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
    return [float(v) for v in re.findall(pattern, text)], re.sub(pattern, "#", text)


def assert_same_report(actual: str, expected: str) -> None:
    """Equal text, and numbers equal to float32 round-off (another CPU may differ by an ulp)."""
    (a, a_text), (e, e_text) = _numbers_and_words(actual), _numbers_and_words(expected)
    assert a_text == e_text
    np.testing.assert_allclose(a, e, rtol=2e-6, atol=1e-7)


def test_explain_seed1_matches_the_golden_file_and_keras(capsys):
    seed1 = ROOT / "docs" / "examples" / "seed1.keras"
    code, out, err = _cli(["explain", seed1, "--input", "[[1],[2],[9],[8]]"], capsys)
    assert code == 0, err
    assert_same_report(out, (ROOT / "tests" / "golden" / "explain_seed1.txt").read_text())
    assert "h  = z ⊙ h_prev + (1 − z) ⊙ h~" in out and "reads t = 0, 1, 2, 3" in out
    keras_model = keras.models.load_model(seed1)
    for ours, theirs in zip(keras_model.get_weights(), SEED1_WEIGHTS, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    prediction = float(keras_model(np.array([[[1], [2], [9], [8]]], np.float32))[0, 0])
    assert out.strip().endswith(f"final state h = {prediction:.7g}")


def test_docs_gru_math_is_regenerated_output(capsys):
    expected = gru_math_doc.generated_doc(gru_math_doc.DOC.read_text())
    assert_same_report(gru_math_doc.DOC.read_text(), expected)
    for heading in ("Cho et al. 2014", "Wikipedia", "PyTorch", "Haiku", "Why the bias is"):
        assert heading in expected


def test_json_and_markdown_formats(capsys):
    seed1 = ROOT / "docs" / "examples" / "seed1.keras"
    code, out, _ = _cli(["explain", seed1, "--input", "[[1],[2]]", "--format", "json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["layer"] == "gru"
    steps = report["samples"][0]["steps"]
    assert [s["t"] for s in steps] == [0, 1] and steps[0]["x_t"] == [1.0]
    assert report["samples"][0]["final_state"] == steps[-1]["h"]
    code, out, _ = _cli(["explain", seed1, "--input", "[[1],[2]]", "--format", "markdown"], capsys)
    assert "| step | t | read | x_t | z_pre | z |" in out


@pytest.fixture(scope="module")
def masked_bidirectional(tmp_path_factory):
    model = keras.Sequential([
        keras.Input((None, 3)), keras.layers.Masking(),
        keras.layers.Bidirectional(keras.layers.GRU(2, return_sequences=True), name="bidi"),
        keras.layers.GRU(9, reset_after=False, name="top"), keras.layers.Dense(1),
    ])  # fmt: skip
    path = tmp_path_factory.mktemp("m") / "model.h5"
    model.save(path)  # a legacy full-model .h5: inspect and explain take any loadable file
    return path


def test_explain_shows_skipped_steps_and_backward_order(masked_bidirectional, capsys):
    x = "[[1, 2, 3], [0, 0, 0], [1, 1, 1]]"
    code, out, err = _cli(["explain", masked_bidirectional, "--input", x,
                           "--layer", "bidi"], capsys)  # fmt: skip
    assert code == 0, err
    forward, backward = out.split('GRU "bidi/backward_layer"')
    assert "reads t = 0, 1, 2" in forward and "go_backwards=False" in forward
    assert "reads t = 2, 1, 0" in backward and "go_backwards=True" in backward
    skipped_rows = [line for line in out.splitlines() if "skipped" in line]
    assert len(skipped_rows) == 2 and all(line.split()[1] == "1" for line in skipped_rows)
    code, out, err = _cli(["explain", masked_bidirectional, "--input", x, "--layer", "top"],
                          capsys)  # fmt: skip
    assert code == 0 and "z  = σ(x_t W_z + h_prev U_z + b_z)" in out


def test_inspect_prints_small_blocks_and_summarises_large_ones(masked_bidirectional, capsys):
    code, out, err = _cli(["inspect", masked_bidirectional], capsys)
    assert code == 0, err
    assert 'GRU "bidi/forward_layer": units=2, input_dim=3, reset_after=True' in out
    assert re.search(r"W_z +=\s+kernel\[:, 0:2\] +\(3, 2\) +\[\[", out)
    assert re.search(r"U_h += recurrent_kernel\[:, 18:27\] +\(9, 9\) +min \S+ +max", out)
    assert "Total params:" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--input", "[[1, 2]]"],
            "--input has shape (1, 2) (int64); the model reads numbers "
            "shaped (time, 1) or (batch, time, 1)",
        ),
        (["--input", "[[[[1]]]]"], "--input has shape (1, 1, 1, 1)"),
        (["--input", "[1, 2"], "--input is neither a .npy file nor a JSON array"),
        (["--input", '[["a"]]'], "--input has shape (1, 1) (<U1)"),
        (["--input", "missing.npy"], "cannot read --input missing.npy"),
        (["--input", "[[1]]", "--layer", "dense"], "no GRU layer 'dense'; choose one of ['gru']"),
    ],
)
def test_bad_explain_input_exits_2_with_one_line(args, message, capsys):
    seed1 = ROOT / "docs" / "examples" / "seed1.keras"
    code, out, err = _cli(["explain", seed1, *args], capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
