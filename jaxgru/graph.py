"""``Model``: any directed acyclic graph of layers, built the way Keras's functional API builds.

>>> import jax, jax.numpy as jnp, jaxgru
>>> encoder_in = jaxgru.Input((None, 3), name="encoder_in")
>>> decoder_in = jaxgru.Input((None, 4), name="decoder_in")
>>> _, h = jaxgru.GRU(5, return_state=True, name="encoder")(encoder_in)
>>> y = jaxgru.GRU(5, return_sequences=True, name="decoder")(decoder_in, initial_state=h)
>>> model = jaxgru.Model([encoder_in, decoder_in], jaxgru.Dense(2, name="head")(y))
>>> params = model.init(jax.random.key(0))
>>> list(params)
['encoder', 'decoder', 'head']
>>> model.apply(params, [jnp.ones((2, 6, 3)), jnp.ones((2, 7, 4))]).shape
(2, 7, 2)

Calling a layer on a ``SymbolicTensor`` (from ``Input`` or an earlier call) records a call;
``Model(inputs, outputs)`` walks back from the outputs and keeps the graph as plain values:
``inputs`` (``InputSpec``), ``layers`` (each once, however often it is called: a layer called
twice shares its params), ``calls`` (``Call``, in an order where every call's inputs come
first) and ``outputs`` (``TensorRef``, Keras's ``[layer name, call index, output index]``).

Masks flow along the edges as Keras propagates them (each layer's ``compute_mask``); a call's
own ``mask=`` argument replaces the propagated mask. ``training`` written in a call
(``Dropout(0.5)(x, training=True)``, Monte Carlo dropout) is used as Keras 3 uses it: when the
model is applied with ``training=None`` (Keras's ``model(x)``); ``training=False`` or ``True``
given to ``apply`` (Keras's ``predict`` and ``fit``) overrides it. Keras 3 also passes a mask on
only to a call with one tensor argument: a GRU given ``initial_state`` does not see its input's
mask unless the call says ``mask=``. A model read from a tf_keras 2.x file keeps tf_keras's
rules instead (``legacy``): the written ``training`` always wins, and a GRU given
``initial_state`` keeps its input's mask.

Keras 3's ``MultiHeadAttention`` also removes the masks of the tensors it is called on once
it has run (they ride on the tensors), so a later attention call on the same tensor, or on
one whose mask comes from it, sees none, while a GRU's recorded ``mask=`` is untouched. The
graph does the same, running the calls in Keras 3's order (``keras_call_order``); a dropout
or noise layer without noise (at inference) hands on the very tensor in Keras, so clearing
either clears both, as here (``hands_on_its_input``). tf_keras's layer leaves the masks in place.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxgru import layer as protocol
from jaxgru._naming import auto_name
from jaxgru.errors import ConfigError, DataError
from jaxgru.layer import Layer
from jaxgru.model import (
    Forward,
    _count,
    _named_layers,
    activity_of,
    call_extras,
    moving_updates,
    replaced_execution,
    replaced_gru_fields,
    summary_table,
    total,
)


class TensorRef(NamedTuple):
    """One tensor of the graph: output ``index`` of call number ``call`` of layer ``layer``
    (an input's name for a model input), as Keras's ``keras_history``."""

    layer: str
    call: int = 0
    index: int = 0


class InputSpec(NamedTuple):
    """A model input: one sample's ``shape`` (no batch axis; ``None`` for any size)."""

    name: str
    shape: tuple
    dtype: str = "float32"
    batch_size: int | None = None


class Call(NamedTuple):
    """One call of a layer in the graph.

    ``inputs``: a ``TensorRef`` or a tuple of them (a merge's list). ``arguments``: the call's
    keyword arguments as sorted ``(name, value)`` pairs, each value a ``TensorRef``, a tuple of
    them (a GRU's ``initial_state``) or a constant (``training=True``).
    """

    layer: str
    inputs: Any
    arguments: tuple = ()

    @property
    def kwargs(self) -> dict:
        return dict(self.arguments)


# The call arguments a graph honours; anything else is refused when the call is recorded.
CALL_ARGUMENTS = ("initial_state", "mask", "training")

_serial = itertools.count()


class SymbolicTensor:
    """What ``Input`` and a layer called on symbolic tensors return: a shape (batch axis
    first, ``None`` for any size), a dtype, and the call that made it."""

    def __init__(self, shape: tuple, dtype: str, origin: _Origin, index: int = 0) -> None:
        self.shape, self.dtype, self.origin, self.index = tuple(shape), dtype, origin, index

    def __repr__(self) -> str:
        return f"SymbolicTensor(shape={self.shape}, dtype={self.dtype})"

    def __iter__(self):
        raise ConfigError(
            "a symbolic tensor cannot be unpacked; a layer with several outputs (return_state"
            "=True) returns a list of them"
        )


@dataclass(eq=False)
class _Origin:
    """The call (or input) that made a symbolic tensor, in the order calls were made."""

    layer: Any  # a layer, or an InputSpec for a model input
    inputs: Any = None
    arguments: dict = dataclasses.field(default_factory=dict)
    serial: int = dataclasses.field(default_factory=lambda: next(_serial))


def Input(
    shape: tuple, name: str | None = None, dtype: str = "float32", batch_size: int | None = None
) -> SymbolicTensor:
    """A model input, as ``keras.Input``: ``shape`` is one sample's, e.g. ``(None, 3)`` for
    sequences of any length with 3 features, or ``(None,)`` with ``dtype="int32"`` for ids."""
    if isinstance(shape, int):
        shape = (shape,)
    spec = InputSpec(name, tuple(shape), str(dtype), batch_size)
    return SymbolicTensor((batch_size, *spec.shape), spec.dtype, _Origin(spec))


def _shapes(value: Any) -> Any:
    """The shapes of a (list of) symbolic tensor(s)."""
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value]
    return value.shape


