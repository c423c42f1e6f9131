"""Experiment configs: TOML files, typed and validated, with ``--set key=value`` overrides.

A config has six parts (see ``configs/*.toml``)::

    name = "adding"        # the run directory defaults to runs/<name>
    seed = 0
    [data]   kind = "adding" and the keyword arguments of that loader in ``jaxgru.data``
    [model]  layers = [{type = "GRU", units = 64}, {type = "Dense", units = 1}]
    [train]  the ``fit`` settings of ``TrainConfig``, with [train.schedule] and
             [train.early_stopping] tables
    [run]    where and how the run is written: ``RunConfig``
    [mesh]   data parallelism over devices and hosts: ``MeshConfig``, e.g. ``data = -1``

The schema is the code: allowed ``[data]`` keys are the loader's parameters, a layer's keys are
its dataclass fields, and every value is checked against the annotated type. A mistake raises
``ConfigError`` with one line naming the key and what is allowed.

>>> layers = [{"type": "GRU", "units": 4}, {"type": "Dense", "units": 1}]
>>> cfg = resolve({"name": "t", "data": {"kind": "sine"}, "model": {"layers": layers}},
...               ["train.epochs=3"])
>>> cfg["train"]["epochs"], cfg["data"]["window"]
(3, 40)
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from jaxgru.data import LOADERS
from jaxgru.errors import ConfigError
from jaxgru.execution import KERNELS
from jaxgru.gru import COMPUTE_DTYPES as GRU_COMPUTE_DTYPES
from jaxgru.gru import EXECUTION_FIELDS
from jaxgru.layer import registered_layers
from jaxgru.layers import Bidirectional  # noqa: F401  (importing it registers the built-in layers)
from jaxgru.optimizers import ScheduleConfig
from jaxgru.train import TrainConfig

__all__ = ["ConfigError", "ExperimentConfig", "MeshConfig", "RunConfig", "ScheduleConfig",
           "TrainConfig", "build_layer", "load", "resolve", "to_toml"]  # fmt: skip

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Layer fields a config does not set per layer: return_state cannot chain in a Sequential, and
# the GRU's execution options come from [train] for every GRU at once.
NOT_LAYER_KEYS = ("_", "return_state", *EXECUTION_FIELDS)


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: the run directory (default ``runs/<name>``), checkpoints kept, the plot,
    and TensorBoard scalars in ``<run dir>/tensorboard`` (``jaxgru.tensorboard``)."""

    dir: str | None = None
    keep_checkpoints: int = 3
    plot: bool = True
    progress_bar: bool = True
    tensorboard: bool = False


@dataclass(frozen=True)
class MeshConfig:
    """``[mesh]``: data parallelism (``jaxgru.distributed``). ``data`` is the number of devices
    each batch is split over: 1 for none, -1 for every device of every process.
    ``shard_params`` splits params and optimizer state over them too."""

    data: int = 1
    shard_params: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    """The top level of a config file."""

    name: str
    data: dict
    model: dict
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)


# train.compute_dtype: "float32" (the params' dtype) or one of the GRU's lower precisions.
COMPUTE_DTYPES = ("float32", *(dtype for dtype in GRU_COMPUTE_DTYPES if dtype))


