"""The layer protocol every jaxgru layer follows, and the registry of Keras class names.

A layer is a frozen, hashable object of hyperparameters (a dataclass in jaxgru); its
parameters are a plain dict it creates with ``init`` and reads in ``apply``. Nothing here is a
base class: a class that has the methods of ``Layer`` is a layer, and ``register_layer`` makes
Keras files that name it loadable (as Keras's ``custom_objects``).

The protocol, with shapes written batch axis first:

- ``param_shapes(input_dim) -> {name: shape}`` in Keras ``get_weights()`` order (nested for a
  wrapper such as ``Bidirectional``); ``input_dim`` is the size of the input's last axis.
- ``init(key, input_dim, dtype) -> params`` drawn with Keras's default initializers.
- ``apply(params, inputs, *, mask=None, training=False, rng=None, **call_args) -> outputs``.
  ``inputs`` is one array, or a list of arrays for a layer that takes several (a merge, an
  attention layer); ``mask`` has the same structure. ``outputs`` is one array, or a tuple for a
  layer with several (a GRU with ``return_state``). ``call_args`` are the extra arguments of
  the Keras call (a GRU's ``initial_state``). Callers pass everything after ``inputs`` by
  keyword; ``GRU.apply`` also takes ``initial_state`` third, positionally.
- ``compute_mask(inputs, mask) -> mask``: the mask the next layer sees, as Keras.
- ``output_shape(input_shape) -> shape``: one shape, or a list for several outputs.
- The Keras hooks: ``from_keras_config(config, context)`` (a classmethod) reads the layer's
  Keras 3 or tf_keras config, ``keras_config(context) -> dict`` writes its Keras 3 config (a
  nested layer may be given as a layer; the writer turns it into its entry); ``context`` is
  ``jaxgru.keras_io.config.KerasContext`` (the Keras-format helpers: activations, initializers,
  nested layers).

Optional parts, with the defaults this module's functions supply when a layer lacks them:

- ``params_from_shape = True``: ``param_shapes`` and ``init`` take the whole input shape
  (batch axis first) in place of ``input_dim``, for weights sized by more than the last axis
  (``PReLU``'s ``alpha``, ``BatchNormalization`` on ``axis=1``, a ``TimeDistributed``); a
  layer called on a list gets the list of shapes (``MultiHeadAttention``).
- ``non_trainable``: names of params that no gradient trains (``BatchNormalization``'s
  ``moving_mean`` and ``moving_variance``); they stay in params in Keras's weight order.
- ``call_arguments``: the extra keyword arguments a graph call may pass to ``apply`` (an
  attention layer's ``use_causal_mask``; a constant, or a tensor such as ``attention_mask``).
- ``call_tensors``: for a layer Keras calls on several tensor arguments rather than one list
  (``MultiHeadAttention``'s ``query, value, key``), their names in order; ``apply`` receives
  them as one list, their masks as the list ``mask``.
- ``clears_input_masks = True``: Keras 3 removes the masks of the tensors the layer is called
  on once it has run (``MultiHeadAttention`` does), so a later call reading their mask sees
  none; a graph from a Keras 3 model does the same (see ``jaxgru.graph``).
- ``keras_build_config(input_shape) -> dict``: the ``build_config`` a ``.keras`` file gives
  the layer, where Keras's is not ``{"input_shape": ...}`` (``MultiHeadAttention``'s).
- ``wrapped_input_shape(input_shape) -> shape``: for a wrapper whose layer sees another shape
  (``TimeDistributed``'s, one step's), that shape.
- ``input_ndim``: the rank it needs, e.g. 3 for ``(batch, time, features)`` (default: any).
- ``input_dtype``: ``"int32"`` for a layer that reads ids (default ``"float32"``).
- ``keras_weight_groups() -> (KerasVars, ...)``: where its arrays sit in Keras 3's HDF5 layout
  (default: ``vars`` holding every param in ``param_shapes`` order).
- ``from_keras_arrays(arrays, legacy) -> arrays``: converts an old weight layout as Keras
  does when it loads (a CuDNNGRU's, in a tf_keras file: ``legacy``), default unchanged.
- Non-trainable state, kept apart from params, so no optimizer sees it:
  ``init_state(batch_size, dtype) -> state or None`` and
  ``apply_stateful(params, inputs, state, *, mask, training, rng) -> (outputs, new_state)``.
  A stateful GRU's ``(batch, units)`` state is one; BatchNormalization's moving statistics
  are the next.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

from jaxgru._naming import snake_case
from jaxgru.errors import ConfigError


class KerasVars(NamedTuple):
    """One numbered array group of a layer in Keras 3's HDF5 layout.

    ``path`` is under ``layers/<key>/`` (``"vars"``, a GRU's ``"cell/vars"``); ``params_at``
    is where its arrays sit in the layer's params (``()``: the dict itself;
    ``("forward_layer",)``: a Bidirectional's forward GRU), in ``param_shapes`` order.
    """

    path: str = "vars"
    params_at: tuple[str, ...] = ()


@runtime_checkable
class Layer(Protocol):
    """What ``Sequential``, ``fit`` and ``keras_io`` need of a layer (see the module doc)."""

    name: str | None

    def param_shapes(self, input_dim: int) -> dict: ...

    def init(self, key: Any, input_dim: int, dtype: Any = ...) -> dict: ...

    def apply(self, params: dict, inputs: Any, *args: Any, **kwargs: Any) -> Any: ...

    def compute_mask(self, inputs: Any, mask: Any) -> Any: ...

    def output_shape(self, input_shape: Any) -> Any: ...


# -- optional parts, read through these functions so a layer may leave them out -------------


def input_ndim(layer: Layer) -> int | None:
    """The input rank the layer needs (``None``: any)."""
    return getattr(layer, "input_ndim", None)


def input_dtype(layer: Layer) -> str:
    """The dtype of the model input when this is the first layer."""
    return getattr(layer, "input_dtype", "float32")


def keras_weight_groups(layer: Layer) -> tuple[KerasVars, ...]:
    """Where the layer's arrays sit in Keras 3's HDF5 layout."""
    hook = getattr(layer, "keras_weight_groups", None)
    return tuple(hook()) if hook is not None else (KerasVars(),)


def from_keras_arrays(layer: Layer, arrays: list, legacy: bool = False) -> list:
    """The layer's stored arrays in its ``get_weights()`` layout (``legacy``: they come from a
    tf_keras 2.x file or model, whose loader converts old layouts)."""
    hook = getattr(layer, "from_keras_arrays", None)
    return list(arrays) if hook is None else list(hook(arrays, legacy))


def init_state(layer: Layer, batch_size: int, dtype: Any) -> Any:
    """The layer's non-trainable state for a batch of ``batch_size`` (``None``: it has none)."""
    hook = getattr(layer, "init_state", None)
    return None if hook is None else hook(batch_size, dtype)