def _check_symbolic(value: Any, what: str) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, SymbolicTensor):
            raise ConfigError(
                f"{what} must be symbolic tensors (from jaxgru.Input or an earlier layer call), "
                f"got {type(item).__name__}; to compute on arrays, use layer.apply(params, x)"
            )


def output_shapes(layer: Layer, input_shape: Any) -> list:
    """Every output's shape of ``layer`` on ``input_shape`` (several for ``return_state``)."""
    shape = layer.output_shape(input_shape)
    return list(shape) if isinstance(shape, list) else [shape]


def output_masks(layer: Layer, inputs: Any, mask: Any, count: int) -> list:
    """The mask of each of the ``count`` outputs, as Keras: a state output has none, both
    halves of a ``merge_mode=None`` Bidirectional have the sequence's."""
    masks = layer.compute_mask(inputs, mask)
    if isinstance(masks, list):
        return masks
    pair = 2 if getattr(layer, "merge_mode", "concat") is None else 1
    return [masks] * min(pair, count) + [None] * (count - min(pair, count))


def call_layer(layer: Layer, inputs: Any, **arguments: Any) -> Any:
    """Record ``layer(inputs, **arguments)`` on symbolic tensors: what ``layer(x)`` does for
    the built-in layers (``layer.__call__``); use it for a layer class of your own.

    Returns:
        A ``SymbolicTensor``, or a list of them for a layer with several outputs.
    """
    _check_symbolic(inputs, f"the inputs of {type(layer).__name__} {layer.name!r}")
    allowed = (*CALL_ARGUMENTS, *protocol.call_arguments(layer))
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{type(layer).__name__} {layer.name!r} called with {unknown}; a graph call takes "
            f"the inputs and {list(allowed)}"
        )
    for key in ("initial_state", "mask"):
        if arguments.get(key) is not None:
            _check_symbolic(arguments[key], f"{key}")
    for key in protocol.call_arguments(layer):
        value = arguments.get(key)
        if value is not None and not isinstance(value, (bool, SymbolicTensor)):
            raise ConfigError(
                f"{type(layer).__name__} {layer.name!r}: {key} must be True/False or a symbolic "
                f"tensor, got {type(value).__name__}"
            )
    if arguments.get("training") not in (None, True, False):
        raise ConfigError(f"training must be True, False or None, got {arguments['training']!r}")
    shape = _shapes(inputs)
    try:
        shapes = output_shapes(layer, shape)
    except (ValueError, TypeError, IndexError) as error:
        raise ConfigError(
            f"{type(layer).__name__} {layer.name!r} cannot take inputs of shape {shape}: {error}"
        ) from None
    origin = _Origin(layer, inputs, {k: v for k, v in arguments.items() if v is not None})
    tensors = [SymbolicTensor(s, "float32", origin, i) for i, s in enumerate(shapes)]
    return tensors[0] if len(tensors) == 1 else tensors


