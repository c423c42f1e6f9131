"""Keras's attention layers, as used after GRU encoders: ``Attention`` (Luong's dot-product
score), ``AdditiveAttention`` (Bahdanau's) and ``MultiHeadAttention``.

``Attention`` and ``AdditiveAttention`` take a list ``[query, value]`` or
``[query, value, key]`` (``key`` defaults to ``value``), each ``(batch, time, dim)``, and
return ``(batch, Tq, value_dim)``: ``softmax(scores(query, key)) @ value`` with ``scores``
of shape ``(batch, Tq, Tv)``. ``MultiHeadAttention`` is called on the tensors themselves,
``mha(query, value)`` or ``mha(query, value, key)``, and projects them per head first.

Masks follow Keras: the value's mask (and the key's, for ``MultiHeadAttention``) removes
steps from the softmax, the query's mask zeroes the masked query steps (``Attention``) or
masks whole rows (``MultiHeadAttention``), and the output carries the query's mask. In a
graph these masks are the ones propagated to each input, as Keras's functional models fill
``mask=[query_mask, value_mask]`` and ``query_mask=``/``value_mask=``/``key_mask=``. The call
argument ``use_causal_mask=True`` (and ``attention_mask``, a boolean ``(batch, Tq, Tv)``
tensor, for ``MultiHeadAttention``) is a graph call's keyword, as in Keras. Keras 3's
``MultiHeadAttention`` removes its input tensors' masks once it has run; a graph does the same
(``jaxgru.graph``'s module doc).

>>> import jax.numpy as jnp
>>> q = jnp.array([[[1.0, 0.0]]])
>>> v = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])
>>> Attention().apply({}, [q, v]).round(3)
Array([[[2.762, 3.762]]], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxgru import initializers
from jaxgru._checks import check_count, check_param_shapes, check_rate
from jaxgru.errors import ConfigError, DataError
from jaxgru.graph import GraphCallable, call_layer
from jaxgru.layer import KerasVars, register_layer
from jaxgru.layers import inverted_dropout

KERAS_MASK_PENALTY = 1e9  # what Keras subtracts from a masked score before the softmax


def _query_value_key(layer: Any, items: Any) -> list:
    """``[query, value, key]`` (arrays or shapes) from a list of 2 or 3 (``key`` defaults
    to ``value``)."""
    if not isinstance(items, (list, tuple)) or len(items) not in (2, 3):
        raise DataError(
            f"{type(layer).__name__} {layer.name!r} takes a list [query, value] or "
            "[query, value, key]"
        )
    return list(items) if len(items) == 3 else [*items, items[1]]


def _arrays(layer: Any, inputs: Any) -> list[jax.Array]:
    return [jnp.asarray(x) for x in _query_value_key(layer, inputs)]


def _masks(mask: Any, count: int = 3) -> list:
    """The list of input masks, padded with ``None`` to ``count``."""
    found = list(mask) if isinstance(mask, (list, tuple)) else []
    found = [None if m is None else jnp.asarray(m, bool) for m in found]
    return (found + [None] * count)[:count]


def _check_shapes(layer: Any, shapes: Any) -> list:
    shapes = [tuple(s) for s in _query_value_key(layer, shapes)]
    if any(len(s) != 3 for s in shapes):
        raise ConfigError(
            f"{type(layer).__name__} {layer.name!r} takes (batch, time, dim) tensors, got "
            f"shapes {shapes}"
        )
    value, key = shapes[1], shapes[2]
    if None not in (value[1], key[1]) and value[1] != key[1]:
        raise ConfigError(
            f"{type(layer).__name__} {layer.name!r}: value {value} and key {key} need the same "
            "number of steps"
        )
    return shapes


def causal_mask(steps_q: int, steps_v: int) -> jax.Array:
    """``(1, Tq, Tv)``: query step ``i`` sees the value steps ``j <= i``, as Keras."""
    return jnp.tril(jnp.ones((steps_q, steps_v), bool))[None]


def _and(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
    return b if a is None else a if b is None else jnp.logical_and(a, b)


@dataclass(frozen=True)
class Attention(GraphCallable):
    """Dot-product attention: ``scores = query @ key^T`` (times ``scale`` with
    ``use_scale``), or with ``score_mode="concat"``
    ``concat_score_weight * sum(tanh(scale * (query_i + key_j)))``.

    Params (Keras's weights, in order): ``scale ()`` with ``use_scale`` and
    ``concat_score_weight ()`` with ``score_mode="concat"``, both initialised to 1.
    ``dropout`` drops attention weights in training.
    """

    _: KW_ONLY
    use_scale: bool = False
    score_mode: str = "dot"
    dropout: float = 0.0
    seed: int | None = None
    name: str | None = None

    call_arguments: ClassVar[tuple[str, ...]] = ("use_causal_mask",)

    def __post_init__(self) -> None:
        if self.score_mode not in ("dot", "concat"):
            raise ConfigError(f"score_mode must be 'dot' or 'concat', got {self.score_mode!r}")
        check_rate(f"{type(self).__name__} dropout", self.dropout)

    def param_shapes(self, input_dim: int | None = None) -> dict[str, tuple[int, ...]]:
        shapes = {"scale": ()} if self.use_scale else {}
        if self.score_mode == "concat":
            shapes["concat_score_weight"] = ()
        return shapes

    def init(self, key: jax.Array, input_dim: int | None = None, dtype: Any = jnp.float32):
        return {name: jnp.ones(shape, dtype) for name, shape in self.param_shapes().items()}

    def scores(self, params: dict, query: jax.Array, key: jax.Array) -> jax.Array:
        """``query (batch, Tq, dim)``, ``key (batch, Tv, dim)`` -> ``(batch, Tq, Tv)``."""
        scale = params.get("scale")
        if self.score_mode == "dot":
            found = query @ jnp.swapaxes(key, -2, -1)
            return found if scale is None else found * scale
        pairs = query[..., :, None, :] + key[..., None, :, :]
        pairs = pairs if scale is None else scale * pairs
        return params["concat_score_weight"] * jnp.sum(jnp.tanh(pairs), axis=-1)

    def apply(self, params: dict, inputs: list, mask=None, training=False, rng=None,
              use_causal_mask: bool = False):  # fmt: skip
        """``[query (batch, Tq, dim), value (batch, Tv, vdim)(, key (batch, Tv, dim))]`` ->
        ``(batch, Tq, vdim)``; ``mask``: ``[query_mask, value_mask]`` (each may be
        ``None``)."""
        query, value, key = _arrays(self, inputs)
        check_param_shapes(f"{type(self).__name__} {self.name!r}",
                           self.param_shapes(query.shape[-1]), params)  # fmt: skip
        query_mask, value_mask, _ = _masks(mask)
        scores = self.scores(params, query, key)
        allowed = None if value_mask is None else value_mask[:, None, :]
        if use_causal_mask:
            allowed = _and(allowed, causal_mask(scores.shape[-2], scores.shape[-1]))
        if allowed is not None:
            scores = jnp.where(allowed, scores, scores - KERAS_MASK_PENALTY)
        weights = jax.nn.softmax(scores, axis=-1)
        if training and self.dropout > 0:
            if rng is None:
                raise DataError(f"{type(self).__name__} {self.name!r}: dropout needs an rng")
            weights = inverted_dropout(rng, weights, self.dropout, weights.shape)
        out = weights @ value
        if query_mask is not None:
            out = jnp.where(query_mask[..., None], out, jnp.zeros_like(out))
        return out

    def compute_mask(self, inputs, mask):
        """The query's mask, as Keras."""
        return _masks(mask)[0]

    def output_shape(self, input_shape: list) -> tuple:
        query, value, _ = _check_shapes(self, input_shape)
        return (*query[:-1], value[-1])

    def keras_config(self, context: Any) -> dict:
        return {"use_scale": self.use_scale, "score_mode": self.score_mode,
                "dropout": self.dropout, "seed": self.seed}  # fmt: skip

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> Attention:
        if config.get("causal"):
            raise context.unsupported(
                " with the deprecated causal=True in its config (call it with "
                "use_causal_mask=True instead)"
            )
        return cls(use_scale=bool(config.get("use_scale", False)),
                   score_mode=config.get("score_mode", "dot"),
                   dropout=float(config.get("dropout", 0.0)), seed=config.get("seed"),
                   name=config.get("name"))  # fmt: skip


@dataclass(frozen=True)
class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention: ``scores_ij = sum(scale * tanh(query_i + key_j))``.

    Params: ``scale (dim,)`` with ``use_scale`` (the default), drawn ``glorot_uniform`` as
    Keras draws a vector (fan in = fan out = ``dim``).
    """

    _: KW_ONLY
    use_scale: bool = True

    def param_shapes(self, input_dim: int | None = None) -> dict[str, tuple[int, ...]]:
        return {"scale": (input_dim,)} if self.use_scale else {}

    def init(self, key: jax.Array, input_dim: int | None = None, dtype: Any = jnp.float32):
        if not self.use_scale:
            return {}
        limit = math.sqrt(3.0 / input_dim)
        return {"scale": jax.random.uniform(key, (input_dim,), dtype, -limit, limit)}

    def scores(self, params: dict, query: jax.Array, key: jax.Array) -> jax.Array:
        tanh = jnp.tanh(query[..., :, None, :] + key[..., None, :, :])
        scale = params.get("scale")
        return jnp.sum(tanh if scale is None else scale.reshape(1, 1, 1, -1) * tanh, axis=-1)

    def keras_config(self, context: Any) -> dict:
        return {"use_scale": self.use_scale, "dropout": self.dropout, "seed": self.seed}

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> AdditiveAttention:
        return cls(use_scale=bool(config.get("use_scale", True)),
                   dropout=float(config.get("dropout", 0.0)), seed=config.get("seed"),
                   name=config.get("name"))  # fmt: skip


def _config_output_dim(value: Any, context: Any) -> int | None:
    """Keras's ``output_shape`` (``None``, an int or a one-item list) -> a size."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return int(value[0])
    raise context.unsupported(f" with output_shape={value} (jaxgru projects to one axis)")


def _config_attention_axes(value: Any, context: Any) -> None:
    """Only attention over the time axis (Keras's default for ``(batch, time, dim)``)."""
    axes = [value] if isinstance(value, int) else list(value or [1])
    if axes not in ([1], [-2]):
        raise context.unsupported(
            f" with attention_axes={value} (jaxgru attends over the time axis of (batch, time, "
            "dim) inputs)"
        )


@dataclass(frozen=True)
class MultiHeadAttention(GraphCallable):
    """Multi-head scaled dot-product attention over ``(batch, time, dim)`` inputs.

    Per head ``n``: ``q = query @ query/kernel[:, n] + query/bias[n]`` (the same for key and
    value), ``weights = softmax(q @ k^T / sqrt(key_dim))`` over the value steps, ``o = weights
    @ v``; the heads' ``o`` are projected together by ``attention_output``.

    Params (Keras's weights, in order), ``N = num_heads``:
    ``query``/``key``: ``kernel (dim, N, key_dim)``, ``bias (N, key_dim)``;
    ``value``: ``kernel (value_dim_in, N, value_dim)``, ``bias (N, value_dim)``;
    ``attention_output``: ``kernel (N, value_dim, output_dim)``, ``bias (output_dim,)``
    (``output_dim`` defaults to the query's ``dim``). No biases without ``use_bias``.

    The attention mask is the AND of the query's mask (rows), the value's and key's masks
    (columns), ``use_causal_mask``, ``sliding_window`` (``|i - j| < sliding_window``) and an
    ``attention_mask`` call argument. A fully masked row gets uniform weights, except in
    Keras 3 with ``dropout > 0``, whose masked softmax gives it zeros; ``tf_keras_softmax``
    (set when the layer comes from a tf_keras file) adds ``-1e9`` to masked scores as tf_keras
    does.
    """

    num_heads: int
    key_dim: int
    _: KW_ONLY
    value_dim: int | None = None
    dropout: float = 0.0
    use_bias: bool = True
    output_dim: int | None = None
    sliding_window: int | None = None
    kernel_initializer: str | Callable = "glorot_uniform"
    bias_initializer: str | Callable = "zeros"
    seed: int | None = None
    tf_keras_softmax: bool = False
    name: str | None = None

    params_from_shape: ClassVar[bool] = True
    clears_input_masks: ClassVar[bool] = True  # Keras 3's call sets its inputs' masks to None
    call_tensors: ClassVar[tuple[str, ...]] = ("query", "value", "key")
    call_arguments: ClassVar[tuple[str, ...]] = ("use_causal_mask", "attention_mask")

    def __post_init__(self) -> None:
        check_count("MultiHeadAttention num_heads", self.num_heads)
        check_count("MultiHeadAttention key_dim", self.key_dim)
        for field in ("value_dim", "output_dim", "sliding_window"):
            if getattr(self, field) is not None:
                check_count(f"MultiHeadAttention {field}", getattr(self, field))
        check_rate("MultiHeadAttention dropout", self.dropout)

    def __call__(self, query: Any, value: Any, key: Any = None, **arguments: Any) -> Any:
        """Keras's ``mha(query, value, key=None, attention_mask=None, use_causal_mask=False)``
        on symbolic tensors."""
        inputs = [query, value] if key is None else [query, value, key]
        return call_layer(self, inputs, **arguments)

    @property
    def head_value_dim(self) -> int:
        return self.value_dim or self.key_dim

    def param_shapes(self, input_shape: list) -> dict[str, dict[str, tuple[int, ...]]]:
        """From ``[query, value(, key)]`` shapes (batch axis first)."""
        query, value, key = _check_shapes(self, input_shape)
        heads, vdim = self.num_heads, self.head_value_dim
        out_dim = self.output_dim or query[-1]
        shapes = {
            "query": ((query[-1], heads, self.key_dim), (heads, self.key_dim)),
            "key": ((key[-1], heads, self.key_dim), (heads, self.key_dim)),
            "value": ((value[-1], heads, vdim), (heads, vdim)),
            "attention_output": ((heads, vdim, out_dim), (out_dim,)),
        }
        return {name: {"kernel": kernel, "bias": bias} if self.use_bias else {"kernel": kernel}
                for name, (kernel, bias) in shapes.items()}  # fmt: skip

    def init(self, key: jax.Array, input_shape: list, dtype: Any = jnp.float32) -> dict:
        inits = {"kernel": self.kernel_initializer, "bias": self.bias_initializer}
        shapes = self.param_shapes(input_shape)
        keys = jax.random.split(key, len(shapes))
        return {name: initializers.init_params(k, shapes[name], inits, dtype)
                for k, name in zip(keys, shapes)}  # fmt: skip

    def _check_params(self, params: dict, shapes: list) -> None:
        owner = f"MultiHeadAttention {self.name!r}"
        expected = self.param_shapes(shapes)
        check_param_shapes(owner, dict.fromkeys(expected, ()), dict.fromkeys(params, 0))
        for name, shapes_of in expected.items():
            check_param_shapes(f"{owner} {name}", shapes_of, params[name])

    def keras_weight_groups(self) -> tuple[KerasVars, ...]:
        """Keras 3 keeps each projection in its ``EinsumDense``: ``query_dense/vars`` ..."""
        paths = {"query": "query_dense", "key": "key_dense", "value": "value_dense",
                 "attention_output": "output_dense"}  # fmt: skip
        return tuple(KerasVars(f"{path}/vars", (name,)) for name, path in paths.items())

    def attention_mask(self, shapes: tuple, masks: list, use_causal_mask: bool,
                       attention_mask: Any) -> jax.Array | None:  # fmt: skip
        """``(batch or 1, Tq, Tv)`` booleans (``None``: every pair attends)."""
        query_mask, value_mask, key_mask = masks
        steps_q, steps_v = shapes
        found = None if query_mask is None else query_mask[:, :, None]
        for mask in (value_mask, key_mask):
            found = _and(found, None if mask is None else mask[:, None, :])
        if use_causal_mask:
            found = _and(found, causal_mask(steps_q, steps_v))
        if self.sliding_window is not None:
            distance = jnp.abs(jnp.arange(steps_q)[:, None] - jnp.arange(steps_v)[None, :])
            found = _and(found, (distance < self.sliding_window)[None])
        given = None if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        return _and(given, found)

    def _softmax(self, scores: jax.Array, mask: jax.Array | None) -> jax.Array:
        """Softmax over the value steps of ``scores (batch, heads, Tq, Tv)``, masked as the
        Keras that wrote the layer masks it."""
        if mask is None:
            return jax.nn.softmax(scores, axis=-1)
        mask = mask[:, None]  # the heads' axis
        penalty = jnp.asarray(-KERAS_MASK_PENALTY, scores.dtype)
        if self.tf_keras_softmax:
            return jax.nn.softmax(scores + (1.0 - mask.astype(scores.dtype)) * penalty, axis=-1)
        weights = jax.nn.softmax(jnp.where(mask, scores, penalty), axis=-1)
        if self.dropout > 0:  # Keras 3's Softmax layer path zeroes fully masked rows
            weights = jnp.where(mask, weights, jnp.zeros_like(weights))
        return weights

    def apply(self, params: dict, inputs: list, mask=None, training=False, rng=None,
              use_causal_mask: bool = False, attention_mask: Any = None):  # fmt: skip
        """``[query (batch, Tq, dim), value (batch, Tv, vdim)(, key (batch, Tv, kdim))]`` ->
        ``(batch, Tq, output_dim)``; ``mask``: ``[query_mask, value_mask(, key_mask)]``."""
        query, value, key = _arrays(self, inputs)
        self._check_params(params, [query.shape, value.shape, key.shape])

        def project(name: str, x: jax.Array, equation: str) -> jax.Array:
            y = jnp.einsum(equation, x, params[name]["kernel"])
            if not self.use_bias:
                return y
            bias = params[name]["bias"]
            return y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape)

        q = project("query", query, "btd,dnh->btnh")
        k = project("key", key, "bsd,dnh->bsnh")
        v = project("value", value, "bsd,dnh->bsnh")
        scale = jnp.asarray(1.0 / math.sqrt(self.key_dim), q.dtype)
        scores = jnp.einsum("bsnh,btnh->bnts", k, q * scale)
        allowed = self.attention_mask((query.shape[1], value.shape[1]), _masks(mask),
                                      use_causal_mask, attention_mask)  # fmt: skip
        weights = self._softmax(scores, allowed)
        if training and self.dropout > 0:
            if rng is None:
                raise DataError(f"MultiHeadAttention {self.name!r}: dropout needs an rng")
            weights = inverted_dropout(rng, weights, self.dropout, weights.shape)
        heads = jnp.einsum("bnts,bsnh->btnh", weights, v)
        return project("attention_output", heads, "btnh,nho->bto")

    def compute_mask(self, inputs, mask):
        """The query's mask, as Keras."""
        return _masks(mask)[0]

    def output_shape(self, input_shape: list) -> tuple:
        query = _check_shapes(self, input_shape)[0]
        return (*query[:-1], self.output_dim or query[-1])

    def keras_build_config(self, input_shape: list) -> dict:
        """Keras 3 builds the layer from the named shapes of its call."""
        names = ("query_shape", "value_shape", "key_shape")
        return {"shapes_dict": {n: list(s) for n, s in zip(names, input_shape)}}

    def keras_config(self, context: Any) -> dict:
        if self.tf_keras_softmax and self.dropout > 0:
            raise ConfigError(
                f"MultiHeadAttention {self.name!r} came from tf_keras, whose masked softmax "
                "gives a fully masked row uniform weights where Keras 3's gives zeros when "
                "dropout > 0; Keras 3 would compute another model. Export it with tf_keras"
            )
        return {
            "num_heads": self.num_heads, "key_dim": self.key_dim,
            "value_dim": self.head_value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
            "use_gate": False,
            "output_shape": None if self.output_dim is None else [self.output_dim],
            "attention_axes": [1], "sliding_window": self.sliding_window,
            "kernel_initializer": context.exportable(self.kernel_initializer,
                                                     "kernel_initializer"),
            "bias_initializer": context.exportable(self.bias_initializer, "bias_initializer"),
            "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
            "kernel_constraint": None, "bias_constraint": None, "seed": self.seed,
        }  # fmt: skip

    @classmethod
    def from_keras_config(cls, config: dict, context: Any) -> MultiHeadAttention:
        if config.get("use_gate"):
            raise context.unsupported(" with use_gate=True (a gated attention output)")
        _config_attention_axes(config.get("attention_axes"), context)
        inits = {key: context.initializer(config.get(key), default)
                 for key, default in (("kernel_initializer", "glorot_uniform"),
                                      ("bias_initializer", "zeros"))}  # fmt: skip
        return cls(
            int(config["num_heads"]), int(config["key_dim"]), value_dim=config.get("value_dim"),
            dropout=float(config.get("dropout", 0.0)), use_bias=bool(config.get("use_bias", True)),
            output_dim=_config_output_dim(config.get("output_shape"), context),
            sliding_window=config.get("sliding_window"), seed=config.get("seed"),
            tf_keras_softmax=context.legacy, name=config.get("name"), **inits,
        )  # fmt: skip


for _layer_class in (Attention, AdditiveAttention, MultiHeadAttention):
    register_layer(_layer_class.__name__, _layer_class)
