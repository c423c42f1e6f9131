"""The ``"onednn"`` kernel: a GRU's whole pass over time in one oneDNN RNN primitive call.

oneDNN's RNN primitive runs a whole sequence, forward or backward, in one call. (For float32
GRUs, oneDNN 3.2 runs its reference driver here, a GEMM per step, which measured slower than
the XLA path except at small sizes on one thread: ``docs/benchmarks.md``.) ``lbr_gru`` is
Keras's ``reset_after=True`` and ``vanilla_gru`` its ``reset_after=False``; oneDNN's gates
``u|r|o`` are Keras's ``z|r|h`` and its plain weight layout ``ldigo`` (one layer, one
direction) is Keras's ``(input, 3 units)`` kernel, so the kernels go in as they are. The bias
rows (``bias_rows``) are computed in JAX, so their gradient reaches both Keras bias rows
through JAX's own autodiff.

``sequence`` is called from JAX through XLA's typed FFI (``jax.ffi``); the C++ handlers are
``jaxgru/_native/gru_onednn.cc``, built by ``make native`` (``jaxgru/_native/build.sh``)
beside the oneDNN library they load. Its ``custom_vjp`` runs oneDNN's backward primitive
with the forward pass's workspace, whose size is asked of oneDNN when JAX traces.

It serves float32 on the CPU, tanh and sigmoid, with or without bias, either ``reset_after``,
and no mask or recurrent dropout (``refusal`` names what else). ``ExecutionOptions(kernel=...)``
chooses it, and ``jaxgru.execution.serving`` says which kernel serves a layer. Without the
built library (a plain ``pip install jaxgru``) every GRU runs on the XLA path.

The backward pass is not itself differentiable (no gradients of gradients), and forward-mode
autodiff (``jax.jvp``) is refused by ``custom_vjp``: ``ExecutionOptions(backward="autodiff")``
keeps a GRU on the XLA path for those.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["available", "bias_rows", "library_path", "refusal", "sequence", "version"]

LIBRARY_NAME = "libjaxgru_onednn.so"
_FORWARD, _BACKWARD = "jaxgru_onednn_gru_forward", "jaxgru_onednn_gru_backward"


def library_path() -> Path:
    """Where the kernel is loaded from: ``$JAXGRU_ONEDNN_LIB``, else the built
    ``jaxgru/_native/libjaxgru_onednn.so``."""
    return Path(os.environ.get("JAXGRU_ONEDNN_LIB") or Path(__file__).parent / "_native" /
                LIBRARY_NAME)  # fmt: skip


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """The library with its FFI targets registered, or ``(None, why not)``."""
    path = library_path()
    if not path.is_file():
        return None, f"{path} is not built (run `make native`)"
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        return None, f"{path} does not load: {error}"
    for name in (_FORWARD, _BACKWARD):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    lib.jaxgru_onednn_workspace_bytes.restype = ctypes.c_int64
    lib.jaxgru_onednn_workspace_bytes.argtypes = [ctypes.c_int64] * 4 + [
        ctypes.c_int32, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int64,
    ]  # fmt: skip
    return lib, None


def available() -> bool:
    """Whether the oneDNN kernel is built and loads."""
    return _load()[0] is not None


def version() -> str | None:
    """oneDNN's version (``"3.2.0"``), or ``None`` without the library."""
    lib = _load()[0]
    if lib is None:
        return None
    out = ctypes.create_string_buffer(32)
    lib.jaxgru_onednn_version(out, ctypes.c_int64(len(out)))
    return out.value.decode()


def refusal(spec, options, dtype, *, masked: bool, recurrent_dropout: bool,
            collect_gates: bool = False, time: int = 1, batch: int = 1) -> str | None:  # fmt: skip
    """Why the oneDNN kernel does not serve this pass over time, or ``None`` when it does.

    Args:
        spec: the ``cell.CellSpec``; options: the ``execution.ExecutionOptions``.
        dtype: the input's (and params') dtype.
        masked, recurrent_dropout, collect_gates: whether the pass has a mask, a recurrent
            dropout mask, or must return every step's gates.
        time, batch: the sequence's sizes (oneDNN takes no empty sequence).
    """
    if options.kernel != "onednn":
        return f"ExecutionOptions(kernel={options.kernel!r})"
    reasons = []
    if jax.default_backend() != "cpu":
        reasons.append(f"the oneDNN kernel runs on the CPU, and JAX computes on "
                       f"{jax.default_backend()!r}")  # fmt: skip
    if not available():
        reasons.append(_load()[1])
    if jnp.dtype(dtype) != jnp.float32:
        reasons.append(f"oneDNN's GRU runs float32 here, and the input is {jnp.dtype(dtype)}")
    if spec.compute_dtype is not None:
        reasons.append(f"compute_dtype={spec.compute_dtype!r}")
    if spec.activation != "tanh" or spec.recurrent_activation != "sigmoid":
        reasons.append(
            f"oneDNN's GRU computes activation='tanh' and recurrent_activation='sigmoid', "
            f"not {spec.activation!r} and {spec.recurrent_activation!r}"
        )
    for present, what in (
        (masked, "a mask (masked steps carry the state, which oneDNN's GRU does not do)"),
        (recurrent_dropout, "recurrent dropout (a mask on the state inside every step)"),
        (collect_gates, "collect_gates (every step's gates)"),
        (options.remat_chunk is not None, "remat_chunk (rematerialised chunks)"),
        (options.backward == "autodiff", "ExecutionOptions(backward='autodiff')"),
        (time < 1 or batch < 1, f"an empty batch or sequence (batch {batch}, time {time})"),
    ):
        if present:
            reasons.append(what)
    return "; ".join(reasons) if reasons else None


