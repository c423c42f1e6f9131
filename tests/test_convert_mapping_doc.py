"""docs/converters.md's mapping tables, executed: each builds the real framework's cell, which
must compute the float64 reference GRU's outputs, and the converter must build the same arrays.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgru
from jaxgru.convert import to_equinox, to_flax, to_torch
from tests.helpers import BATCH, FEATURES, TIME, UNITS, random_inputs, random_weights
from tests.reference import gru_reference

pytestmark = pytest.mark.oracle

DOC = Path(__file__).resolve().parent.parent / "docs" / "converters.md"
ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| `(?P<shape>[^`]+)` \| `(?P<expr>[^`]+)` \|$")
u = UNITS


def mapping(section: str) -> dict[str, tuple[str, str]]:
    """``{name: (shape, expression)}`` from the table under ``### {section}``."""
    text = DOC.read_text()
    start = text.index(f"### {section}\n")
    end = text.find("\n### ", start + 1)
    rows = [ROW.match(line) for line in text[start : end if end > 0 else None].splitlines()]
    table = {m["name"]: (m["shape"], m["expr"]) for m in rows if m}
    assert table, f"no mapping table under '### {section}'"
    return table


def swap_zr(a):
    first, second, third = np.split(np.asarray(a), 3, axis=0)
    return np.concatenate([second, first, third], axis=0)


def evaluate(table: dict, weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Each row's expression on Keras's arrays, its shape checked against the row's."""
    kernel, recurrent_kernel, bias = weights
    env = {"np": np, "swap_zr": swap_zr, "u": u, "input": FEATURES}
    env |= {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}
    out = {}
    for name, (shape, expr) in table.items():
        value = np.asarray(eval(expr, env), np.float32)
        assert value.shape == eval(re.sub(r"(\d)u", r"\1*u", shape), env), (name, shape)
        out[name] = value
    return out


@pytest.fixture
def case():
    layer = jaxgru.GRU(UNITS, return_sequences=True)
    weights = random_weights(layer, FEATURES, seed=11)
    x, _ = random_inputs(seed=12)
    expected, _, _ = gru_reference(x, *weights)
    return layer, weights, x, expected


def test_torch_table_builds_a_module_that_matches_the_reference(case):
    import torch

    layer, weights, x, expected = case
    table = evaluate(mapping("PyTorch nn.GRU"), weights)
    state = {name.replace("{k}", "0"): torch.from_numpy(v) for name, v in table.items()}
    module = torch.nn.GRU(FEATURES, UNITS, batch_first=True)
    module.load_state_dict(state)
    y = module(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(y, expected, atol=1e-5)
    converted = to_torch(layer, dict(zip(("kernel", "recurrent_kernel", "bias"), weights)))
    assert list(converted) == list(state)
    for name in state:
        np.testing.assert_array_equal(converted[name].numpy(), state[name].numpy())


def test_flax_table_builds_a_cell_that_matches_the_reference(case):
    import flax.linen as nn

    layer, weights, x, expected = case
    table = evaluate(mapping("Flax linen.GRUCell"), weights)
    params: dict = {}
    for name, value in table.items():
        module, array = name.split(".")
        params.setdefault(module, {})[array] = jnp.asarray(value)
    y = nn.RNN(nn.GRUCell(UNITS)).apply({"params": {"cell": params}}, x)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5)
    _, variables = to_flax(layer, dict(zip(("kernel", "recurrent_kernel", "bias"), weights)))
    converted = {
        f"{m}.{a}": v for m, arrays in variables["params"].items() for a, v in arrays.items()
    }
    assert sorted(converted) == sorted(table)
    for name, value in table.items():
        np.testing.assert_array_equal(np.asarray(converted[name]), value)


def test_equinox_table_builds_a_cell_that_matches_the_reference(case):
    import equinox as eqx

    layer, weights, x, expected = case
    table = evaluate(mapping("Equinox eqx.nn.GRUCell"), weights)
    cell = eqx.nn.GRUCell(FEATURES, UNITS, key=jax.random.key(0))
    names = list(table)
    cell = eqx.tree_at(lambda c: [getattr(c, n) for n in names], cell, [table[n] for n in names])

    def run(x_seq):  # (time, features) -> (time, units)
        return jax.lax.scan(lambda h, x_t: (cell(x_t, h), cell(x_t, h)), jnp.zeros(UNITS), x_seq)[
            1
        ]

    y = jax.vmap(run)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5)
    converted = to_equinox(layer, dict(zip(("kernel", "recurrent_kernel", "bias"), weights)))
    for name in names:
        np.testing.assert_array_equal(np.asarray(getattr(converted, name)), table[name])


@pytest.mark.parametrize("reset_after", [True, False])
def test_onnx_table_builds_a_gru_node_that_matches_the_reference(reset_after, tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    layer = jaxgru.GRU(UNITS, return_sequences=True, reset_after=reset_after)
    weights = random_weights(layer, FEATURES, seed=13)
    x, _ = random_inputs(seed=14)
    expected, _, _ = gru_reference(x, *weights, reset_after=reset_after)
    table = mapping("ONNX GRU operator")
    if reset_after:
        arrays = evaluate(table, weights)
    else:  # the doc's rule for reset_after=False: B[d] = [bias, zeros(3u)]
        arrays = evaluate({k: v for k, v in table.items() if k != "B[d]"}, [*weights[:2], None])
        arrays["B[d]"] = np.concatenate([weights[2], np.zeros(3 * u, np.float32)])
    inits = [numpy_helper.from_array(arrays[f"{n}[d]"][None], n) for n in "WRB"]
    node = helper.make_node(
        "GRU", ["X", "W", "R", "B"], ["Y"], hidden_size=u, linear_before_reset=int(reset_after)
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [TIME, BATCH, FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "gru.onnx")
    session = ort.InferenceSession(str(tmp_path / "gru.onnx"))
    (y,) = session.run(None, {"X": x.transpose(1, 0, 2)})
    np.testing.assert_allclose(y[:, 0].transpose(1, 0, 2), expected, atol=1e-5)
