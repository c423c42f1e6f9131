"""``Sequential``: a chain of layers with Keras's naming, masks, parameter counts and summary.

>>> import jax, jaxgru
>>> layers = [jaxgru.GRU(8, return_sequences=True), jaxgru.GRU(4), jaxgru.Dense(1)]
>>> model = jaxgru.Sequential(layers, input_shape=(None, 3))
>>> params = model.init(jax.random.key(0))
>>> list(params)
['gru', 'gru_1', 'dense']
>>> model.apply(params, jax.numpy.ones((2, 7, 3))).shape
(2, 1)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxgru import execution
from jaxgru import layer as protocol
from jaxgru._naming import auto_name
from jaxgru.errors import ConfigError, DataError
from jaxgru.layer import Layer
from jaxgru.regularizers import activity_penalty, total


class Forward(NamedTuple):
    """What a training step needs of one run of a model (``forward``).

    ``outputs``: the model's output (or list of outputs); ``mask``: the Keras mask it carries,
    e.g. ``(batch, time)`` bool after a masked ``return_sequences`` GRU, or ``None`` (a list for
    several outputs); ``states``: the carried states after the run (``{}`` without
    ``states``); ``activity``: the summed activity-regularizer penalty, a scalar;
    ``updates``: ``{layer name: {param: new value}}``, the non-trainable weights a training
    run moves (BatchNormalization's moving statistics).
    """

    outputs: Any
    mask: Any
    states: dict
    activity: jax.Array
    updates: dict


def call_extras(layer: Any, training: bool, rows: Any) -> dict:
    """The keywords beyond the protocol's that a training call hands a layer: the batch's
    real ``rows`` to a layer whose statistics must skip padding."""
    return {"rows": rows} if training and getattr(layer, "uses_batch_rows", False) else {}


def moving_updates(layer: Any, params: dict, x: Any, mask: Any, training: bool, rows: Any):
    """The non-trainable weights a training call of ``layer`` moves (``{}``: none)."""
    hook = getattr(layer, "moving_updates", None)
    return hook(params, x, mask, rows) if training and hook is not None else {}


def activity_of(layer: Any, outputs: Any, rows: jax.Array | None) -> jax.Array | None:
    """The layer's activity-regularizer penalty on ``outputs``, or ``None`` if it has none."""
    regularizer = getattr(layer, "activity_regularizer", None)
    return None if regularizer is None else activity_penalty(regularizer, outputs, rows)


def _named_layers(layers: tuple) -> tuple:
    """Give every unnamed layer (and a wrapper's inner layer) its Keras auto-name."""
    explicit = [layer.name for layer in layers if layer.name is not None]
    duplicates = sorted({n for n in explicit if explicit.count(n) > 1})
    if duplicates:
        raise ConfigError(f"Sequential layer names must be unique, got duplicates {duplicates}")
    taken, named = set(explicit), []
    for layer in layers:
        inner = protocol.wrapped(layer)
        if inner is not None and inner.name is None:
            inner = dataclasses.replace(inner, name=auto_name(protocol.default_name(inner), taken))
            taken.add(inner.name)
            layer = dataclasses.replace(layer, layer=inner)
        if layer.name is None:
            layer = dataclasses.replace(layer, name=auto_name(protocol.default_name(layer), taken))
            taken.add(layer.name)
        named.append(layer)
    return tuple(named)


@dataclass(frozen=True)
class Sequential:
    """Layers applied in order; params keyed by layer name, as Keras names them.

    Args:
        layers: jaxgru layers (``GRU``, ``Dense``, ``Embedding``, ``Masking``, ``Dropout``,
            ``Bidirectional``, or any class with the methods of ``jaxgru.layer.Layer``).
        input_shape: one sample's shape, without the batch axis: ``(time, features)`` with
            ``time`` possibly ``None``, or ``(time,)`` of integer ids before an ``Embedding``.
        name: the model's name.
        batch_size: a fixed batch size, as a Keras ``Input(batch_shape=...)`` gives one
            (stateful models need it to be saved for Keras); ``None`` for any.
    """

    layers: tuple
    input_shape: tuple
    name: str = "sequential"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        for layer in layers:
            if not isinstance(layer, Layer):
                raise ConfigError(
                    f"Sequential cannot hold {type(layer).__name__}: a layer needs name, "
                    "param_shapes, init, apply, compute_mask and output_shape (jaxgru.layer.Layer)"
                )
            if getattr(layer, "return_state", False):  # Keras's RNN argument
                raise ConfigError(
                    f"{type(layer).__name__} {layer.name!r} has return_state=True, which a "
                    "Sequential cannot chain; call layer.apply(..., initial_state=h) on the "
                    "layer itself"
                )
        if not layers:
            raise ConfigError("Sequential needs at least one layer")
        input_shape = tuple(self.input_shape)
        if not input_shape:
            raise ConfigError(
                f"Sequential input_shape is one sample's shape, e.g. (time, features), or "
                f"(time,) for an Embedding; got {self.input_shape!r}"
            )
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):  # fmt: skip
            raise ConfigError(
                f"Sequential batch_size must be None or >= 1, got {self.batch_size!r}"
            )
        object.__setattr__(self, "layers", _named_layers(layers))
        object.__setattr__(self, "input_shape", input_shape)
        self.layer_input_shapes()  # fails early on a chain whose shapes do not fit

    def layer_input_shapes(self) -> list[tuple]:
        """Each layer's input shape, batch axis first (``batch_size``, ``None`` for any), as
        Keras infers them."""
        shapes, shape = [], (self.batch_size, *self.input_shape)
        for i, layer in enumerate(self.layers):
            ndim = protocol.input_ndim(layer)
            if ndim is not None and len(shape) != ndim:
                needs = "(batch, time, features)" if ndim == 3 else f"rank {ndim}"
                raise ConfigError(
                    f"layer {layer.name!r} ({type(layer).__name__}) needs {needs} "
                    f"input, but receives shape {shape}"
                )
            last = i == len(self.layers) - 1
            if getattr(layer, "merge_mode", "concat") is None and not last:
                raise ConfigError(
                    f"{type(layer).__name__} {layer.name!r} with merge_mode=None outputs a "
                    "pair, so it can only be the last layer"
                )
            shapes.append(shape)
            shape = layer.output_shape(shape)
        return shapes

    def output_shape(self) -> tuple:
        """The model's output shape, batch axis first."""
        return self.layers[-1].output_shape(self.layer_input_shapes()[-1])

    def param_shapes(self) -> dict[str, dict]:
        """``{layer name: {param name: shape}}`` for the layers that have parameters."""
        shapes = {}
        for layer, shape in zip(self.layers, self.layer_input_shapes()):
            layer_shapes = protocol.param_shapes(layer, shape)
            if layer_shapes:
                shapes[layer.name] = layer_shapes
        return shapes

    def init(self, key: jax.Array, dtype: Any = jnp.float32) -> dict[str, dict]:
        """Draw every layer's parameters with its Keras default initializers.

        Returns:
            ``{layer name: layer params}``, e.g. ``{"gru": {...}, "dense": {...}}``.
        """
        keys = jax.random.split(key, len(self.layers))
        params = {}
        for k, layer, shape in zip(keys, self.layers, self.layer_input_shapes()):
            layer_params = protocol.init(layer, k, shape, dtype)
            if layer_params:
                params[layer.name] = layer_params
        return params

    def apply(
        self,
        params: dict[str, dict],
        x: ArrayLike,
        training: bool = False,
        rng: jax.Array | None = None,
        states: dict[str, jax.Array] | None = None,
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """Run the layers in order, passing Keras's masks from layer to layer.

        Args:
            params: ``{layer name: layer params}``.
            x: ``(batch, *input_shape)``, e.g. ``(batch, time, features)``.
            training: dropout on (needs ``rng``).
            rng: PRNG key, split across the layers.
            states: ``{name: (batch, units)}`` for the ``stateful`` GRUs, as from
                ``initial_states``; each starts from its entry.

        Returns:
            The last layer's output, e.g. ``(batch, units)``; with ``states``, the pair
            ``(output, new states)``, which the next consecutive batch continues from.
        """
        run = self.forward(params, x, training, rng, states)
        return run.outputs if states is None else (run.outputs, run.states)

    def forward(
        self,
        params: dict[str, dict],
        x: ArrayLike,
        training: bool = False,
        rng: jax.Array | None = None,
        states: dict[str, jax.Array] | None = None,
        rows: jax.Array | None = None,
    ) -> Forward:
        """``apply``, with what a loss needs besides the output: the output's Keras mask and
        the activity penalty of the layers that have an ``activity_regularizer`` (``rows
        (batch,)``: 1.0 for the real rows of a padded batch, which alone count there).
        """
        new_states, penalties, mask, updates = {}, [], None, {}
        walk = self._walk(params, x, training, rng, states, rows)
        for layer, x_in, mask_in, y, state in walk:
            if state is not None:
                new_states[layer.name] = state
            penalty = activity_of(layer, y, rows)
            if penalty is not None:
                penalties.append(penalty)
            moved = moving_updates(layer, params.get(layer.name, {}), x_in, mask_in, training,
                                   rows)  # fmt: skip
            if moved:
                updates[layer.name] = moved
            mask = layer.compute_mask(x_in, mask_in)  # the mask y carries
        return Forward(y, mask, new_states, total(penalties), updates)

    def layer_input(
        self, params: dict[str, dict], x: ArrayLike, name: str
    ) -> tuple[jax.Array, jax.Array | None]:
        """What layer ``name`` receives at inference: its input and Keras mask.

        Returns:
            ``(x (batch, time, features), mask (batch, time) bool or None)``.
        """
        for layer, x_in, mask_in, *_ in self._walk(params, x, False, None, None):
            if layer.name == name:
                return x_in, mask_in
        raise ConfigError(f"Sequential {self.name!r} has no layer {name!r}")

    def _walk(self, params, x, training, rng, states, rows=None):
        """Yield ``(layer, input, mask, output, carried state or None)`` layer by layer."""
        x = jnp.asarray(x)
        if x.ndim != len(self.input_shape) + 1:
            raise DataError(
                f"Sequential {self.name!r} expects input of shape (batch, "
                f"{', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        missing = sorted(set(self.param_shapes()) - set(params))
        if missing:
            raise DataError(f"Sequential {self.name!r}: params has no entry for layers {missing}")
        keys = (
            [None] * len(self.layers) if rng is None else jax.random.split(rng, len(self.layers))
        )
        mask = None
        for layer, key in zip(self.layers, keys):
            layer_params, state = params.get(layer.name, {}), None
            if states is not None and layer.name in states:
                y, state = layer.apply_stateful(layer_params, x, states[layer.name], mask=mask,
                                                training=training, rng=key)  # fmt: skip
            else:
                y = layer.apply(layer_params, x, mask=mask, training=training, rng=key,
                                **call_extras(layer, training, rows))  # fmt: skip
            yield layer, x, mask, y, state
            mask = layer.compute_mask(x, mask)
            x = y

    def initial_states(self, batch_size: int, dtype: Any = jnp.float32) -> dict[str, Any]:
        """The state every layer that carries one starts from (``init_state``): zeros
        ``{name: (batch_size, units)}`` for each ``stateful`` GRU (a stateful
        ``Bidirectional``'s entry holds both directions' states).
        """
        states = {item.name: protocol.init_state(item, batch_size, dtype) for item in self.layers}
        return {name: state for name, state in states.items() if state is not None}

    def with_execution(
        self,
        compute_dtype: str | None = None,
        remat_chunk: int | None = None,
        gru_kernel: str | None = None,
    ) -> Sequential:
        """The same model, with every GRU computing in ``compute_dtype`` (e.g. ``"bfloat16"``;
        ``None`` or ``"float32"`` for the params' dtype), rematerialising its pass over
        time in chunks of ``remat_chunk`` steps (``None`` for none) and, with ``gru_kernel``
        (``"xla"`` or ``"onednn"``), on that ``ExecutionOptions.kernel`` (its other execution
        options kept). Same params, same names; see ``GRU`` for what each does."""
        return dataclasses.replace(
            self, layers=replaced_execution(self.layers, compute_dtype, remat_chunk, gru_kernel)
        )

    def with_gru_fields(self, **changes: Any) -> Sequential:
        """The same model with ``changes`` (GRU field values, e.g. ``stateful=True``) applied
        to every layer that has all those fields (every GRU), the layers a wrapper holds
        included (a Bidirectional's ``layer`` and ``backward_layer``)."""

        return dataclasses.replace(self, layers=replaced_gru_fields(self.layers, changes))

    def count_params(self) -> int:
        """The number of parameters, as Keras's ``model.count_params()``."""
        return _count(self.param_shapes())

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts, like Keras's summary."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer, shape in zip(self.layers, self.layer_input_shapes()):
            count = _count(protocol.param_shapes(layer, shape))
            rows.append(
                (
                    f"{layer.name} ({type(layer).__name__})",
                    str(layer.output_shape(shape)),
                    f"{count:,}",
                )
            )
        return summary_table(self.name, rows, self.count_params())


def summary_table(name: str, rows: list[tuple[str, ...]], total: int) -> str:
    """Keras's summary layout: a header row, rules, columns two spaces apart; the third
    column ("Param #") right-aligned, a fourth ("Connected to") left unpadded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines = [f'Model: "{name}"', rule]
    for i, row in enumerate(rows):
        cells = [f"{row[0]:<{widths[0]}}", f"{row[1]:<{widths[1]}}", f"{row[2]:>{widths[2]}}",
                 *row[3:]]  # fmt: skip
        lines.append("  ".join(cells))
        if i == 0:
            lines.append(rule)
    lines += [rule, f"Total params: {total:,}"]
    return "\n".join(lines)


def replaced_gru_fields(layers: tuple, changes: dict | Callable[[Any], dict]) -> tuple:
    """``layers`` with ``changes`` (GRU field values, or a function of the layer giving them)
    applied to every layer that has all those fields, the layers a wrapper holds included."""

    def changed(layer):
        if not dataclasses.is_dataclass(layer):
            return layer
        fields = [f.name for f in dataclasses.fields(layer)]
        held = {name: getattr(layer, name) for name in fields
                if isinstance(getattr(layer, name), Layer)}  # fmt: skip
        if held:
            return dataclasses.replace(layer, **{n: changed(v) for n, v in held.items()})
        wanted = changes(layer) if callable(changes) else changes
        return dataclasses.replace(layer, **wanted) if set(wanted) <= set(fields) else layer

    return tuple(changed(x) for x in layers)


def replaced_execution(
    layers: tuple, compute_dtype=None, remat_chunk=None, gru_kernel: str | None = None
) -> tuple:
    """``layers`` with every GRU's ``compute_dtype`` and ``remat_chunk`` set and, with
    ``gru_kernel``, its ``ExecutionOptions.kernel`` (``with_execution``)."""
    fields = {"compute_dtype": None if compute_dtype == "float32" else compute_dtype,
              "remat_chunk": remat_chunk}  # fmt: skip

    def changes(layer) -> dict:  # a layer without all these fields (not a GRU) is unchanged
        if gru_kernel is None or not hasattr(layer, "execution"):
            return fields
        return {
            **fields,
            "execution": execution.resolve(layer.execution).replace(kernel=gru_kernel),
        }

    return replaced_gru_fields(layers, changes)


def _count(shapes: dict) -> int:
    """The number of parameters in a (nested) ``{name: shape}`` dict."""
    is_shape = lambda node: isinstance(node, tuple)  # noqa: E731
    return sum(math.prod(shape) for shape in jax.tree.leaves(shapes, is_leaf=is_shape))
