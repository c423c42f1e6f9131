"""Keras interop without TensorFlow: get_weights() lists <-> params dicts."""

from jaxgru.keras_io.weights import from_keras_weights, to_keras_weights

__all__ = ["from_keras_weights", "to_keras_weights"]
