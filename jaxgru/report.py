"""Readable reports for ``jaxgru inspect`` and ``jaxgru explain``: text, Markdown or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from jaxgru import explain
from jaxgru.data_checks import check_model_input
from jaxgru.errors import InputError
from jaxgru.gru import GRU
from jaxgru.layers import Bidirectional
from jaxgru.model import Sequential

VALUES_UP_TO = 64  # blocks with at most this many numbers are printed in full by inspect

# The trace fields a step shows, with the column names of the report (Keras symbols).
STEP_FIELDS = (("x", "x_t"), ("z_pre", "z_pre"), ("z", "z"), ("r_pre", "r_pre"), ("r", "r"),
               ("hh_pre", "h~_pre"), ("hh", "h~"), ("h", "h"))  # fmt: skip


def gru_layers(model: Sequential, params: dict) -> list[tuple[str, GRU, dict, str]]:
    """``(name, gru, gru params, name of the model layer that holds it)`` for every GRU,
    a Bidirectional's two directions included (``bidirectional/forward_layer``)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, GRU):
            found.append((layer.name, layer, params[layer.name], layer.name))
        elif isinstance(layer, Bidirectional):
            for side, inner in zip(("forward_layer", "backward_layer"), layer.directions):
                found.append((f"{layer.name}/{side}", inner, params[layer.name][side], layer.name))
    return found


def _config_line(name: str, layer: GRU, input_dim: int) -> str:
    settings = {
        "units": layer.units, "input_dim": input_dim, "reset_after": layer.reset_after,
        "activation": explain.activation_name(layer.activation),
        "recurrent_activation": explain.activation_name(layer.recurrent_activation),
        "use_bias": layer.use_bias, "go_backwards": layer.go_backwards,
        "return_sequences": layer.return_sequences,
    }  # fmt: skip
    return f'GRU "{name}": ' + ", ".join(f"{k}={v}" for k, v in settings.items())


def fmt(value) -> str:
    """A number as ``%.7g``; a vector as ``[a, b]``; a matrix as ``[[a, b], [c, d]]``."""
    a = np.asarray(value)
    if a.ndim == 0:
        return f"{float(a):.7g}"
    return "[" + ", ".join(fmt(v) for v in a) + "]"


def fmt_step(value) -> str:
    """``fmt``, with a one-element vector shown as its number (a 1-unit GRU reads naturally)."""
    a = np.asarray(value)
    return fmt(a.ravel()[0]) if a.size == 1 else fmt(a)


def nonfinite_lines(params: dict) -> list[str]:
    """A line per weight array holding NaN or inf (``gru/kernel: 2 NaN, 1 inf of 45``), or
    one line saying that every weight is finite."""
    lines = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        values = np.asarray(leaf)
        nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        if nan or inf:
            name = "/".join(str(getattr(key, "key", key)) for key in path)
            lines.append(f"  {name}: {nan} NaN, {inf} inf of {values.size}")
    if not lines:
        return ["weights: every value is finite"]
    return ["weights: NON-FINITE values (the model computes NaN or inf from these):", *lines]


def inspect_report(model: Sequential, params: dict) -> str:
    """The summary, any weight arrays holding NaN or inf, then each GRU's settings, equations
    and named blocks."""
    lines = [model.summary(), *nonfinite_lines(params)]
    for name, layer, layer_params, _ in gru_layers(model, params):
        input_dim = layer_params["kernel"].shape[0]
        lines += ["", _config_line(name, layer, input_dim)]
        lines += [f"  {eq}" for eq in explain.equations(layer)]
        named = explain.blocks(layer, layer_params)
        width = max(len(b.source) for b in named.values())
        for block_name, block in named.items():
            v = block.value
            if v.size <= VALUES_UP_TO:
                shown = fmt(v)
            else:
                shown = (f"min {v.min():.4g}  max {v.max():.4g}  mean {v.mean():.4g}  "
                         f"std {v.std():.4g}")  # fmt: skip
            shape = str(tuple(v.shape))
            lines.append(f"  {block_name:<6} = {block.source:<{width}}  {shape:<10} {shown}")
    return "\n".join(lines)


