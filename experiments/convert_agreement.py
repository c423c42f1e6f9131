"""How closely each converted model agrees with jaxgru, per framework and layout.

Run: python experiments/convert_agreement.py
Prints one Markdown table: the largest absolute output difference on random inputs
(batch 2, time 7, features 3, units 5, weights uniform in [-0.7, 0.7]) and, for PyTorch,
the largest relative difference of the weight gradients under torch autograd.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import equinox as eqx
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import torch

import jaxgru
from jaxgru import GRU, Bidirectional, Masking, Sequential
from jaxgru.convert import from_torch, to_equinox, to_flax, to_onnx

BATCH, TIME, FEATURES, UNITS = 2, 7, 3, 5
X = np.random.default_rng(0).normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)


def random_params(model: Sequential, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape: rng.uniform(-0.7, 0.7, shape).astype(np.float32),
        model.param_shapes(),
        is_leaf=lambda t: isinstance(t, tuple),
    )


def torch_rows() -> list[tuple[str, float, float]]:
    rows = []
    for layers, bidirectional, bias in [(1, False, True), (3, False, False), (2, True, True)]:
        torch.manual_seed(0)
        module = torch.nn.GRU(
            FEATURES,
            UNITS,
            num_layers=layers,
            bidirectional=bidirectional,
            bias=bias,
            batch_first=True,
        )
        with torch.no_grad():
            for p in module.parameters():
                p.uniform_(-0.7, 0.7)
        model, params = from_torch(module)
        y_torch = module(torch.from_numpy(X))[0]
        cotangent = np.random.default_rng(2).normal(size=y_torch.shape).astype(np.float32)
        (y_torch * torch.from_numpy(cotangent)).sum().backward()
        _, expected = from_torch({k: p.grad for k, p in module.named_parameters()})
        grads = jax.grad(lambda p, m=model, c=cotangent: jnp.sum(m.apply(p, X) * c))(params)
        grad_rel = max(
            float(np.max(np.abs(np.asarray(g) - e)) / np.max(np.abs(e)))
            for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected))
        )
        out = float(np.max(np.abs(np.asarray(model.apply(params, X)) - y_torch.detach().numpy())))
        name = f"PyTorch nn.GRU(num_layers={layers}, bidirectional={bidirectional}, bias={bias})"
        rows.append((name, out, grad_rel))
    return rows


def onnx_rows(folder: Path) -> list[tuple[str, float, float]]:
    x_padded = X.copy()
    x_padded[0, 4:] = 0.0
    cases = {
        "ONNX, reset_after=True": ([GRU(UNITS, return_sequences=True)], X),
        "ONNX, reset_after=False": ([GRU(UNITS, reset_after=False)], X),
        "ONNX, Bidirectional stack": (
            [Bidirectional(GRU(UNITS, return_sequences=True)), Bidirectional(GRU(4))],
            X,
        ),
        "ONNX, Masking + go_backwards": (
            [Masking(), GRU(UNITS, go_backwards=True, return_sequences=True)],
            x_padded,
        ),
    }
    rows = []
    for name, (layers, x) in cases.items():
        model = Sequential(layers, input_shape=(None, FEATURES))
        params = random_params(model)
        to_onnx(model, params, folder / "model.onnx")
        y = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"input": x})[0]
        rows.append((name, float(np.max(np.abs(y - np.asarray(model.apply(params, x))))), None))
    return rows


def cell_rows() -> list[tuple[str, float, float]]:
    layer = GRU(UNITS, return_sequences=True)
    params = random_params(Sequential([layer], input_shape=(None, FEATURES)))["gru"]
    expected = np.asarray(layer.apply(params, X))
    cell, variables = to_flax(layer, params)
    y_flax = nn.RNN(cell).apply({"params": {"cell": variables["params"]}}, X)
    eqx_cell = to_equinox(layer, params)

    def run(x_seq):
        return jax.lax.scan(lambda h, x_t: (eqx_cell(x_t, h),) * 2, jnp.zeros(UNITS), x_seq)[1]

    y_eqx = jax.vmap(run)(jnp.asarray(X))
    return [
        (
            "Flax linen.GRUCell (nn.RNN)",
            float(np.max(np.abs(np.asarray(y_flax) - expected))),
            None,
        ),
        ("Equinox eqx.nn.GRUCell", float(np.max(np.abs(np.asarray(y_eqx) - expected))), None),
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        rows = torch_rows() + onnx_rows(Path(folder)) + cell_rows()
    print(
        f"jaxgru {jaxgru.__version__}, torch {torch.__version__}, onnxruntime "
        f"{ort.__version__}, flax {flax.__version__}, "
        f"equinox {eqx.__version__}, on {os.uname().machine}"
    )
    print("| converted model | max abs output difference | max rel gradient difference |")
    print("|---|---|---|")
    for name, out, grad in rows:
        print(f"| {name} | {out:.1e} | {'' if grad is None else f'{grad:.1e}'} |")


if __name__ == "__main__":
    main()
