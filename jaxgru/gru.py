"""The GRU layer: Keras 3's sequence options around a ``cell.CellSpec``.

The equations of one step, in Keras's notation, are ``jaxgru.cell``'s docstring; this module
holds what Keras's ``GRU(RNN)`` adds to its ``GRUCell``: the input checks, the initial
state, masks, dropout masks, ``go_backwards``, ``return_sequences`` and ``return_state``.
The pass over time is ``jaxgru.recurrence``, run with the layer's ``ExecutionOptions``
(``jaxgru.execution``). How a sequence is read: ``x (batch, time, features)`` is consumed
one step at a time, ``t = 0 .. time-1`` (reversed with ``go_backwards``).

>>> import jax, jax.numpy as jnp
>>> layer = GRU(5, return_sequences=True)
>>> params = layer.init(jax.random.key(0), input_dim=3)
>>> {name: p.shape for name, p in params.items()}
{'kernel': (3, 15), 'recurrent_kernel': (5, 15), 'bias': (2, 15)}
>>> layer.apply(params, jnp.ones((2, 7, 3))).shape
(2, 7, 5)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgru import activations, initializers, recurrence, weight_rules
from jaxgru._checks import check_count, check_param_shapes, check_rate
from jaxgru._naming import snake_case
from jaxgru.cell import COMPUTE_DTYPES, CellSpec, GateValues, input_projection, step
from jaxgru.errors import ConfigError, DataError
from jaxgru.execution import ExecutionOptions, resolve
from jaxgru.graph import GraphCallable
from jaxgru.layer import KerasVars, register_layer
from jaxgru.recurrence import ScanResult

__all__ = ["GRU", "GateValues", "Params", "ScanResult", "cudnn_gru_to_gru"]

Params = dict[str, jax.Array]

# The fields that are jaxgru's own, not Keras constructor arguments (see ``GRU``).
EXECUTION_FIELDS = ("compute_dtype", "remat_chunk", "execution")

# The fields read from and written to Keras configs (Keras's constructor arguments).
KERAS_FIELDS = (
    "units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
    "recurrent_initializer", "bias_initializer", "dropout", "recurrent_dropout",
    "return_sequences", "return_state", "go_backwards", "stateful", "unroll", "reset_after",
    "zero_output_for_mask",
)  # fmt: skip


class RecurrentInputs:
    """The checks and dropout masks a recurrent layer (``GRU``, ``SimpleRNN``) shares: its
    ``units``, ``dropout`` and ``recurrent_dropout`` fields are read."""

    units: int
    dropout: float
    recurrent_dropout: float

    def _prepare_input(self, params: Params, x: ArrayLike, ndim: int, what: str) -> jax.Array:
        """Check the input's rank and the params against it; cast x to the kernel's dtype."""
        x = jnp.asarray(x)
        if x.ndim != ndim:
            raise DataError(
                f"{type(self).__name__} expects {what}, got an array of shape {x.shape}"
            )
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            raise DataError(
                f"{type(self).__name__} expects real numbers, got {x.dtype} input; casting it "
                "would drop its imaginary part, so pass x.real (or split real and imaginary "
                "into features)"
            )
        owner = f"{type(self).__name__} {self.name or snake_case(type(self).__name__)!r}"
        check_param_shapes(owner, self.param_shapes(x.shape[-1]), params)
        return x.astype(params["kernel"].dtype)

    def _as_state(self, h: ArrayLike, batch: int, dtype: Any, what: str) -> jax.Array:
        if isinstance(h, (list, tuple)) and len(h) == 1:  # Keras style [h]
            h = h[0]
        h = jnp.asarray(h)
        if jnp.issubdtype(h.dtype, jnp.complexfloating):
            raise DataError(f"{type(self).__name__} {what} must be real numbers, got {h.dtype}")
        if h.shape != (batch, self.units):
            raise DataError(
                f"{type(self).__name__} {what} must have shape (batch, units) = "
                f"{(batch, self.units)}, got {h.shape}"
            )
        return h.astype(dtype)

    def _as_mask(self, mask: ArrayLike, batch: int, time: int) -> jax.Array:
        """``(batch, time)`` booleans from ``(batch, time)`` or Keras's ``(batch, time, 1)``."""
        mask = jnp.asarray(mask)
        if mask.shape == (batch, time, 1):
            mask = mask[..., 0]
        if mask.shape != (batch, time):
            raise DataError(
                f"{type(self).__name__} mask must have shape (batch, time) = {(batch, time)} "
                f"(or (batch, time, 1)), got {mask.shape}"
            )
        return mask if mask.dtype == jnp.bool_ else mask != 0

    def _dropout_masks(
        self, training: bool, rng: jax.Array | None, batch: int, features: int, dtype: Any
    ) -> tuple[jax.Array | None, jax.Array | None]:
        """Variational dropout: one mask per call, reused at every step, scaled 1/(1-rate)."""
        rates = (self.dropout, self.recurrent_dropout)
        if not training or not any(rates):
            return None, None
        if rng is None:
            raise ConfigError(
                f"{type(self).__name__} with dropout={self.dropout}, "
                f"recurrent_dropout={self.recurrent_dropout} needs rng=jax.random.key(...) "
                "when training=True"
            )
        k_in, k_rec = jax.random.split(rng)
        return (
            _dropout_mask(k_in, self.dropout, (batch, features), dtype),
            _dropout_mask(k_rec, self.recurrent_dropout, (batch, self.units), dtype),
        )