def parse_input(text: str, model: Sequential) -> np.ndarray:
    """``--input``: a ``.npy`` path or a JSON array, shaped ``(time, features)`` or
    ``(batch, time, features)`` (ids ``(time,)`` or ``(batch, time)`` before an Embedding)."""
    if text.endswith(".npy"):
        try:
            x = np.load(Path(text), allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read --input {text}: {error}") from None
    else:
        try:
            x = np.asarray(json.loads(text))
        except (json.JSONDecodeError, ValueError) as error:
            raise InputError(f"--input is neither a .npy file nor a JSON array: {error}") from None
    expected, given = model.input_shape, x.shape
    if x.ndim == len(expected):
        x = x[None]
    per_step = "" if len(expected) == 1 else f", {expected[-1]}"
    fits = x.ndim == len(expected) + 1 and (len(expected) == 1 or x.shape[-1] == expected[-1])
    if not fits or x.dtype.kind not in "biuf" or x.size == 0:
        raise InputError(
            f"--input has shape {given} ({x.dtype}); the model reads numbers shaped "
            f"(time{per_step}) or (batch, time{per_step})"
        )
    x = check_model_input(model, "--input", x)  # NaN, length 0, ids outside the vocabulary
    return x.astype(np.int32 if len(expected) == 1 else np.float32)


def explain_report(
    model: Sequential, params: dict, x: np.ndarray, layer: str | None = None, style="table"
) -> str:
    """Every step of the chosen GRU (default: the first) on ``x``, as text, Markdown or JSON."""
    grus = gru_layers(model, params)
    if not grus:
        raise InputError("the model has no GRU layer to explain")
    chosen = [g for g in grus if layer in (None, g[0], g[3])][: None if layer else 1]
    if not chosen:
        raise InputError(f"no GRU layer {layer!r}; choose one of {[g[0] for g in grus]}")
    sections = []
    for name, gru, gru_params, holder in chosen:
        x_in, mask = model.layer_input(params, x, holder)
        t = explain.trace(gru, gru_params, x_in, mask=mask)
        sections.append(_section(name, gru, int(x_in.shape[-1]), t))
    if style == "json":
        return json.dumps(sections if len(sections) > 1 else sections[0], indent=1)
    return "\n\n".join(_render(section, style) for section in sections)


def _section(name: str, gru: GRU, input_dim: int, t: explain.Trace) -> dict:
    trace = {k: np.asarray(v) for k, v in t._asdict().items()}
    samples = []
    for b in range(trace["h0"].shape[0]):
        steps = [
            {"step": i, "t": int(trace["order"][i]), "skipped": bool(trace["skipped"][i, b]),
             **{field: trace[key][i, b].tolist() for key, field in STEP_FIELDS},
             "output": trace["output"][i, b].tolist()}
            for i in range(len(trace["order"]))
        ]  # fmt: skip
        samples.append({"h0": trace["h0"][b].tolist(), "steps": steps,
                        "final_state": trace["final_state"][b].tolist()})  # fmt: skip
    return {"layer": name, "config": _config_line(name, gru, input_dim),
            "equations": explain.equations(gru), "samples": samples}  # fmt: skip


def _render(section: dict, style: str) -> str:
    header = ["step", "t", "read"] + [field for _, field in STEP_FIELDS]
    md = style == "markdown"
    lines = [f"`{section['config']}`" if md else section["config"], ""]
    lines += (
        ["```", *section["equations"], "```"] if md else [f"  {e}" for e in section["equations"]]
    )
    for b, sample in enumerate(section["samples"]):
        order = ", ".join(str(s["t"]) for s in sample["steps"])
        lines += ["", f"sample {b}: reads t = {order}, from h0 = {fmt_step(sample['h0'])}", ""]
        rows = [
            [str(s["step"]), str(s["t"]), "skipped" if s["skipped"] else "yes"]
            + [fmt_step(s[field]) for field in header[3:]]
            for s in sample["steps"]
        ]
        lines += _table(header, rows, md)
        lines += ["", f"final state h = {fmt_step(sample['final_state'])}"]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(row) + " |" for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in [header, *rows]]  # fmt: skip
