"""`import jaxgru` never imports TensorFlow or Keras: proven in a subprocess that blocks them."""

import subprocess
import sys

SCRIPT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "torch"):
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, Block())
import jax, jaxgru
layer = jaxgru.GRU(4, return_sequences=True)
y = layer.apply(layer.init(jax.random.key(0), 3), jax.numpy.ones((2, 5, 3)))
w = jaxgru.to_keras_weights(layer, jaxgru.from_keras_weights(layer, [
    jax.numpy.ones((3, 12)), jax.numpy.ones((4, 12)), jax.numpy.zeros((2, 12))]))
assert y.shape == (2, 5, 4) and len(w) == 3
assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
print("ok")
"""


def test_import_jaxgru_does_not_import_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
