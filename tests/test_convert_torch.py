"""PyTorch ``nn.GRU`` <-> jaxgru against real torch: outputs, gradients, round trips, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxgru
from jaxgru import GRU, Bidirectional, Dense, Dropout, Sequential
from jaxgru.convert import (
    ConversionError,
    from_torch,
    to_torch,
    to_torch_module,
    torch_gru_kwargs,
)
from tests.helpers import BATCH, FEATURES, TIME, UNITS, max_rel_error

pytestmark = pytest.mark.oracle

# (num_layers, bidirectional, bias, batch_first)
LAYOUTS = [
    (1, False, True, True),
    (1, False, True, False),
    (2, False, False, True),
    (1, True, True, False),
    (3, True, True, True),
    (2, True, False, False),
]


def torch_gru(num_layers, bidirectional, bias, batch_first, seed=0, dropout=0.0):
    """A real nn.GRU with random weights in [-0.7, 0.7] (biases far from zero)."""
    torch.manual_seed(seed)
    module = torch.nn.GRU(
        FEATURES,
        UNITS,
        num_layers=num_layers,
        bidirectional=bidirectional,
        bias=bias,
        batch_first=batch_first,
        dropout=dropout,
    )
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)
    return module.eval()


def torch_output(module, x: np.ndarray) -> np.ndarray:
    """The module's output sequence for batch-major ``x``, batch-major."""
    xt = torch.from_numpy(x if module.batch_first else x.transpose(1, 0, 2))
    y = module(xt)[0].detach().numpy()
    return y if module.batch_first else y.transpose(1, 0, 2)


def inputs(seed=3):
    return np.random.default_rng(seed).normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: "-".join(map(str, v)))
def test_from_torch_matches_torch_and_round_trips_identically(layout):
    module = torch_gru(*layout)
    model, params = from_torch(module)
    x = inputs()
    y = np.asarray(model.apply(params, x))
    np.testing.assert_allclose(y, torch_output(module, x), atol=1e-5, rtol=0)

    state = to_torch(model, params)
    original = module.state_dict()
    assert list(state) == list(original)
    for name, value in original.items():
        assert state[name].dtype == value.dtype
        assert torch.equal(state[name], value), name
    fresh = torch.nn.GRU(**torch_gru_kwargs(model, params))
    fresh.load_state_dict(state)  # strict: same keys, same shapes


def test_from_torch_reads_a_state_dict_of_tensors_or_numpy_arrays_and_its_dropout():
    module = torch_gru(2, True, True, True, dropout=0.25)
    model, _ = from_torch(module)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Bidirectional",
        "Dropout",
        "Bidirectional",
    ]
    assert model.layers[1].rate == 0.25
    assert torch_gru_kwargs(model, from_torch(module)[1])["dropout"] == 0.25
    as_numpy = {k: v.numpy() for k, v in module.state_dict().items()}
    model_np, params_np = from_torch(as_numpy)
    x = inputs()
    np.testing.assert_allclose(
        np.asarray(model_np.apply(params_np, x)), torch_output(module, x), atol=1e-5
    )


def test_from_torch_picks_the_gru_out_of_a_larger_module_by_prefix():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch_gru(1, False, True, True)
            self.head = torch.nn.Linear(UNITS, 1)

    net = Net()
    with pytest.raises(ConversionError, match=r"head.bias.*prefix='gru.'"):
        from_torch(net.state_dict())
    model, params = from_torch(net.state_dict(), prefix="gru.")
    x = inputs()
    np.testing.assert_allclose(
        np.asarray(model.apply(params, x)), torch_output(net.gru, x), atol=1e-5
    )
    with pytest.raises(ConversionError, match=r"got Net; .* pass module.state_dict\(\)"):
        from_torch(net)
    with pytest.raises(ConversionError, match=r"no nn.GRU under prefix 'rnn.'"):
        from_torch(net.state_dict(), prefix="rnn.")


def keras_layout_model(bidirectional: bool, bias: bool, dropout: float = 0.0):
    """A jaxgru GRU stack (what a user trained) with random asymmetric params."""
    layers = []
    for k in range(2):
        if k and dropout:
            layers.append(Dropout(dropout))
        gru = GRU(UNITS, return_sequences=True, use_bias=bias)
        layers.append(Bidirectional(gru) if bidirectional else gru)
    model = Sequential(layers, input_shape=(None, FEATURES))
    rng = np.random.default_rng(5)
    params = jax.tree.map(
        lambda shape: rng.uniform(-0.7, 0.7, shape).astype(np.float32),
        model.param_shapes(),
        is_leaf=lambda t: isinstance(t, tuple),
    )
    return model, params


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_to_torch_module_matches_jaxgru(bidirectional, bias):
    model, params = keras_layout_model(bidirectional, bias, dropout=0.1)
    x = inputs(seed=8)
    for batch_first in (True, False):
        module = to_torch_module(model, params, batch_first=batch_first)
        assert module.dropout == 0.1 and module.bidirectional == bidirectional
        np.testing.assert_allclose(
            torch_output(module, x), np.asarray(model.apply(params, x)), atol=1e-5
        )
    back_model, back = from_torch(to_torch(model, params))
    for mine, theirs in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(mine, theirs)
    assert [type(layer) for layer in back_model.layers] == [
        type(layer) for layer in model.layers if not isinstance(layer, Dropout)
    ]