@dataclass(frozen=True)
class GRU(RecurrentInputs, GraphCallable):
    """A Gated Recurrent Unit layer with Keras 3's constructor arguments and semantics.

    Holds hyperparameters only (frozen and hashable, so it can be static under ``jax.jit``);
    the parameters are a plain dict ``{"kernel", "recurrent_kernel", "bias"}``.
    ``stateful`` is recorded for Keras files; in JAX the caller carries the state with
    ``apply(..., initial_state=h)`` and ``return_state=True``.

    Three fields are jaxgru's own and never written to Keras files; they change how the
    numbers are computed, not the model (``Sequential.with_execution`` sets the last two on
    every GRU, ``Sequential.with_gru_fields(execution=...)`` the first):

    - ``execution``: an ``ExecutionOptions`` (unroll, backward pass, chunking, input
      projection, matmul layout and precision); ``None`` takes the defaults of the backend
      JAX runs on (``execution.for_backend``).

    - ``compute_dtype``: ``"bfloat16"`` runs every matmul with the kernels
      and the matmul inputs in that dtype, accumulating in the params' dtype; the carried state,
      the gates and the gradients stay in the params' dtype (float32 master params).
    - ``remat_chunk``: rematerialise the pass over time in chunks of this many steps
      (``jax.checkpoint``): the backward pass keeps one ``(batch, u)`` state per chunk and
      recomputes each chunk's gates, instead of keeping every step's gates. Memory for
      ``time`` steps falls from ``O(time)`` to ``O(time / chunk + chunk)``. It overrides
      ``execution.remat_chunk``.
    """

    units: int
    _: KW_ONLY
    activation: str | Callable | None = "tanh"
    recurrent_activation: str | Callable | None = "sigmoid"
    use_bias: bool = True
    kernel_initializer: str | Callable = "glorot_uniform"
    recurrent_initializer: str | Callable = "orthogonal"
    bias_initializer: str | Callable = "zeros"
    kernel_regularizer: Any = None
    recurrent_regularizer: Any = None
    bias_regularizer: Any = None
    activity_regularizer: Any = None
    kernel_constraint: Any = None
    recurrent_constraint: Any = None
    bias_constraint: Any = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    unroll: bool | int = False
    reset_after: bool = True
    zero_output_for_mask: bool = False
    name: str | None = None
    compute_dtype: str | None = None
    remat_chunk: int | None = None
    execution: ExecutionOptions | None = None

    input_ndim: ClassVar[int] = 3
    keras_weight_options: ClassVar[dict[str, str]] = {
        "kernel": "kernel",
        "recurrent": "recurrent_kernel",
        "bias": "bias",
    }
    keras_activity_regularizer: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_count("GRU units", self.units)
        weight_rules.resolve(self)
        activations.get(self.activation)
        activations.get(self.recurrent_activation)
        for field in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            initializers.get(getattr(self, field))
        check_rate("GRU dropout", self.dropout)
        check_rate("GRU recurrent_dropout", self.recurrent_dropout)
        if not isinstance(self.unroll, (bool, int)) or (
            not isinstance(self.unroll, bool) and self.unroll < 1
        ):
            raise ConfigError(
                f"GRU unroll must be a bool or an int >= 1 (the scan unroll factor), "
                f"got {self.unroll!r}"
            )
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(
                f"GRU compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}"
            )
        chunk = self.remat_chunk
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                                  or chunk < 1):  # fmt: skip
            raise ConfigError(
                f"GRU remat_chunk must be None or a number of steps >= 1, got {chunk!r}"
            )
        if self.execution is not None:
            resolve(self.execution)  # a ConfigError for anything but ExecutionOptions

    @property
    def cell_spec(self) -> CellSpec:
        """What one step computes (``jaxgru.cell``), from this layer's fields."""
        return CellSpec(self.units, self.reset_after, self.use_bias, self.activation,
                        self.recurrent_activation, self.compute_dtype)  # fmt: skip

    @property
    def options(self) -> ExecutionOptions:
        """How the pass over time runs: ``execution`` (or the backend's defaults), with this
        layer's Keras ``unroll`` (an int or ``True``) and ``remat_chunk`` applied."""
        options = resolve(self.execution)
        changes = {}
        if self.unroll is not False:
            changes["unroll"] = self.unroll
        if self.remat_chunk is not None:
            changes["remat_chunk"] = self.remat_chunk
        return options.replace(**changes) if changes else options

    @property
    def weight_names(self) -> tuple[str, ...]:
        """Parameter names in ``keras.layers.GRU.get_weights()`` order."""
        return self.cell_spec.weight_names

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """Keras's shape of each parameter, in ``get_weights()`` order.

        Returns:
            ``{"kernel": (input_dim, 3u), "recurrent_kernel": (u, 3u), "bias": (2, 3u)}``
            (``bias (3u,)`` when ``reset_after=False``; no bias when ``use_bias=False``).
        """
        return self.cell_spec.param_shapes(input_dim)

    def output_shape(self, input_shape: tuple) -> tuple | list[tuple]:
        """``(batch, time, units)`` with ``return_sequences``, else ``(batch, units)``; with
        ``return_state`` the list ``[that, (batch, units)]``."""
        batch, time = input_shape[0], input_shape[1]
        shape = (batch, time, self.units) if self.return_sequences else (batch, self.units)
        return [shape, (batch, self.units)] if self.return_state else shape

    def compute_mask(self, x: jax.Array, mask: jax.Array | None) -> jax.Array | None:
        """The output mask, as Keras: the input mask with ``return_sequences``, else None."""
        return mask if self.return_sequences else None

    def init(self, key: jax.Array, input_dim: int, dtype: Any = jnp.float32) -> Params:
        """Draw parameters with the layer's (Keras default) initializers.

        Args:
            key: a JAX PRNG key.
            input_dim: ``features``, the size of the last input axis.
            dtype: parameter dtype.

        Returns:
            ``{"kernel": (input_dim, 3u), "recurrent_kernel": (u, 3u), "bias": (2, 3u) or (3u,)}``.
            The orthogonal recurrent initializer spans the whole ``(u, 3u)`` matrix, as Keras.
        """
        check_count("input_dim", input_dim)
        inits = (self.kernel_initializer, self.recurrent_initializer, self.bias_initializer)
        return self.cell_spec.init(key, input_dim, dtype, inits)

    def apply(
        self,
        params: Params,
        x: ArrayLike,
        initial_state: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        training: bool = False,
        rng: jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Run the GRU over a batch of sequences.

        Args:
            params: ``{"kernel": (features, 3u), "recurrent_kernel": (u, 3u), "bias": ...}``.
            x: ``(batch, time, features)``; cast to the kernel's dtype.
            initial_state: ``(batch, units)``, default zeros.
            mask: ``(batch, time)`` bool; a masked step carries the state unchanged and repeats
                the previous output (zeros with ``zero_output_for_mask``).
            training: apply dropout (needs ``rng``).
            rng: PRNG key for the dropout masks.

        Returns:
            ``(batch, time, units)`` with ``return_sequences`` (in consumption order, so
            reversed with ``go_backwards``), else ``(batch, units)``; with ``return_state``
            the tuple ``(output, final_state (batch, units))``.
        """
        return self.output(self.scan(params, x, initial_state, mask, training, rng))

    def step(self, params: Params, h_prev: ArrayLike, x_t: ArrayLike) -> jax.Array:
        """One time step, for streaming: ``h_t`` from ``h_prev`` and ``x_t``.

        Args:
            params: as for ``apply``.
            h_prev: ``(batch, units)``.
            x_t: ``(batch, features)``.

        Returns:
            ``h_t (batch, units)``.
        """
        x_t = self._prepare_input(params, x_t, 2, "x_t (batch, features)")
        h_prev = self._as_state(h_prev, x_t.shape[0], x_t.dtype, "h_prev")
        spec = self.cell_spec
        w = recurrence.gate_layout(spec, self.options, params)
        return step(spec, w, h_prev, input_projection(spec, w, x_t)).h

    def scan(
        self,
        params: Params,
        x: ArrayLike,
        initial_state: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        training: bool = False,
        rng: jax.Array | None = None,
        collect_gates: bool = False,
    ) -> ScanResult:
        """The pass over time behind ``apply``, with every output in consumption order.

        Args: as for ``apply``; ``collect_gates`` also returns every step's ``GateValues``.

        Returns:
            A ``ScanResult`` of time-major arrays (see its docstring).
        """
        inputs = self.scan_inputs(params, x, initial_state, mask, training, rng)
        return recurrence.scan(self.cell_spec, self.options, params, inputs,
                               self.zero_output_for_mask, collect_gates)  # fmt: skip

    def scan_inputs(
        self,
        params: Params,
        x: ArrayLike,
        initial_state: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        training: bool = False,
        rng: jax.Array | None = None,
    ) -> recurrence.ScanInputs:
        """Checked, time-major inputs of the scan, in consumption order, dropout applied.

        Args: as for ``apply``.
        """
        x = self._prepare_input(params, x, 3, "x (batch, time, features)")
        batch, time, _ = x.shape
        dtype = x.dtype
        if initial_state is None:
            h0 = jnp.zeros((batch, self.units), dtype)
        else:
            h0 = self._as_state(initial_state, batch, dtype, "initial_state")
        mask_tm = None if mask is None else self._as_mask(mask, batch, time).T  # (time, batch)
        input_mask, rec_mask = self._dropout_masks(training, rng, batch, x.shape[-1], dtype)
        if input_mask is not None:
            x = x * input_mask[:, None, :]
        xs = jnp.swapaxes(x, 0, 1)  # (time, batch, features)
        if self.go_backwards:
            xs = jnp.flip(xs, axis=0)
            mask_tm = None if mask_tm is None else jnp.flip(mask_tm, axis=0)
        return recurrence.ScanInputs(xs, h0, mask_tm, rec_mask)

    def init_state(self, batch_size: int, dtype: Any = jnp.float32) -> jax.Array | None:
        """A ``stateful`` GRU's zero state ``(batch_size, units)``; ``None`` otherwise."""
        return jnp.zeros((batch_size, self.units), dtype) if self.stateful else None

    def apply_stateful(
        self, params: Params, x: ArrayLike, state: ArrayLike, *, mask=None, training=False,
        rng=None,
    ) -> tuple[jax.Array, jax.Array]:  # fmt: skip
        """``apply`` from ``state (batch, units)``: ``(output, final state (batch, units))``."""
        carrying = dataclasses.replace(self, return_state=True)
        return carrying.apply(params, x, state, mask, training, rng)

    # -- Keras files ----------------------------------------------------------------------

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> GRU:
        """A Keras ``GRU`` (or tf_keras ``CuDNNGRU``) config -> ``GRU``."""
        if config.get("time_major"):
            raise context.unsupported(" with time_major=True")
        kwargs = {key: config[key] for key in KERAS_FIELDS if key in config}
        kwargs["units"] = config["units"]  # required: a KeyError names it
        if context.class_name == "CuDNNGRU":  # see from_keras_arrays for its weights
            kwargs.update(reset_after=True, activation="tanh", recurrent_activation="sigmoid")
        for key in ("activation", "recurrent_activation"):
            if key in kwargs:
                kwargs[key] = context.activation(kwargs[key])
        for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            if key in kwargs:
                kwargs[key] = context.initializer(kwargs[key], _DEFAULT_INITIALIZERS[key])
        kwargs["unroll"] = bool(kwargs.get("unroll", False))
        return cls(name=config.get("name"), **kwargs)

    def keras_config(self, context: Any) -> dict:
        """The Keras 3 ``GRU`` config (without name, trainable and dtype)."""
        config = {}
        for key in KERAS_FIELDS:
            value = getattr(self, key)
            if key in ("activation", "recurrent_activation") or key.endswith("_initializer"):
                value = context.exportable(value, key)
            config[key] = value
        config["activation"] = config["activation"] or "linear"
        config["unroll"] = self.unroll is True
        return config

    def keras_weight_groups(self) -> tuple[KerasVars, ...]:
        """Keras 3 keeps a GRU's arrays in its cell: ``layers/<key>/cell/vars``."""
        return (KerasVars("cell/vars"),)

    def from_keras_arrays(self, arrays: list, legacy: bool = False) -> list:
        """A ``CuDNNGRU``'s arrays in a tf_keras file (``legacy``), recognised by the ``(6u,)``
        bias, converted as tf_keras's loader converts them (``cudnn_gru_to_gru``). Keras 3
        has no such conversion and refuses a ``(6u,)`` bias, so outside a tf_keras file the
        arrays stay as they are (and the shape check refuses them)."""
        cudnn_bias = np.shape(arrays[2]) == (6 * self.units,) if len(arrays) == 3 else False
        if legacy and cudnn_bias and self.reset_after:
            return cudnn_gru_to_gru(arrays)
        return list(arrays)

    def output(self, result: ScanResult) -> jax.Array | tuple[jax.Array, jax.Array]:
        """What ``apply`` returns, from the scan's time-major result."""
        output = (
            jnp.swapaxes(result.outputs, 0, 1) if self.return_sequences else result.last_output
        )
        return (output, result.state) if self.return_state else output


_DEFAULT_INITIALIZERS = {
    "kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal",
    "bias_initializer": "zeros",
}  # fmt: skip


def cudnn_gru_to_gru(weights: Sequence[ArrayLike]) -> list[np.ndarray]:
    """Convert a legacy ``CuDNNGRU``'s weights to ``GRU(reset_after=True)``'s layout.

    tf_keras's rule, which Keras 3 dropped: per gate block, the input kernel is read back from
    cuDNN's column-major layout and each recurrent block is transposed; the bias
    ``(6u,)`` becomes ``(2, 3u)`` (input row, recurrent row).

    Args:
        weights: ``[kernel (input_dim, 3u), recurrent_kernel (u, 3u), bias (6u,)]``.

    Returns:
        ``[kernel (input_dim, 3u), recurrent_kernel (u, 3u), bias (2, 3u)]``.
    """
    kernel, recurrent_kernel, bias = (np.asarray(w) for w in weights)
    units = recurrent_kernel.shape[0]
    if bias.shape != (6 * units,):
        raise DataError(f"CuDNNGRU bias must have shape ({6 * units},), got {bias.shape}")
    kernel = np.hstack([k.T.reshape(k.shape, order="F") for k in np.hsplit(kernel, 3)])
    recurrent_kernel = np.hstack([k.T for k in np.hsplit(recurrent_kernel, 3)])
    return [kernel, recurrent_kernel, bias.reshape(2, 3 * units)]


register_layer("GRU", GRU)
register_layer("CuDNNGRU", GRU)


def _dropout_mask(key: jax.Array, rate: float, shape: tuple[int, int], dtype: Any):
    if rate == 0:
        return None
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)