class GraphCallable:
    """Gives a layer class Keras's ``layer(x)`` on symbolic tensors (``call_layer``)."""

    def __call__(self, inputs: Any, **arguments: Any) -> Any:
        return call_layer(self, inputs, **arguments)


def _is_group(value: Any) -> bool:
    """A list or tuple of tensors (a ``TensorRef`` is a tuple too, but one tensor)."""
    return isinstance(value, (list, tuple)) and not isinstance(value, TensorRef)


def _flat(value: Any) -> list:
    if _is_group(value):
        return [leaf for item in value for leaf in _flat(item)]
    return [] if value is None else [value]


def _map(value: Any, fn: Any) -> Any:
    """``fn`` applied to every leaf of a (nested) list/tuple, giving tuples."""
    if _is_group(value):
        return tuple(_map(item, fn) for item in value)
    return fn(value)


def _resolve(structure: Any, get: Any) -> Any:
    """The values (``get(ref)``) of a call's input structure: one, or a list (as a layer
    receives them)."""
    value = _map(structure, get)
    return list(value) if _is_group(structure) else value


def call_sources(call: Call) -> list[TensorRef]:
    """Every tensor a call reads: its inputs, then those in its arguments (a mask, states)."""
    found = _flat(call.inputs) + _flat([v for k, v in call.arguments if k != "training"])
    return [ref for ref in found if isinstance(ref, TensorRef)]


def _trace(inputs: list[SymbolicTensor], outputs: list[SymbolicTensor]):
    """Walk back from ``outputs``: the origins in Keras's depth-first order."""
    order: list[_Origin] = []
    finished: set[int] = set()
    progress: set[int] = set()

    def visit(tensor: SymbolicTensor) -> None:
        origin = tensor.origin
        if id(origin) in finished:
            return
        if id(origin) in progress:
            raise ConfigError("the graph has a cycle")
        progress.add(id(origin))
        if not isinstance(origin.layer, InputSpec):
            for parent in _flat(origin.inputs) + _flat(list(origin.arguments.values())):
                if isinstance(parent, SymbolicTensor):
                    visit(parent)
        progress.discard(id(origin))
        finished.add(id(origin))
        order.append(origin)

    for tensor in outputs:
        visit(tensor)
    given = {id(t.origin) for t in inputs}
    needed = [o for o in order if isinstance(o.layer, InputSpec) and id(o) not in given]
    if needed:
        raise ConfigError(
            f"the outputs depend on {len(needed)} input(s) not in Model(inputs=...): "
            f"{[o.layer.name or 'unnamed' for o in needed]}"
        )
    return order


def keras_order(calls: tuple[Call, ...], outputs: tuple[TensorRef, ...], inputs: tuple) -> list:
    """The layers' names in the order Keras 3 keeps a functional model's layers (its HDF5
    keys ``gru``, ``gru_1`` are numbered in it): by depth from the outputs, deepest first, ties
    in depth-first order of first visit from the outputs."""
    by_key = {(c.layer, i): c for c, i in numbered_calls(calls)}
    order: list[tuple] = []  # call keys, from the inputs to the outputs
    visit_index: dict[str, int] = {}
    done: set = set()

    def visit(ref: TensorRef) -> None:
        key = (ref.layer, ref.call)
        if key in done:
            return
        visit_index.setdefault(ref.layer, len(visit_index))
        call = by_key.get(key)
        for parent in call_sources(call) if call is not None else []:
            visit(parent)
        done.add(key)
        order.append(key)

    for ref in outputs:
        visit(ref)
    depth: dict[tuple, int] = {}
    layer_depth: dict[str, int] = {}
    for key in reversed(order):
        d = max(depth.setdefault(key, 0), layer_depth.get(key[0], 0))
        layer_depth[key[0]] = depth[key] = d
        call = by_key.get(key)
        for parent in call_sources(call) if call is not None else []:
            pkey = (parent.layer, parent.call)
            depth[pkey] = max(d + 1, depth.get(pkey, 0))
    for spec in inputs:  # inputs no output depends on
        layer_depth.setdefault(spec.name, 0)
        visit_index.setdefault(spec.name, -1)
    return sorted(layer_depth, key=lambda name: (-layer_depth[name], visit_index[name]))