@pytest.mark.parametrize("layout", [(2, True, True, False), (2, False, False, True)])
def test_gradients_agree_with_torch_autograd(layout):
    module = torch_gru(*layout, seed=4)
    model, params = from_torch(module)
    x = inputs(seed=6)
    cotangent = np.random.default_rng(7).normal(size=(BATCH, TIME, model.output_shape()[-1]))
    cotangent = cotangent.astype(np.float32)

    module.zero_grad()
    y = module(torch.from_numpy(x if module.batch_first else x.transpose(1, 0, 2)))[0]
    y = y if module.batch_first else y.transpose(0, 1)
    (y * torch.from_numpy(cotangent)).sum().backward()
    torch_grads = {name: p.grad for name, p in module.named_parameters()}
    _, expected = from_torch(torch_grads)  # gradients share the weights' layout

    def loss(p):
        return jnp.sum(model.apply(p, x) * cotangent)

    grads = jax.grad(loss)(jax.tree.map(jnp.asarray, params))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        e = expected
        for key in path:
            e = e[key.key]
        assert max_rel_error(g, e) < 1e-4, jax.tree_util.keystr(path)


def test_torch_weights_into_a_keras_file_reproduce_torch_in_real_keras(tmp_path):
    import keras

    module = torch_gru(2, True, True, True, seed=9)
    model, params = from_torch(module)
    jaxgru.save_keras(model, params, tmp_path / "from_torch.keras")
    keras_model = keras.models.load_model(tmp_path / "from_torch.keras")
    x = inputs(seed=10)
    np.testing.assert_allclose(
        keras_model.predict(x, verbose=0), torch_output(module, x), atol=1e-5
    )


def _one(layer, input_dim=FEATURES):
    model = Sequential([layer], input_shape=(None, input_dim))
    return model, model.init(jax.random.key(0))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_one(GRU(4, reset_after=False)), r"reset_after=False, which PyTorch nn.GRU cannot"),
        (_one(GRU(4, recurrent_activation="hard_sigmoid")), "recurrent_activation='hard_sigmoid'"),
        (_one(GRU(4, activation="relu")), "activation='relu'; PyTorch nn.GRU always uses tanh"),
        (_one(GRU(4, go_backwards=True)), "go_backwards=True"),
        (
            _one(Bidirectional(GRU(4, return_sequences=True), merge_mode="sum")),
            "merge_mode='sum'",
        ),
    ],
    ids=["reset_after", "recurrent_activation", "activation", "go_backwards", "merge_mode"],
)
def test_to_torch_refuses_what_nn_gru_cannot_compute(model, message):
    with pytest.raises(ConversionError, match=message):
        to_torch(*model)


def test_to_torch_refuses_stacks_nn_gru_cannot_hold():
    def stack(*layers):
        model = Sequential(list(layers), input_shape=(None, FEATURES))
        return model, model.init(jax.random.key(0))

    cases = {
        "has no place in an nn.GRU": stack(GRU(4, return_sequences=True), Dense(1)),
        "bidirectional in every layer or none": stack(
            GRU(4, return_sequences=True), Bidirectional(GRU(4))
        ),
        "one hidden_size": stack(GRU(4, return_sequences=True), GRU(3)),
        "not between two GRU layers": stack(Dropout(0.1), GRU(4)),
        "one dropout rate": stack(
            GRU(4, return_sequences=True),
            Dropout(0.1),
            GRU(4, return_sequences=True),
            Dropout(0.2),
            GRU(4),
        ),
    }
    for message, model in cases.items():
        with pytest.raises(ConversionError, match=message):
            to_torch(*model)


def test_bias_false_export_needs_zero_biases():
    model, params = keras_layout_model(False, True)
    with pytest.raises(ConversionError, match=r"non-zero biases.*bias=False"):
        to_torch(model, params, bias=False)
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, v: np.zeros_like(v) if path[-1].key == "bias" else v, params
    )
    state = to_torch(model, zeroed, bias=False)
    assert not any(name.startswith("bias") for name in state)
    torch.nn.GRU(FEATURES, UNITS, num_layers=2, bias=False).load_state_dict(state)


def test_from_torch_refuses_incomplete_or_foreign_input():
    state = torch_gru(2, False, True, True).state_dict()
    del state["bias_hh_l1"]
    with pytest.raises(ConversionError, match=r"missing \['bias_hh_l1'\]"):
        from_torch(state)
    with pytest.raises(ConversionError, match=r"converts an nn.GRU, got LSTM"):
        from_torch(torch.nn.LSTM(3, 4))
    with pytest.raises(ConversionError, match=r"4 \* hidden_size rows"):
        from_torch(torch.nn.LSTM(3, 4).state_dict())
    with pytest.raises(ConversionError, match=r"one nn.GRU"):
        from_torch({"weight": np.zeros(3)})
    with pytest.raises(ConversionError, match=r"takes an nn.GRU or its state_dict"):
        from_torch([1, 2])
