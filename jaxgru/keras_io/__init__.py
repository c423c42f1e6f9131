"""Keras interop without TensorFlow: weight lists, configs and Keras files."""

from jaxgru.keras_io.errors import KerasFileError
from jaxgru.keras_io.files import load_keras, load_keras_weights, save_keras, save_keras_weights
from jaxgru.keras_io.weights import cudnn_gru_to_gru, from_keras_weights, to_keras_weights

__all__ = [
    "KerasFileError",
    "cudnn_gru_to_gru",
    "from_keras_weights",
    "load_keras",
    "load_keras_weights",
    "save_keras",
    "save_keras_weights",
    "to_keras_weights",
]
