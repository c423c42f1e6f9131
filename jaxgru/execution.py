"""How a GRU's pass over time runs: one frozen, hashable value, passed down explicitly.

``ExecutionOptions`` changes how the numbers are computed, never which numbers: every
combination equals the float64 reference and JAX's autodiff (``tests/test_execution.py``).
It is static under ``jax.jit`` (part of the layer), so a jit cache sees every change; nothing
here is a module global read while JAX traces.

``for_backend`` gives the measured defaults per backend:

- ``cpu``: the input projected per step inside the loop and one matmul per gate. On XLA CPU
  this measured about 2x faster than one projection before the loop (a loop fusion that
  slices a precomputed ``(time, batch, 3u)`` buffer is not vectorized) and per-gate matmuls
  about 25% faster than one ``(u, 3u)`` product (``docs/benchmarks.md``).
- ``kernel``: ``"xla"`` everywhere. ``"onednn"`` runs the whole pass over time in one
  oneDNN call (``jaxgru.onednn``) where it applies; it is opt-in because it measured slower
  than the XLA path on this project's CPU (``docs/benchmarks.md``, the decision rule there).
- ``gpu`` and ``tpu``: the usual accelerator layout, one input matmul over all steps before
  the loop and one fused recurrent matmul per step; matmuls at ``precision="highest"`` so
  float32 means float32 (TF32 and bfloat16 passes are the accelerators' defaults).

>>> import jaxgru
>>> from jaxgru.execution import ExecutionOptions, for_backend, serving
>>> for_backend("cpu").input_projection, for_backend("gpu").input_projection
('per_step', 'hoisted')
>>> ExecutionOptions(backward_chunk=3).replace(unroll=2).unroll
2
>>> serving(jaxgru.GRU(4)).kernel
'xla'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax

from jaxgru import onednn
from jaxgru.errors import ConfigError

__all__ = ["ExecutionOptions", "Serving", "for_backend", "resolve", "serving"]

KERNELS = ("xla", "onednn")
BACKWARDS = ("auto", "hand_written", "autodiff")
INPUT_PROJECTIONS = ("per_step", "hoisted")
RECURRENT_MATMULS = ("per_gate", "fused")
PRECISIONS = (None, "default", "high", "highest")


def _check_steps(field: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"ExecutionOptions {field} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class ExecutionOptions:
    """How one GRU's pass over time runs (hashable; static under ``jax.jit``).

    Attributes:
        unroll: ``lax.scan``'s unroll factor: an int, ``True`` for every step, or ``None``
            for ``unroll_train`` under autodiff and ``unroll_inference`` otherwise. A GRU
            whose Keras ``unroll`` is set (an int or ``True``) overrides it.
        unroll_train, unroll_inference: the factors ``unroll=None`` picks. ``python
            experiments/benchmark.py --tune unroll`` on the 2-core CPU: 1 trained fastest (2
            was 25% slower at M); 4 was within noise of 1 for inference, 10% faster at L once.
        backward: ``"auto"`` (the hand-written VJP where both activations have an
            output-form derivative, else autodiff), ``"hand_written"`` (refused where it
            does not apply) or ``"autodiff"``.
        backward_chunk: steps per chunk of the hand-written backward pass's weight-gradient
            matmuls (``None``: the whole sequence in one); used only when one gate's
            ``(time, batch, u)`` cotangents take at least ``backward_chunk_min_bytes``.
            ``--tune chunk`` on the CPU: at L (26 MB per gate) the whole sequence trained
            13% slower than chunks of 16; at M chunks of 8 to 32 were within 3%.
        remat_chunk: rematerialise the pass in chunks of this many steps under
            ``jax.checkpoint`` (``None``: keep every step's residuals).
        fused_bidirectional_max_units: a ``Bidirectional`` runs both directions in one
            vmapped loop up to this many units (``None``: never). ``--tune
            fused_bidirectional`` on the CPU: 2% to 14% faster at 32 units, 6% to 30% slower
            at 128 and 256.
        input_projection: ``"per_step"`` (``x_t W`` inside the loop) or ``"hoisted"`` (one
            ``(time * batch, features) @ (features, 3u)`` matmul before the loop).
        recurrent_matmul: ``"per_gate"`` (three ``(u, u)`` products per step) or ``"fused"``
            (one ``(u, 3u)`` product; ``(u, 2u)`` and ``(u, u)`` when not ``reset_after``).
        precision: ``jax.lax`` matmul precision: ``None`` for JAX's default, or
            ``"default"``, ``"high"``, ``"highest"``. Float32 parity on GPU/TPU needs
            ``"highest"``.
        kernel: ``"xla"`` (the ``lax.scan`` passes above) or ``"onednn"``: the whole pass
            over time, and its backward pass, in one oneDNN call each (``jaxgru.onednn``),
            where that computes exactly what the layer asks (float32 on the CPU, tanh and
            sigmoid, no mask, no recurrent dropout); every other pass stays on XLA, chosen
            when JAX traces. ``serving`` says which kernel serves a layer, and why.
        onednn_threads: the OpenMP threads the oneDNN kernel uses (``None``: OpenMP's
            default, every core). Measured in one train step on the 2-core CPU
            (``docs/benchmarks.md``): 1 thread ran S about 10x faster than 2, where two
            OpenMP threads contend with XLA's own; 2 ran L about 1.5x faster than 1.
    """

    unroll: int | bool | None = None
    unroll_train: int = 1
    unroll_inference: int = 4
    backward: str = "auto"
    backward_chunk: int | None = 16
    backward_chunk_min_bytes: int = 1 << 20
    remat_chunk: int | None = None
    fused_bidirectional_max_units: int | None = 32
    input_projection: str = "per_step"
    recurrent_matmul: str = "per_gate"
    precision: str | None = None
    kernel: str = "xla"
    onednn_threads: int | None = None

    def __post_init__(self) -> None:
        if not (self.unroll is None or isinstance(self.unroll, bool)):
            _check_steps("unroll", self.unroll)
        _check_steps("unroll_train", self.unroll_train, allow_none=False)
        _check_steps("unroll_inference", self.unroll_inference, allow_none=False)
        _check_steps("backward_chunk", self.backward_chunk)
        _check_steps("remat_chunk", self.remat_chunk)
        _check_steps("onednn_threads", self.onednn_threads)
        for field, value, allowed in (
            ("backward", self.backward, BACKWARDS),
            ("input_projection", self.input_projection, INPUT_PROJECTIONS),
            ("recurrent_matmul", self.recurrent_matmul, RECURRENT_MATMULS),
            ("precision", self.precision, PRECISIONS),
            ("kernel", self.kernel, KERNELS),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"ExecutionOptions {field} must be one of {allowed}, got {value!r}"
                )
        max_units = self.fused_bidirectional_max_units
        if max_units is not None and (
            isinstance(max_units, bool) or not isinstance(max_units, int)
        ):
            raise ConfigError(
                f"ExecutionOptions fused_bidirectional_max_units must be an int or None, "
                f"got {max_units!r}"
            )

    def replace(self, **changes) -> ExecutionOptions:
        """A copy with ``changes`` applied (checked again)."""
        return dataclasses.replace(self, **changes)

    def unroll_factor(self, time: int, training: bool) -> int:
        """The ``lax.scan`` unroll for ``time`` steps: between 1 and ``time``."""
        if self.unroll is True:
            return max(time, 1)
        if self.unroll is None or self.unroll is False:
            factor = self.unroll_train if training else self.unroll_inference
        else:
            factor = self.unroll
        return max(min(int(factor), time), 1)

    def backward_chunks(self, time: int, gate_bytes: int) -> int:
        """How many chunks the hand-written backward pass walks ``time`` steps in."""
        if self.backward_chunk is None or gate_bytes < self.backward_chunk_min_bytes:
            return 1
        return -(-time // self.backward_chunk)

    def fuses_bidirectional(self, units: int) -> bool:
        """Whether a ``Bidirectional`` of ``units`` runs both directions in one loop."""
        limit = self.fused_bidirectional_max_units
        return limit is not None and units <= limit and self.remat_chunk is None


_ACCELERATOR = ExecutionOptions(
    input_projection="hoisted", recurrent_matmul="fused", precision="highest"
)
_DEFAULTS = {"cpu": ExecutionOptions(), "gpu": _ACCELERATOR, "tpu": _ACCELERATOR}


def for_backend(backend: str | None = None) -> ExecutionOptions:
    """The default options for ``backend`` (``"cpu"``, ``"gpu"``, ``"tpu"``; ``None`` for
    the backend JAX computes on, ``jax.default_backend()``)."""
    backend = backend or jax.default_backend()
    return _DEFAULTS.get(backend, _ACCELERATOR)


def resolve(options: ExecutionOptions | None) -> ExecutionOptions:
    """``options``, or the current backend's defaults for ``None``."""
    if options is None:
        return for_backend()
    if not isinstance(options, ExecutionOptions):
        raise ConfigError(
            f"execution must be a jaxgru.ExecutionOptions or None, got {type(options).__name__}"
        )
    return options


class Serving(NamedTuple):
    """Which kernel runs a layer's pass over time: ``"onednn"`` or ``"xla"``, and ``reason``,
    why oneDNN does not (``None`` when it does)."""

    kernel: str
    reason: str | None


def serving(
    layer: Any, *, dtype: Any = "float32", masked: bool = False, training: bool = False
) -> Serving:
    """Which kernel runs ``layer``'s pass over time (a ``GRU``, or a ``Bidirectional`` of one,
    whose two directions must both be served), for an input of ``dtype``, with a mask or
    not, in training (where recurrent dropout applies) or not.

    >>> import jaxgru
    >>> serving(jaxgru.GRU(4, execution=ExecutionOptions(kernel="xla")))
    Serving(kernel='xla', reason="ExecutionOptions(kernel='xla')")
    """
    reasons = []
    for gru in getattr(layer, "directions", (layer,)):
        refusal = onednn.refusal(
            gru.cell_spec, gru.options, dtype, masked=masked,
            recurrent_dropout=training and gru.recurrent_dropout > 0,
        )  # fmt: skip
        if refusal is not None and refusal not in reasons:
            reasons.append(refusal)
    return Serving("xla", "; ".join(reasons)) if reasons else Serving("onednn", None)
