"""``jaxgru convert IN OUT`` end to end with real torch, Keras and onnxruntime; bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import jaxgru
from jaxgru.cli import main
from tests.helpers import BATCH, FEATURES, TIME, UNITS

pytestmark = pytest.mark.oracle


def save_torch_gru(path, **kwargs):
    torch.manual_seed(0)
    module = torch.nn.GRU(FEATURES, UNITS, batch_first=True, **kwargs)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)
    torch.save(module.state_dict(), path)
    return module.eval()


X = np.random.default_rng(1).normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)


def test_torch_to_keras_to_torch_and_onnx(tmp_path, capsys):
    import keras
    import onnxruntime as ort

    module = save_torch_gru(tmp_path / "gru.pt", num_layers=2, bidirectional=True)
    expected = module(torch.from_numpy(X))[0].detach().numpy()

    assert main(["convert", str(tmp_path / "gru.pt"), str(tmp_path / "gru.keras")]) == 0
    assert "wrote" in capsys.readouterr().out
    keras_model = keras.models.load_model(tmp_path / "gru.keras")
    np.testing.assert_allclose(keras_model.predict(X, verbose=0), expected, atol=1e-5)

    assert main(["convert", str(tmp_path / "gru.keras"), str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    original = module.state_dict()
    assert list(back) == list(original)
    assert all(torch.equal(back[k], original[k]) for k in original)

    assert main(["convert", str(tmp_path / "gru.keras"), str(tmp_path / "gru.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "gru.onnx"))
    np.testing.assert_allclose(session.run(None, {"input": X})[0], expected, atol=1e-5)


def test_formats_can_be_named_explicitly(tmp_path):
    import onnxruntime as ort

    module = save_torch_gru(tmp_path / "weights.bin")
    keras_out = tmp_path / "model.keras"
    assert main(["convert", str(tmp_path / "weights.bin"), str(keras_out), "--from", "torch"]) == 0
    assert jaxgru.load_keras(keras_out)[0].layers[0].units == UNITS
    graph = tmp_path / "model.graph"
    assert main(["convert", str(keras_out), str(graph), "--to", "onnx"]) == 0
    np.testing.assert_allclose(
        ort.InferenceSession(str(graph)).run(None, {"input": X})[0],
        module(torch.from_numpy(X))[0].detach().numpy(),
        atol=1e-5,
    )


def keras_file(tmp_path, layer):
    model = jaxgru.Sequential([layer], input_shape=(None, FEATURES))
    jaxgru.save_keras(model, model.init(jax.random.key(0)), tmp_path / "in.keras")
    return tmp_path / "in.keras"


@pytest.mark.parametrize(
    ("make_input", "output", "message"),
    [
        (lambda p: keras_file(p, jaxgru.GRU(4, reset_after=False)), "out.pt", "reset_after=False"),
        (lambda p: keras_file(p, jaxgru.GRU(4)), "out.txt", "cannot tell the format"),
        (lambda p: keras_file(p, jaxgru.GRU(4)), "out.h5", "writes Keras 3 files"),
        (lambda p: p / "missing.keras", "out.pt", "no such file"),
        (
            lambda p: (p / "in.onnx").write_bytes(b"x") and p / "in.onnx",
            "out.keras",
            "does not read it",
        ),
        (
            lambda p: (p / "in.pt").write_bytes(b"not a pickle") and p / "in.pt",
            "out.keras",
            "not a torch state_dict file",
        ),
    ],
    ids=["reset_after", "suffix", "legacy_h5", "missing", "onnx_input", "corrupt_pt"],
)
def test_bad_conversions_exit_2_with_one_line_and_write_nothing(
    make_input, output, message, tmp_path, capsys
):
    source = make_input(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["convert", str(source), str(tmp_path / output)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_state_dict_of_a_larger_module_needs_the_prefix(tmp_path, capsys):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(FEATURES, UNITS, batch_first=True)
            self.head = torch.nn.Linear(UNITS, 1)

    torch.save(Net().state_dict(), tmp_path / "net.pt")
    out = str(tmp_path / "gru.keras")
    assert main(["convert", str(tmp_path / "net.pt"), out]) == 2
    assert "--torch-prefix gru." in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "net.pt"), out, "--torch-prefix", "gru."]) == 0