def keras_call_order(calls: tuple[Call, ...], outputs: tuple[TensorRef, ...]) -> list[int]:
    """The positions of ``calls`` in the order Keras 3 runs a functional model's nodes
    (``Function._run_through_graph``): by node depth from the outputs, deepest first; ties
    in the order ``map_graph`` first meets the nodes, walking back from the outputs."""
    position = {(c.layer, i): pos for pos, (c, i) in enumerate(numbered_calls(calls))}

    def parents(key: tuple) -> list[tuple]:
        found = [(r.layer, r.call) for r in call_sources(calls[position[key]])]
        return [p for p in found if p in position]  # a model input is no call

    post_order: list[tuple] = []  # Keras's nodes_in_decreasing_depth
    finished: set = set()

    def visit(key: tuple) -> None:
        if key in finished or key not in position:
            return
        finished.add(key)
        for parent in parents(key):
            visit(parent)
        post_order.append(key)

    for ref in outputs:
        visit((ref.layer, ref.call))
    depth: dict[tuple, int] = {}  # insertion order is Keras's order within a depth
    layer_depth: dict[str, int] = {}
    for key in reversed(post_order):
        d = max(depth.setdefault(key, 0), layer_depth.get(key[0], 0))
        layer_depth[key[0]] = depth[key] = d
        for parent in parents(key):
            depth[parent] = max(d + 1, depth.get(parent, 0))
    ranked = sorted(enumerate(depth), key=lambda item: (-depth[item[1]], item[0]))
    return [position[key] for _, key in ranked]


def numbered_calls(calls: Any):
    """``(call, its index among its layer's calls)`` for every call."""
    seen: dict[str, int] = {}
    for call in calls:
        seen[call.layer] = seen.get(call.layer, -1) + 1
        yield call, seen[call.layer]


class _Run(NamedTuple):
    """One run of a ``Model``'s calls: every tensor's value, ``mask_of(ref)`` its Keras mask,
    the carried states after it, each layer's ``(inputs, mask)`` at its first call, the
    activity penalties and the non-trainable weights the calls moved."""

    values: dict
    mask_of: Any
    states: dict
    first_inputs: dict
    penalties: list
    updates: dict