def _shape_argument(layer: Layer, input_shape: Any) -> Any:
    """What ``param_shapes`` and ``init`` take: the whole shape (a list of shapes for a list
    input) with ``params_from_shape``, else the last axis of the (first) input."""
    if getattr(layer, "params_from_shape", False):
        if isinstance(input_shape, list):
            return [tuple(s) for s in input_shape]
        return tuple(input_shape)
    return (input_shape[0] if isinstance(input_shape, list) else input_shape)[-1]


def param_shapes(layer: Layer, input_shape: Any) -> dict:
    """``layer.param_shapes`` for an input of ``input_shape`` (batch axis first; a list of
    shapes for a layer called on a list)."""
    return layer.param_shapes(_shape_argument(layer, input_shape))


def init(layer: Layer, key: Any, input_shape: Any, dtype: Any) -> dict:
    """``layer.init`` for an input of ``input_shape`` (as ``param_shapes``)."""
    return layer.init(key, _shape_argument(layer, input_shape), dtype)


def call_arguments(layer: Layer) -> tuple[str, ...]:
    """The extra keyword arguments a graph call of ``layer`` may pass to its ``apply``."""
    return tuple(getattr(layer, "call_arguments", ()))


def call_tensors(layer: Layer) -> tuple[str, ...]:
    """The names of the tensor arguments Keras calls the layer on (``()``: one input, or one
    list)."""
    return tuple(getattr(layer, "call_tensors", ()))


def clears_input_masks(layer: Layer) -> bool:
    """Whether Keras 3 removes the masks of the layer's input tensors when it runs."""
    return bool(getattr(layer, "clears_input_masks", False))


def non_trainable(layer: Layer) -> tuple[str, ...]:
    """The names of the layer's params that no gradient trains (Keras's non-trainable
    weights)."""
    return tuple(getattr(layer, "non_trainable", ()))


def wrapped(layer: Layer) -> Layer | None:
    """The layer a wrapper (``Bidirectional``) holds in ``.layer``, as Keras names it."""
    inner = getattr(layer, "layer", None)
    return inner if isinstance(inner, Layer) else None


