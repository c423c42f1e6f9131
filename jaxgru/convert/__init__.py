"""Converters at the edge: PyTorch, ONNX, Flax and Equinox GRUs to and from the Keras layout.

jaxgru holds every GRU in Keras's layout; each converter maps one other layout onto it,
exactly, and raises ``ConversionError`` (a ``ValueError``) naming what cannot be held.
The frameworks are optional and imported only when a converter is called.

>>> import jax, jaxgru
>>> from jaxgru import convert
>>> layer = jaxgru.GRU(4, reset_after=False, name="gru")
>>> params = layer.init(jax.random.key(0), input_dim=3)
>>> convert.to_flax(layer, params)  # doctest: +ELLIPSIS
Traceback (most recent call last):
jaxgru.errors.ConversionError: GRU 'gru' has reset_after=False, which flax.linen...
"""

from jaxgru.convert._common import ConversionError
from jaxgru.convert.equinox_cell import from_equinox, to_equinox
from jaxgru.convert.files import FORMATS, read_model, write_model
from jaxgru.convert.flax_linen import from_flax, to_flax
from jaxgru.convert.onnx_export import to_onnx
from jaxgru.convert.pytorch import from_torch, to_torch, to_torch_module, torch_gru_kwargs

__all__ = [
    "FORMATS",
    "ConversionError",
    "from_equinox",
    "from_flax",
    "from_torch",
    "read_model",
    "to_equinox",
    "to_flax",
    "to_onnx",
    "to_torch",
    "to_torch_module",
    "torch_gru_kwargs",
    "write_model",
]
