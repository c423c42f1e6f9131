"""The one error class of Keras I/O."""


class KerasFileError(ValueError):
    """A Keras file or model jaxgru cannot read or write; the message names the problem."""
