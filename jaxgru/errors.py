"""The user errors of jaxgru: one family, so a caller (and the CLI) can tell them from bugs.

Every class is a ``ValueError`` too, so code that caught ``ValueError`` keeps working. The
message is one line naming the problem and the fix; the ``jaxgru`` command prints it and exits
with status 2. Anything raised that is not a ``JaxgruError`` (or an ``OSError`` from the file
system) is a bug in jaxgru: the command shows its traceback and says so.

>>> issubclass(KerasFileError, JaxgruError) and issubclass(JaxgruError, ValueError)
True
"""

from __future__ import annotations


class JaxgruError(ValueError):
    """A user error: bad input, a bad setting, or a file jaxgru cannot use as it is."""


class ConfigError(JaxgruError):
    """A setting is invalid (a config key, an override, a layer or ``fit`` argument); the
    message names the key and what is allowed."""


class DataError(JaxgruError):
    """Data cannot be used: a file or array that cannot be read, or whose shape, dtype or
    values do not fit the model."""


class KerasFileError(JaxgruError):
    """A Keras file or model jaxgru cannot read or write; the message names the problem."""


class ConversionError(JaxgruError):
    """A model or file that cannot be converted exactly; the message says why and what to do."""


class CheckpointError(JaxgruError):
    """A checkpoint cannot be read, or does not fit the run it is restored into."""


class UnreadableCheckpoint(CheckpointError):
    """The file is not a complete checkpoint (damaged, truncated, not an .npz)."""


class RunError(JaxgruError):
    """A run directory cannot be created, resumed or read."""


class InputError(DataError):
    """``--input`` cannot be read or does not fit the model."""
