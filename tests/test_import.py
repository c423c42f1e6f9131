"""`import jaxgru` never imports TensorFlow or Keras: proven in a subprocess that blocks them."""

import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in (
            "tensorflow", "keras", "tf_keras", "torch", "onnx", "onnxruntime", "flax", "equinox"
        ):
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, Block())
import jax, jaxgru, jaxgru.convert
layer = jaxgru.GRU(4, return_sequences=True)
y = layer.apply(layer.init(jax.random.key(0), 3), jax.numpy.ones((2, 5, 3)))
w = jaxgru.to_keras_weights(layer, jaxgru.from_keras_weights(layer, [
    jax.numpy.ones((3, 12)), jax.numpy.ones((4, 12)), jax.numpy.zeros((2, 12))]))
assert y.shape == (2, 5, 4) and len(w) == 3
assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
assert "matplotlib" not in sys.modules  # plotting is imported only when a run plots
try:
    jaxgru.convert.to_torch(layer, {})
except jaxgru.convert.ConversionError as error:
    assert "pip install torch==2.13.0" in str(error), error
print("ok")
"""


@pytest.mark.multiprocess
def test_import_jaxgru_does_not_import_tensorflow_or_the_converters_frameworks():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


LOAD_SCRIPT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, Block())
import numpy as np, jaxgru
model, params = jaxgru.load_keras(sys.argv[1])
np.save(sys.argv[3], np.asarray(model.apply(params, np.load(sys.argv[2]))))
jaxgru.save_keras(model, params, sys.argv[4])
"""


@pytest.mark.oracle
@pytest.mark.multiprocess
def test_keras_file_loads_and_saves_with_tensorflow_and_keras_blocked(tmp_path):
    pytest.importorskip("keras")
    from tests.keras_models import build

    k_model, x = build("bidirectional_concat_seq")
    k_model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    args = [tmp_path / name for name in ("model.keras", "x.npy", "y.npy", "again.keras")]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    y = np.load(tmp_path / "y.npy")
    assert np.max(np.abs(y - np.asarray(k_model(x)))) <= 1e-5
    import keras

    again = keras.models.load_model(tmp_path / "again.keras")
    assert np.max(np.abs(np.asarray(again(x)) - np.asarray(k_model(x)))) <= 1e-5