def load(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read, override and validate a TOML config; returns the resolved config as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return resolve(raw, overrides)


def resolve(raw: dict, overrides: list[str] = ()) -> dict:
    """Apply ``key=value`` overrides to ``raw``, validate it, and fill in every default."""
    raw = _deep_copy(raw)
    for item in overrides:
        _override(raw, item)
    resolved = _check_dataclass("", raw, ExperimentConfig)
    resolved["data"] = _check_data(raw["data"])
    resolved["model"] = _check_model(raw["model"])
    _check_ranges(resolved)
    _check_execution(resolved["train"], resolved["mesh"])
    return resolved


# A run's name is a folder name under runs/: letters, digits, '.', '_' and '-', no path.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
MAX_SEED = 2**63 - 1  # jax.random.key takes a signed 64-bit seed


def _check_ranges(cfg: dict) -> None:
    """The values whose type is right but whose range is not."""
    if not _NAME.fullmatch(cfg["name"]) or cfg["name"] in (".", ".."):
        raise ConfigError(
            f"name {cfg['name']!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
            "no '/' and not '..'); set run.dir to choose where the run is written"
        )
    if not 0 <= cfg["seed"] <= MAX_SEED:
        raise ConfigError(f"seed must be in [0, 2**63 - 1], got {cfg['seed']}")
    for key in ("batch_size", "epochs"):
        if cfg["train"][key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {cfg['train'][key]}")
    if cfg["run"]["keep_checkpoints"] < 0:
        raise ConfigError(
            f"run.keep_checkpoints must be >= 0 (0 keeps every checkpoint), got "
            f"{cfg['run']['keep_checkpoints']}"
        )


def _check_execution(train: dict, mesh: dict) -> None:
    if train["compute_dtype"] not in COMPUTE_DTYPES:
        raise ConfigError(
            f"train.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}; got "
            f"{_show(train['compute_dtype'])}"
        )
    if train["gru_kernel"] not in (None, *KERNELS):
        raise ConfigError(
            f"train.gru_kernel must be one of {', '.join(KERNELS)}; got "
            f"{_show(train['gru_kernel'])}"
        )
    for key in ("remat_chunk", "tbptt_steps"):
        if train[key] is not None and train[key] < 1:
            raise ConfigError(f"train.{key} must be a number of steps >= 1, got {train[key]}")
    if mesh["data"] == 0 or mesh["data"] < -1:
        raise ConfigError(
            f"mesh.data must be -1 (every device) or a number of devices >= 1, got {mesh['data']}"
        )


def dataclass_from(cls, values: dict | None):
    """Build the (nested) config dataclass ``cls`` from a resolved dict."""
    if values is None:
        return None
    kwargs, hints = {}, typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = _dataclass_in(hints[f.name])
        kwargs[f.name] = dataclass_from(inner, values[f.name]) if inner else values[f.name]
    return cls(**kwargs)


def build_layer(spec: dict):
    """A layer from its resolved ``{type = ..., ...}`` table."""
    spec = dict(spec)
    cls = registered_layers()[spec.pop("type")]
    if isinstance(spec.get("layer"), dict):  # a wrapper's layer (Bidirectional)
        spec["layer"] = build_layer(spec["layer"])
    return cls(**spec)


def _dataclass_in(hint):
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _check_dataclass(where: str, values: Any, cls) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a table, got {_show(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "_"}
    _check_keys(where, values, fields)
    resolved = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        inner = _dataclass_in(hints[name])
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where or 'the config'} needs the key {name!r}")
            default = (
                f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            )
            resolved[name] = dataclasses.asdict(default) if inner and default else default
        elif inner is not None:
            resolved[name] = _check_dataclass(key, values[name], inner)
        else:
            resolved[name] = _check_value(key, values[name], hints[name])
    if where:  # a table's own checks (``__post_init__``), named by where it is
        try:
            dataclass_from(cls, resolved)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {error}") from None
    return resolved


def _check_data(values: dict) -> dict:
    kind = values.get("kind") if isinstance(values, dict) else None
    if not isinstance(kind, str) or kind not in LOADERS:
        raise ConfigError(f"data.kind must be one of {', '.join(LOADERS)}; got {_show(kind)}")
    return {"kind": kind, **_check_signature(f"data ({kind})", values, LOADERS[kind], {"kind"})}


def _check_signature(where: str, values: dict, fn: Callable, extra=frozenset()) -> dict:
    params = inspect.signature(fn).parameters
    hints = typing.get_type_hints(fn)
    _check_keys(where, {k: v for k, v in values.items() if k not in extra}, params)
    resolved = {}
    for name, p in params.items():
        if name in values:
            resolved[name] = _check_value(f"data.{name}", values[name], hints[name])
        elif p.default is inspect.Parameter.empty:
            raise ConfigError(f"{where} needs the key {name!r}")
        else:
            resolved[name] = p.default
    return resolved


def _check_model(values: dict) -> dict:
    _check_keys("model", values, {"layers": None, "name": None})
    layers = values.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("model.layers must be a non-empty list of {type = ..., ...} tables")
    resolved = {"layers": [_check_layer(f"model.layers[{i}]", s) for i, s in enumerate(layers)]}
    if "name" in values:
        resolved["name"] = _check_value("model.name", values["name"], str)
    return resolved


def _check_layer(where: str, spec: Any) -> dict:
    layers = registered_layers()
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("type"), str)
        or (spec["type"] not in layers)
    ):
        got = spec.get("type") if isinstance(spec, dict) else spec
        raise ConfigError(f"{where}.type must be one of {', '.join(layers)}; got {_show(got)}")
    cls = layers[spec["type"]]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in NOT_LAYER_KEYS}
    hints = typing.get_type_hints(cls)
    rest = {k: v for k, v in spec.items() if k != "type"}
    _check_keys(where, rest, fields)
    resolved = {"type": spec["type"]}
    for name, value in rest.items():
        if name == "layer" and isinstance(value, dict):  # a wrapper's layer (Bidirectional)
            resolved["layer"] = _check_layer(f"{where}.layer", value)
        else:
            resolved[name] = _check_value(f"{where}.{name}", value, hints[name])
    try:
        build_layer(resolved)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None
    return resolved


def _check_keys(where: str, values: dict, allowed) -> None:
    for key in values:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r} in {where or 'the config'}; allowed keys: "
                f"{', '.join(sorted(allowed))}"
            )


def _check_value(key: str, value: Any, hint) -> Any:
    if not _conforms(value, hint):
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {_show(value)}")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and (hint is float or float in typing.get_args(hint)):
        return float(value)
    return value


def _conforms(value: Any, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return False  # callables and classes cannot come from TOML


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(hint) if a is not type(None)]
        names = [n for n in names if n != "a function"]
        return " or ".join(names) or "a function"
    if typing.get_origin(hint) in (list, tuple):
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, "a table" if hint is dict else "a function")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "nothing"


def _override(raw: dict, item: str) -> None:
    """Apply one ``dotted.key=value``; the value is TOML (bare words are strings)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, e.g. train.epochs=5; got {item!r}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    *parents, last = key.strip().split(".")
    node = raw
    for part in parents:
        if isinstance(node, list):
            node = node[_index(node, part, key)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a table")
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    else:
        node[last] = value


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _deep_copy(value):
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def to_toml(config: dict) -> str:
    """The resolved config as TOML (``None`` values are left out, as TOML has no null)."""
    return tomli_w.dumps(_without_none(config))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
