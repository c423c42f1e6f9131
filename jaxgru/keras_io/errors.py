"""The one error class of Keras I/O (defined with the others in ``jaxgru.errors``)."""

from jaxgru.errors import KerasFileError

__all__ = ["KerasFileError"]