def bias_rows(spec, params: dict) -> jax.Array:
    """oneDNN's bias ``(gates, u)`` from the Keras params: for ``reset_after`` (lbr_gru) the
    four rows ``b_x,z + b_h,z``, ``b_x,r + b_h,r``, ``b_x,h`` and ``b_h,h``; otherwise the
    Keras ``(3u,)`` bias as three rows; zeros without ``use_bias``."""
    u = spec.units
    rows = 4 if spec.reset_after else 3
    if not spec.use_bias:
        return jnp.zeros((rows, u), params["kernel"].dtype)
    bias = params["bias"]
    if not spec.reset_after:
        return bias.reshape(3, u)
    b_x, b_h = bias[0].reshape(3, u), bias[1].reshape(3, u)
    return jnp.concatenate([b_x[:2] + b_h[:2], b_x[2:], b_h[2:]])


def _library() -> ctypes.CDLL:
    """The loaded library (its FFI targets registered); a RuntimeError saying why not."""
    lib, why_not = _load()
    if lib is None:
        raise RuntimeError(f"the oneDNN GRU kernel is not available: {why_not}")
    return lib


@functools.cache
def _workspace_bytes(time, batch, features, units, reset_after: bool, threads: int) -> int:
    lib = _library()
    error = ctypes.create_string_buffer(512)
    size = lib.jaxgru_onednn_workspace_bytes(time, batch, features, units, int(reset_after),
                                             threads, error, len(error))  # fmt: skip
    if size < 0:
        raise RuntimeError(f"oneDNN refused a GRU of shape {(time, batch, features, units)}: "
                           f"{error.value.decode()}")  # fmt: skip
    return int(size)


def _forward_call(reset_after, threads, training, xs, h0, kernel, recurrent_kernel, bias):
    _library()
    time, batch, features = xs.shape
    units = h0.shape[1]
    workspace = (
        _workspace_bytes(time, batch, features, units, reset_after, threads) if training else 1
    )
    results = (
        jax.ShapeDtypeStruct((time, batch, units), xs.dtype),
        jax.ShapeDtypeStruct((batch, units), xs.dtype),
        jax.ShapeDtypeStruct((workspace,), jnp.uint8),
    )
    call = jax.ffi.ffi_call(_FORWARD, results, vmap_method="sequential")
    return call(xs, h0, kernel, recurrent_kernel, bias, reset_after=np.int32(reset_after),
                training=np.int32(training), threads=np.int32(threads))  # fmt: skip


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def sequence(reset_after: bool, threads: int, xs, h0, kernel, recurrent_kernel, bias):
    """One oneDNN call over a whole sequence.

    Args:
        reset_after: Keras's ``reset_after`` (lbr_gru) or not (vanilla_gru).
        threads: oneDNN's OpenMP threads (0: OpenMP's default, every core).
        xs: ``(time, batch, features)`` float32, in consumption order.
        h0: ``(batch, u)``.
        kernel, recurrent_kernel: Keras's ``(features, 3u)`` and ``(u, 3u)``.
        bias: ``bias_rows``'s ``(4, u)`` or ``(3, u)``.

    Returns:
        ``(outputs (time, batch, u), h_last (batch, u))``.
    """
    args = (xs, h0, kernel, recurrent_kernel, bias)
    outputs, h_last, _ = _forward_call(reset_after, threads, False, *args)
    return outputs, h_last


def _sequence_forward(reset_after, threads, xs, h0, kernel, recurrent_kernel, bias):
    args = (xs, h0, kernel, recurrent_kernel, bias)
    outputs, h_last, workspace = _forward_call(reset_after, threads, True, *args)
    return (outputs, h_last), (args, outputs, h_last, workspace)


def _sequence_backward(reset_after, threads, residuals, cotangents):
    args, outputs, h_last, workspace = residuals
    d_outputs, d_h_last = cotangents
    results = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args)
    call = jax.ffi.ffi_call(_BACKWARD, results, vmap_method="sequential")
    return call(*args, outputs, h_last, workspace, d_outputs, d_h_last,
                reset_after=np.int32(reset_after), threads=np.int32(threads))  # fmt: skip


sequence.defvjp(_sequence_forward, _sequence_backward)