@dataclass(frozen=True)
class Model:
    """A graph of layers; params keyed by layer name, as Keras names them.

    Build it as Keras's functional API does: ``Model(inputs, outputs, name=...)`` with
    ``inputs`` and ``outputs`` symbolic tensors (one, or a list). The other fields hold the
    graph once built (see the module doc); ``jaxgru.load_keras`` fills them from a file.

    Args:
        inputs: ``Input`` tensors (or ``InputSpec`` values).
        outputs: symbolic tensors (or ``TensorRef`` values); one, or a list.
        name: the model's name.
        legacy: follow tf_keras 2.x's rules for written ``training`` and for masks next to
            ``initial_state`` (see the module doc); Keras 3's are the default.
    """

    inputs: Any
    outputs: Any
    name: str = "model"
    layers: tuple | None = None
    calls: tuple | None = None
    legacy: bool = False

    def __post_init__(self) -> None:
        if self.layers is None:
            self._build_from_symbols()
        self._check()

    # -- building --------------------------------------------------------------------------

    def _build_from_symbols(self) -> None:
        single = not isinstance(self.outputs, (list, tuple))
        inputs = list(self.inputs) if isinstance(self.inputs, (list, tuple)) else [self.inputs]
        outputs = [self.outputs] if single else list(self.outputs)
        _check_symbolic(inputs, "Model inputs")
        _check_symbolic(outputs, "Model outputs")
        for tensor in inputs:
            if not isinstance(tensor.origin.layer, InputSpec):
                raise ConfigError("Model inputs must be tensors made by jaxgru.Input")
        # The calls in the order they were made (every input of a call was made before it).
        made = sorted((o for o in _trace(inputs, outputs) if not isinstance(o.layer, InputSpec)),
                      key=lambda o: o.serial)  # fmt: skip
        unique: dict[int, Any] = {}
        for origin in made:
            unique.setdefault(id(origin.layer), origin.layer)
        named = _named_layers(tuple(unique.values()))
        layer_of = dict(zip(unique, named))
        taken = {layer.name for layer in named}
        input_names = {}
        for tensor in inputs:
            spec = tensor.origin.layer
            name = spec.name or auto_name("input_layer", taken | set(input_names.values()))
            input_names[id(tensor.origin)] = name
        # Call indices per layer follow the order the calls were made, as Keras numbers nodes.
        index: dict[int, int] = {}
        per_layer: dict[int, int] = {}
        for origin in made:
            index[id(origin)] = per_layer.get(id(origin.layer), 0)
            per_layer[id(origin.layer)] = index[id(origin)] + 1

        def ref(tensor: SymbolicTensor) -> TensorRef:
            origin = tensor.origin
            if isinstance(origin.layer, InputSpec):  # _trace checked it is one of the inputs
                return TensorRef(input_names[id(origin)])
            return TensorRef(layer_of[id(origin.layer)].name, index[id(origin)], tensor.index)

        def _ref_or_constant(value: Any) -> Any:
            return ref(value) if isinstance(value, SymbolicTensor) else value

        calls = []
        for origin in made:
            args = tuple(sorted((k, _map(v, _ref_or_constant)) for k, v in
                                origin.arguments.items()))  # fmt: skip
            calls.append(Call(layer_of[id(origin.layer)].name, _map(origin.inputs, ref), args))
        specs = tuple(InputSpec(input_names[id(t.origin)], *t.origin.layer[1:]) for t in inputs)
        refs = tuple(ref(t) for t in outputs)
        # Layers in Keras 3's order, which numbers their HDF5 keys (gru, gru_1, ...).
        rank = {name: i for i, name in enumerate(keras_order(tuple(calls), refs, specs))}
        named = sorted(named, key=lambda item: rank[item.name])
        object.__setattr__(self, "inputs", specs)
        object.__setattr__(self, "outputs", refs[0] if single else refs)
        object.__setattr__(self, "layers", tuple(named))
        object.__setattr__(self, "calls", tuple(calls))

    def _check(self) -> None:
        """The graph's parts fit together (every name known, every call's inputs earlier)."""
        object.__setattr__(self, "inputs", tuple(InputSpec(*s) for s in self.inputs))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "calls", tuple(self.calls))
        names = [s.name for s in self.inputs] + [layer.name for layer in self.layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"Model {self.name!r}: names must be unique, got {duplicates}")
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise ConfigError(f"Model cannot hold {type(layer).__name__}: not a jaxgru layer")
        if not self.inputs:
            raise ConfigError(f"Model {self.name!r} needs at least one input")
        if not self.output_refs:
            raise ConfigError(f"Model {self.name!r} needs at least one output")
        stateful = {}
        for call in self.calls:
            if protocol.init_state(self.layer(call.layer), 1, jnp.float32) is not None:
                stateful[call.layer] = stateful.get(call.layer, 0) + 1
        twice = sorted(name for name, n in stateful.items() if n > 1)
        if twice:
            raise ConfigError(
                f"stateful layers {twice} are called more than once; a stateful layer carries "
                "one state, so call it once"
            )
        self.tensor_shapes()  # every reference resolves and every shape fits

    # -- the graph's facts -----------------------------------------------------------------

    @property
    def output_refs(self) -> tuple[TensorRef, ...]:
        if isinstance(self.outputs, TensorRef):
            return (self.outputs,)
        return tuple(TensorRef(*r) for r in self.outputs)

    @property
    def single_output(self) -> bool:
        return isinstance(self.outputs, TensorRef)

    @property
    def input_shape(self) -> tuple:
        """The one input's sample shape (``Sequential``'s ``input_shape``)."""
        if len(self.inputs) != 1:
            raise DataError(
                f"Model {self.name!r} has {len(self.inputs)} inputs "
                f"{[s.name for s in self.inputs]}; give each its array (a list or a dict)"
            )
        return self.inputs[0].shape

    @property
    def batch_size(self) -> int | None:
        sizes = {s.batch_size for s in self.inputs}
        return sizes.pop() if len(sizes) == 1 else None

    def layer(self, name: str) -> Layer:
        """The layer called ``name``."""
        for item in self.layers:
            if item.name == name:
                return item
        raise ConfigError(f"Model {self.name!r} has no layer {name!r}")

    def call_indices(self):
        """``(call, its index among its layer's calls)``, in graph order."""
        return numbered_calls(self.calls)

    def tensor_shapes(self) -> dict[TensorRef, tuple]:
        """Every tensor's shape, batch axis first, as Keras infers them."""
        shapes: dict[TensorRef, tuple] = {
            TensorRef(s.name): (s.batch_size, *s.shape) for s in self.inputs
        }
        layers = {item.name: item for item in self.layers}

        def shape_of(ref: Any) -> Any:
            if ref not in shapes:
                raise ConfigError(
                    f"Model {self.name!r}: {tuple(ref)} is used before it is computed or does "
                    "not exist"
                )
            return shapes[ref]

        for call, i in self.call_indices():
            if call.layer not in layers:
                raise ConfigError(f"Model {self.name!r} calls an unknown layer {call.layer!r}")
            layer = layers[call.layer]
            in_shape = _resolve(call.inputs, shape_of)
            for ref in call_sources(call):
                shape_of(ref)  # names a missing tensor
            ndim = protocol.input_ndim(layer)
            if ndim is not None and not isinstance(in_shape, list) and len(in_shape) != ndim:
                raise ConfigError(
                    f"layer {layer.name!r} ({type(layer).__name__}) needs rank-{ndim} input, "
                    f"but receives shape {in_shape}"
                )
            try:
                out = output_shapes(layer, in_shape)
            except (ValueError, TypeError, IndexError) as error:
                raise ConfigError(
                    f"layer {layer.name!r} ({type(layer).__name__}) cannot take inputs of "
                    f"shape {in_shape}: {error}"
                ) from None
            for j, shape in enumerate(out):
                shapes[TensorRef(call.layer, i, j)] = tuple(shape)
        for ref in self.output_refs:
            shape_of(ref)
        return shapes

    def layer_input_shapes(self) -> list:
        """Each layer's input shape at its first call (a list for a merge), in ``layers``
        order."""
        shapes, first = self.tensor_shapes(), {}
        for call in self.calls:
            if call.layer not in first:
                first[call.layer] = _resolve(call.inputs, shapes.__getitem__)
        return [first[layer.name] for layer in self.layers]

    def output_shape(self) -> Any:
        """The output's shape (a list of shapes for several outputs), batch axis first."""
        shapes = self.tensor_shapes()
        found = [shapes[ref] for ref in self.output_refs]
        return found[0] if self.single_output else found

    def param_shapes(self) -> dict[str, dict]:
        """``{layer name: {param name: shape}}`` for the layers that have parameters."""
        shapes = {}
        for layer, in_shape in zip(self.layers, self.layer_input_shapes()):
            layer_shapes = protocol.param_shapes(layer, in_shape)
            if layer_shapes:
                shapes[layer.name] = layer_shapes
        return shapes

    def count_params(self) -> int:
        """The number of parameters, as Keras's ``model.count_params()``."""
        return _count(self.param_shapes())

    # -- running -----------------------------------------------------------------------------

    def init(self, key: jax.Array, dtype: Any = jnp.float32) -> dict[str, dict]:
        """Draw every layer's parameters with its Keras default initializers (once for a
        layer called several times)."""
        keys = jax.random.split(key, len(self.layers))
        params = {}
        for k, layer, in_shape in zip(keys, self.layers, self.layer_input_shapes()):
            layer_params = protocol.init(layer, k, in_shape, dtype)
            if layer_params:
                params[layer.name] = layer_params
        return params

    def _input_values(self, x: Any) -> dict[TensorRef, jax.Array]:
        names = [s.name for s in self.inputs]
        if isinstance(x, dict):
            missing, extra = sorted(set(names) - set(x)), sorted(set(x) - set(names))
            if missing or extra:
                raise DataError(
                    f"Model {self.name!r} takes inputs {names}; missing {missing}, unknown {extra}"
                )
            values = [x[n] for n in names]
        elif isinstance(x, (list, tuple)):
            values = list(x)
        else:
            values = [x]
        if len(values) != len(names):
            raise DataError(
                f"Model {self.name!r} takes {len(names)} inputs {names}, got {len(values)}"
            )
        out = {}
        for spec, value in zip(self.inputs, values):
            value = jnp.asarray(value)
            if value.ndim != len(spec.shape) + 1 or any(
                want is not None and want != got for want, got in zip(spec.shape, value.shape[1:])
            ):
                raise DataError(
                    f"Model {self.name!r} input {spec.name!r} has shape (batch, "
                    f"{', '.join(map(str, spec.shape))}), got {value.shape}"
                )
            out[TensorRef(spec.name)] = value
        return out

    def apply(
        self,
        params: dict[str, dict],
        x: Any,
        training: bool | None = None,
        rng: jax.Array | None = None,
        states: dict[str, Any] | None = None,
    ) -> Any:
        """Run the graph.

        Args:
            params: ``{layer name: layer params}``.
            x: the input array (one input), or a list in ``inputs`` order, or a dict by input
                name.
            training: ``True`` (Keras's ``fit``), ``False`` (``predict``) or ``None`` (Keras's
                ``model(x)``: each call's written ``training`` applies; otherwise inference).
            rng: PRNG key, split across the calls; needed where dropout is active.
            states: ``{name: state}`` for the layers that carry one (``initial_states``).

        Returns:
            The output, or a list of outputs in ``outputs`` order; with ``states``, the pair
            ``(outputs, new states)``.
        """
        run = self.forward(params, x, training, rng, states)
        return run.outputs if states is None else (run.outputs, run.states)

    def forward(
        self,
        params: dict[str, dict],
        x: Any,
        training: bool | None = None,
        rng: jax.Array | None = None,
        states: dict[str, Any] | None = None,
        rows: jax.Array | None = None,
    ) -> Forward:
        """``apply``, with the outputs' Keras masks and the activity penalty of every call of
        a layer with an ``activity_regularizer`` (``rows``: as ``Sequential.forward``)."""
        run = self._run(params, x, training, rng, states, rows)
        result = [run.values[ref] for ref in self.output_refs]
        masks = [run.mask_of(ref) for ref in self.output_refs]
        if self.single_output:
            result, masks = result[0], masks[0]
        return Forward(result, masks, run.states, total(run.penalties), run.updates)

    def _run(self, params, x, training, rng, states, rows=None) -> _Run:
        """Every call in order."""
        first_inputs: dict[str, tuple] = {}
        values = self._input_values(x)
        masks = dict.fromkeys(values)
        missing = sorted(set(self.param_shapes()) - set(params))
        if missing:
            raise DataError(f"Model {self.name!r}: params has no entry for layers {missing}")
        keys = [None] * len(self.calls) if rng is None else jax.random.split(rng, len(self.calls))
        layers = {item.name: item for item in self.layers}
        new_states = {}
        numbered = list(self.call_indices())
        order = range(len(numbered)) if self.legacy else self.execution_order()
        same_tensor: dict[TensorRef, TensorRef] = {}  # an unchanged input handed on
        penalties: list = []  # the activity regularizers' penalties
        updates: dict = {}  # the non-trainable weights the calls move

        def mask_of(ref: TensorRef) -> Any:
            return masks[same_tensor.get(ref, ref)]

        for position in order:
            (call, i), key = numbered[position], keys[position]
            layer = layers[call.layer]
            inputs = _resolve(call.inputs, values.__getitem__)
            arguments = call.kwargs
            written = arguments.pop("training", None)
            if "mask" in arguments:
                mask = _resolve(arguments.pop("mask"), values.__getitem__)
            elif "initial_state" in arguments and not self.legacy:
                mask = None  # Keras 3 passes a mask on only to a call with one tensor argument
            else:
                mask = _resolve(call.inputs, mask_of)
            arguments = {k: _resolve(v, lambda r: values[r] if isinstance(r, TensorRef) else r)
                         for k, v in arguments.items()}  # fmt: skip
            if i == 0:
                first_inputs[layer.name] = (inputs, mask)
            on = self._training(written, training)
            if on and key is None and _uses_rng(layer):
                raise DataError(
                    f"Model {self.name!r}: layer {layer.name!r} runs in training mode "
                    f"({'written in the graph' if written else 'training=True'}) and needs "
                    "random numbers; pass rng=jax.random.key(...)"
                )
            layer_params = params.get(layer.name, {})
            if states is not None and layer.name in states:
                y, new_states[layer.name] = layer.apply_stateful(
                    layer_params, inputs, states[layer.name], mask=mask, training=on, rng=key
                )
            else:
                y = layer.apply(layer_params, inputs, mask=mask, training=on, rng=key,
                                **arguments, **call_extras(layer, on, rows))  # fmt: skip
            moved = moving_updates(layer, layer_params, inputs, mask, on, rows)
            if moved:
                updates[layer.name] = moved
            outputs = list(y) if isinstance(y, (tuple, list)) else [y]
            penalty = activity_of(layer, y, rows)
            if penalty is not None:
                penalties.append(penalty)
            for j, (value, out_mask) in enumerate(
                zip(outputs, output_masks(layer, inputs, mask, len(outputs)))
            ):
                out = TensorRef(call.layer, i, j)
                values[out] = value
                if (value is inputs and isinstance(call.inputs, TensorRef)
                        and getattr(layer, "hands_on_its_input", False)):  # fmt: skip
                    same_tensor[out] = same_tensor.get(call.inputs, call.inputs)
                else:
                    masks[out] = out_mask
            if not self.legacy and protocol.clears_input_masks(layer):
                for ref in _flat(call.inputs):
                    masks[same_tensor.get(ref, ref)] = None
        return _Run(values, mask_of, new_states, first_inputs, penalties, updates)

    def execution_order(self) -> list[int]:
        """The positions of ``calls`` in the order ``apply`` runs them (Keras 3's)."""
        return keras_call_order(self.calls, self.output_refs)

    def layer_input(self, params: dict, x: Any, name: str) -> tuple[Any, Any]:
        """What layer ``name`` receives at its first call, at inference: ``(input, mask)``."""
        self.layer(name)  # names an unknown layer
        return self._run(params, x, False, None, None).first_inputs[name]

    def _training(self, written: bool | None, given: bool | None) -> bool:
        if written is not None and (given is None or self.legacy):
            return bool(written)
        return bool(given)

    def initial_states(self, batch_size: int, dtype: Any = jnp.float32) -> dict[str, Any]:
        """The state every layer that carries one starts from (a ``stateful`` GRU's zeros)."""
        states = {item.name: protocol.init_state(item, batch_size, dtype) for item in self.layers}
        return {name: state for name, state in states.items() if state is not None}

    # -- showing -----------------------------------------------------------------------------

    def summary(self) -> str:
        """A table of layers, output shapes, parameter counts and inputs, like Keras's summary
        of a functional model."""
        shapes = self.tensor_shapes()
        param_shapes = self.param_shapes()
        rows = [("Layer (type)", "Output Shape", "Param #", "Connected to")]
        for spec in self.inputs:
            rows.append((f"{spec.name} (InputLayer)", str(shapes[TensorRef(spec.name)]), "0", "-"))
        for call, i in self.call_indices():
            layer = self.layer(call.layer)
            outs = [shape for ref, shape in shapes.items() if ref[:2] == (call.layer, i)]
            count = _count(param_shapes.get(layer.name, {})) if i == 0 else 0
            sources = call_sources(call)
            rows.append((
                f"{layer.name} ({type(layer).__name__})",
                str(outs[0] if len(outs) == 1 else outs),
                f"{count:,}",
                ", ".join(f"{r.layer}[{r.call}][{r.index}]" for r in sources),
            ))  # fmt: skip
        return summary_table(self.name, rows, self.count_params())

    def with_gru_fields(self, **changes: Any) -> Model:
        """The same graph with ``changes`` applied to every GRU (see ``Sequential``)."""
        return dataclasses.replace(self, layers=replaced_gru_fields(self.layers, changes))

    def with_execution(
        self,
        compute_dtype: str | None = None,
        remat_chunk: int | None = None,
        gru_kernel: str | None = None,
    ) -> Model:
        """The same model with every GRU's execution options (see ``Sequential``)."""
        layers = replaced_execution(self.layers, compute_dtype, remat_chunk, gru_kernel)
        return dataclasses.replace(self, layers=layers)


def _uses_rng(layer: Layer) -> bool:
    """Whether training mode draws random numbers in ``layer`` (dropout of any kind)."""
    inner = [layer, *(v for v in vars(layer).values() if isinstance(v, Layer))]
    return any(
        getattr(item, name, 0)
        for item in inner
        for name in ("rate", "stddev", "dropout", "recurrent_dropout")
    )