class Weightless:
    """The protocol's parameter methods for a layer without weights: no shapes, no params."""

    def param_shapes(self, input_dim: Any = None) -> dict:
        return {}

    def init(self, key: Any = None, input_dim: Any = None, dtype: Any = None) -> dict:
        return {}


# -- the registry ------------------------------------------------------------------------------

PROTOCOL_METHODS = ("param_shapes", "init", "apply", "compute_mask", "output_shape")

_CLASSES: dict[str, type] = {}  # Keras name -> jaxgru class
_NAMES: dict[type, str] = {}  # jaxgru class -> the Keras name it is written under


def register_layer(keras_name: str, layer_class: type | None = None) -> Any:
    """Make Keras files that name ``keras_name`` load as ``layer_class`` (and save back).

    ``keras_name`` is Keras's class name (``"GRU"``) or, for a layer registered in Keras with
    ``keras.saving.register_keras_serializable(package="p")``, its registered name
    (``"p>Scale"``). The first name registered for a class is the one it is saved under.
    Usable as a call or, without ``layer_class``, as a class decorator.

    Raises:
        ConfigError: ``layer_class`` lacks a method of the layer protocol or a Keras hook,
            or ``keras_name`` is already registered to another class.
    """
    if layer_class is None:
        return lambda cls: register_layer(keras_name, cls)
    if not isinstance(keras_name, str) or not keras_name:
        raise ConfigError(f"register_layer needs a Keras class name, got {keras_name!r}")
    needed = [*PROTOCOL_METHODS, "from_keras_config", "keras_config"]
    missing = [method for method in needed if not callable(getattr(layer_class, method, None))]
    if missing:
        raise ConfigError(
            f"register_layer({keras_name!r}, {getattr(layer_class, '__name__', layer_class)}): "
            f"the class lacks {missing}; a layer needs the methods of jaxgru.layer.Layer and "
            "the Keras hooks from_keras_config and keras_config"
        )
    held = _CLASSES.get(keras_name)
    if held is not None and held is not layer_class:
        raise ConfigError(
            f"Keras name {keras_name!r} is already registered to {held.__name__}; register "
            f"{layer_class.__name__} under another name"
        )
    _CLASSES[keras_name] = layer_class
    _NAMES.setdefault(layer_class, keras_name)
    return layer_class


def register_save_name(keras_name: str, layer_class: type) -> None:
    """Save ``layer_class`` under ``keras_name``, a name another class loads (``RNN`` loads
    ``RNN(GRUCell)`` and ``RNN(StackedRNNCells)``, two jaxgru classes)."""
    if keras_name not in _CLASSES:
        raise ConfigError(f"{keras_name!r} is not a registered Keras name")
    _NAMES.setdefault(layer_class, keras_name)


def layer_class(keras_name: str | None) -> type | None:
    """The class registered under ``keras_name``, or ``None``."""
    return _CLASSES.get(keras_name) if keras_name else None


def registered_names() -> tuple[str, ...]:
    """Every registered Keras name, built-in layers first."""
    return tuple(_CLASSES)


def registered_layers() -> dict[str, type]:
    """``{name it is saved under: class}`` for every registered class (no aliases such as
    ``CuDNNGRU``); the ``type`` names of a config's ``[model]`` layers."""
    found: dict[str, type] = {}
    for cls, name in _NAMES.items():
        found.setdefault(name, cls)  # RNN(GRUCell) keeps "RNN"; the stacked form shares it
    return found


def keras_name(layer: Layer) -> str:
    """The Keras name a layer is saved under (``"GRU"``, ``"p>Scale"``).

    Raises:
        ConfigError: its class was never registered.
    """
    name = _NAMES.get(type(layer))
    if name is None:
        raise ConfigError(
            f"{type(layer).__name__} is not registered under a Keras class name; call "
            f"jaxgru.register_layer('KerasClassName', {type(layer).__name__}) first"
        )
    return name


def keras_class_name(layer: Layer) -> str:
    """The Keras class name (``"Scale"`` for ``"p>Scale"``), or the class's own name."""
    name = _NAMES.get(type(layer), type(layer).__name__)
    return name.rsplit(">", 1)[-1]


def default_name(layer: Layer) -> str:
    """The snake-case stem of Keras's automatic layer names and HDF5 keys (``gru``)."""
    return snake_case(keras_class_name(layer))
